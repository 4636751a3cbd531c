"""API views of the mappings app."""
