"""Admin of the mappings app."""
