"""Admin of the sandbox app."""
