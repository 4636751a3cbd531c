"""Services of the insights app."""
