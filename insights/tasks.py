"""Tasks of the insights app."""
