"""Selectors of the sandbox app."""
