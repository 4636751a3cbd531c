"""Tasks of the mappings app."""
