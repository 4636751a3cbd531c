"""Admin of the connectors app."""
