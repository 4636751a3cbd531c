"""API serializers of the governance app."""
