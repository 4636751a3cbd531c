"""Tasks of the workflows app."""
