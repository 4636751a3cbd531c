"""URLs of the sandbox systems, mounted under /sandbox/."""

urlpatterns: list = []
