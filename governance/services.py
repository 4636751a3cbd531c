"""Services of the governance app."""
