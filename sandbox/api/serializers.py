"""API serializers of the sandbox app."""
