"""Tasks of the governance app."""
