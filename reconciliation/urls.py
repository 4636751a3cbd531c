"""The reconciliation's pages, mounted at /admin/reconciliation/ (inside the admin's login and look)."""

from django.contrib import admin
from django.urls import path

from reconciliation import views

urlpatterns = [
    path("", admin.site.admin_view(views.reconciliation_view), name="hub-reconciliation"),
    path("rows/<int:row_id>/", admin.site.admin_view(views.reconciliation_row_view), name="hub-reconciliation-row"),
    path("export.csv", admin.site.admin_view(views.reconciliation_export_view), name="hub-reconciliation-export"),
    path("run/", admin.site.admin_view(views.reconciliation_run_now_view), name="hub-reconciliation-run"),
]
