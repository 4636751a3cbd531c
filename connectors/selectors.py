"""Selectors of the connectors app."""
