"""Tasks of the exception_queue app."""
