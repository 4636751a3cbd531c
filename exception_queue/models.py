"""Models of the exception_queue app."""
