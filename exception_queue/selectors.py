"""Selectors of the exception_queue app."""
