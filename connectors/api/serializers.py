"""API serializers of the connectors app."""
