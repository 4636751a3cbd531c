"""Choices of the connectors app."""
