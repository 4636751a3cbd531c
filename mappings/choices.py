"""Choices of the mappings app."""
