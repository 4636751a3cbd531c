"""Tasks of the sync app."""
