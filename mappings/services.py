"""Services of the mappings app."""
