"""API routes of the insights app, mounted under /api/v1/."""

from django.urls import path

from insights.api import views

urlpatterns = [path("kpis/", views.KpiView.as_view(), name="kpi-list")]
