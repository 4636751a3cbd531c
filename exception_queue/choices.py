"""Choices of the exception_queue app."""
