"""API views of the sandbox app."""
