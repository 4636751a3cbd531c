"""Permissions of the API's custom actions: a custom action needs its own model permission, not "add"."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission, DjangoModelPermissions
from rest_framework.request import Request


class ActionPermission(BasePermission):
    """The permission named by the action's `action_permission` (e.g. decide_exceptionitem), plus the view
    permission of the model. Replaces DjangoModelPermissions on custom POST actions, which would ask for
    `add_<model>`: approving an exception item adds nothing."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        model = view.get_queryset().model
        needed = [f"{model._meta.app_label}.view_{model._meta.model_name}"]
        declared = getattr(view, "action_permission", None)
        if declared:
            needed.append(declared)
        return user.has_perms(needed)


class ActionPermissionMixin:
    """Custom actions that declare `action_permission` are checked by ActionPermission instead of the model
    permissions; every other default permission class (an API-key scope check, say) still applies."""

    action_permission: str | None = None

    def get_permissions(self) -> list[Any]:
        permissions = super().get_permissions()  # type: ignore[misc]
        if not self.action_permission:
            return permissions
        kept = [permission for permission in permissions if not isinstance(permission, DjangoModelPermissions)]
        return [*kept, ActionPermission()]
