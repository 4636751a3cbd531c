"""API views of the governance app."""
