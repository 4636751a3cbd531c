"""Routes of the insights app outside the admin and the API, mounted at the root."""

from django.urls import path

from insights import views

urlpatterns = [path("metrics", views.metrics_view, name="metrics")]
