"""Who may call a staff endpoint of the API: staff holding the Django permission that the same
action needs in the admin (view to read; add or change to act), so that a person has the same
rights in both. A read-only auditor who is staff reads, and approves nothing, anywhere."""

from typing import Any

from rest_framework.permissions import BasePermission


def staff_with(permission: str) -> type[BasePermission]:
    """A DRF permission class: an active staff user with `permission` ("app.codename")."""

    class StaffWith(BasePermission):
        message = f"this needs staff status and the {permission} permission"

        def has_permission(self, request: Any, view: Any) -> bool:
            user = request.user
            return bool(
                user and user.is_authenticated and user.is_staff and user.has_perm(permission)
            )

    StaffWith.__name__ = StaffWith.__qualname__ = f"StaffWith[{permission}]"
    return StaffWith
