"""API serializers of the exception_queue app."""
