"""Admin of the exception_queue app."""
