"""Choices of the workflows app."""
