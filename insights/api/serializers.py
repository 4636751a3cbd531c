"""API serializers of the insights app."""
