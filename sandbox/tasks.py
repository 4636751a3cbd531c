"""Tasks of the sandbox app."""
