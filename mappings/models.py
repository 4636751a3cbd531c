"""Models of the mappings app."""
