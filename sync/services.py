"""Services of the sync app."""
