"""Admin of the sync app."""
