"""Admin actions change state through services: the view permission, which is all Django asks of
an action by default, must not be enough to run one."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.contrib.auth.models import Permission
from django.test import RequestFactory

from release.models import Artifact, Phase
from tests.factories import make_release, make_user

ACTIONS_OF = {
    model: [name for name in (model_admin.actions or []) if name != "delete_selected"]
    for model, model_admin in admin.site._registry.items()
}
WITH_ACTIONS = [model for model, actions in ACTIONS_OF.items() if actions]


def staff_with(model, *actions: str):
    user = make_user(f"staff-{'-'.join(actions)}", is_staff=True)
    opts = model._meta
    for action in actions:
        codename = get_permission_codename(action, opts)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=opts.app_label, codename=codename)
        )
    return user


def offered(model, user) -> set[str]:
    request = RequestFactory().get("/admin/")
    request.user = user
    return set(admin.site._registry[model].get_actions(request)) - {"delete_selected"}


def test_every_state_changing_admin_is_covered():
    assert len(WITH_ACTIONS) >= 8  # versions, artifacts, unlocks, licenses, requests, grants…


@pytest.mark.parametrize("model", WITH_ACTIONS, ids=lambda m: m._meta.label)
def test_actions_need_the_change_permission_not_just_view(db, model):
    assert offered(model, staff_with(model, "view")) == set()
    assert offered(model, staff_with(model, "view", "change")) == set(ACTIONS_OF[model])


def test_a_view_only_auditor_cannot_withdraw_an_artifact(db, client):
    version = make_release(artifacts={"base": Phase.OPEN})
    artifact = version.artifacts.get(name="base")
    auditor = staff_with(Artifact, "view")
    client.force_login(auditor)

    response = client.post(
        "/admin/release/artifact/",
        {"action": "withdraw", "_selected_action": [artifact.pk], "reason": "testing", "apply": 1},
    )

    assert response.status_code in (200, 302)
    artifact.refresh_from_db()
    assert artifact.phase == Phase.OPEN
