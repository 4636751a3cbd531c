"""API serializers of the mappings app."""
