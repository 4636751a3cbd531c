"""API serializers of the sync app."""
