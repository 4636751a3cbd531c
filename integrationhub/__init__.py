"""Integration Hub: the Django project package (settings, urls, Celery app, roles, shared helpers)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
