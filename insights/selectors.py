"""Selectors of the insights app."""
