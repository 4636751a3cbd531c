"""API serializers of the workflows app."""
