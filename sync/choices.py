"""Choices of the sync app."""
