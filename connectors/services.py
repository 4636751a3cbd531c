"""Services of the connectors app."""
