"""API views of the insights app."""
