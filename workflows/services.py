"""Services of the workflows app."""
