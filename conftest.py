"""Shared pytest fixtures: role users, a live Celery worker, and clients logged in per role."""
