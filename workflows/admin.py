"""Admin of the workflows app."""
