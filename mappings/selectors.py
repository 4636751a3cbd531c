"""Selectors of the mappings app."""
