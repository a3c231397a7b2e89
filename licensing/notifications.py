"""Notifications of access and release events (email and signed webhooks).

Being written now by another engineer; the interface below is what the services call.
"""

from typing import Any


def access_request_event(event: str, request: Any) -> None:
    """access_request.created / approved / rejected, inside the service's transaction."""


def grant_event(event: str, grant: Any) -> None:
    """grant.revoked, inside the service's transaction."""


def unlock_event(event: str, unlock: Any) -> None:
    """unlock.scheduled / done / failed, inside the service's transaction."""
