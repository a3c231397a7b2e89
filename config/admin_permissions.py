"""Who may run an admin action.

Django offers an action to anyone who may open the list, which takes only the view permission,
unless the action names the permissions it needs. Ours change state through services (approve,
reject, revoke, withdraw, seal, publish…), so each names "act": the model's change permission,
asked of the user directly, because `has_change_permission` is narrowed (sealed rows) or off
(rows nobody edits by hand) on these admins. A read-only auditor sees the rows and no actions.
"""

from typing import Any

from django.contrib.auth import get_permission_codename
from django.http import HttpRequest


class ActionsNeedChangePermission:
    """Mixin for a ModelAdmin whose actions are declared with `permissions=["act"]`."""

    opts: Any  # set by ModelAdmin

    def has_act_permission(self, request: HttpRequest) -> bool:
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")
