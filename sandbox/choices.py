"""Choices of the sandbox app."""
