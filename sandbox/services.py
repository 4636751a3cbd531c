"""Services of the sandbox app."""
