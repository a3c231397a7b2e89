"""Builders for the licensing tests: a gated model with a published license, a gate policy and a
grants signing key, all made through the services, so tests see what production sees."""

import uuid
from typing import Any

from django.contrib.auth.models import User

from licensing import access
from licensing.keys import signing_key_ensure
from licensing.models import AccessRequest, GatePolicy, License
from release.models import Model, Phase
from tests.factories import make_release

LICENSE_TEXT = "You may use these weights for research.\nDo not be evil.\n"


def make_license(
    *,
    actor: User,
    slug: str = "acme-community",
    version: str = "1.0",
    text: str = LICENSE_TEXT,
    publish: bool = True,
) -> License:
    license = License.objects.create(slug=slug, version=version, title=f"{slug} license", text=text)
    return access.license_publish(actor=actor, license=license) if publish else license


def gated_model(
    *,
    actor: User,
    mode: str = "manual",
    fields: list[dict[str, Any]] | None = None,
    org: str = "acme",
    name: str = "tiny",
    **policy: Any,
) -> Model:
    """A sealed release whose `base` artifact is gated, a published license, and a gate policy
    (`policy` are further gate policy fields: blocked_countries, grant_ttl_days...)."""
    version = make_release(org=org, name=name, artifacts={"base": Phase.GATED})
    license = make_license(actor=actor, slug=f"{org}-{name}")
    access.gate_policy_set(
        actor=actor,
        model=version.model,
        license=license,
        approval_mode=mode,
        form_fields=fields or [],
        **policy,
    )
    signing_key_ensure(purpose="grants")
    return version.model


def current_license(model: Model) -> License:
    # Read afresh: `model.gate_policy` is cached on the instance and may predate a change.
    license = GatePolicy.objects.get(model=model).license
    assert license is not None
    return license


def submit(user: User, model: Model, answers: dict[str, Any] | None = None) -> AccessRequest:
    """A request accepting the model's current license."""
    return access.access_request_submit(
        user=user, model=model, license=current_license(model), answers=answers or {}
    )


def isolated_cache(settings: Any) -> None:
    """Redis outlives each test's rolled-back database (and is shared with other runs): give the
    test a key prefix of its own, so no revocation list signed by another test's key is served."""
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
    }
