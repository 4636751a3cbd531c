"""API views of the workflows app."""
