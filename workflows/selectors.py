"""Selectors of the workflows app."""
