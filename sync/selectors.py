"""Selectors of the sync app."""
