"""API views of the connectors app."""
