"""API views of the sync app."""
