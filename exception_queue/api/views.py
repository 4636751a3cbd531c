"""API views of the exception_queue app."""
