"""Choices of the insights app."""
