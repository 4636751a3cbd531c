"""URLconf of `run_sandbox`: only the sandbox systems, under the same /sandbox/ prefix as in the hub."""

from django.urls import include, path

urlpatterns = [path("sandbox/", include("sandbox.urls"))]
