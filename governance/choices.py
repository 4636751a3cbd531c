"""Choices of the governance app."""
