"""Tasks of the connectors app."""
