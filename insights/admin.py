"""Admin of the insights app."""
