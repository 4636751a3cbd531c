"""Services of the exception_queue app."""
