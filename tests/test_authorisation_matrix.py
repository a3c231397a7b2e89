"""The authorisation matrix (#7): every route of the site × every role × every phase, with the
expected answer of each cell written down here.

- Every route the URL resolver knows (REST API, Hub API, portal, accounts, /.well-known/,
  health, API docs, the Django admin and its consoles) must have a row: a new endpoint without
  one fails `test_every_route_has_a_row`, and a row whose route no longer exists fails too.
- The admin's generated pages (changelist, add, change, delete, history, and the bare object
  URL) come from `admin.site._registry`, with the superuser's expected answers per ModelAdmin
  written in `ADMIN_PAGES`: a new ModelAdmin without an entry fails.
- Rows where the artifact's phase matters are asked of four models, one per phase (each has one
  artifact, `base`, in that phase); the others once per role.

A cell is an HTTP status, or `LOGIN` (a redirect to a sign-in page), or, for lists, `LISTED` /
`HIDDEN` (200, and whether the row's marker, e.g. the phase's model, is in the body). Each cell
runs in a savepoint that is rolled back, so a write by one role never changes another's answer.
All mismatches are reported together, as a table of expected against actual.
"""

import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.utils import timezone

from config.redis_client import redis_client
from licensing import access
from licensing.keys import signing_key_ensure
from licensing.models import (
    AccessRequest,
    AuditEvent,
    DownloadToken,
    GatePolicy,
    Grant,
    PartnerOrganisation,
    SigningKey,
    WebhookDelivery,
)
from licensing.notifications import webhook_endpoint_create
from licensing.tokens import token_create
from release import distribution, services
from release.models import DownloadDaily, Heartbeat, Phase, ReleasePolicy
from tests.factories import make_release, make_user
from tests.licensing.factories import make_license, submit
from tests.staging import ingest_now

# --- Roles, phases and cells ----------------------------------------------------------------------

ROLES = (
    "anonymous",
    "developer",  # signed in, no grant, no request
    "holder",  # signed in, a live grant for every model (also the owner of the targets below)
    "revoked",  # signed in, every grant revoked
    "holder_token",  # a script with the holder's token
    "expired_token",  # a script with the holder's expired token
    "others_token",  # a script with the developer's token, used on the holder's things
    "scoped_token",  # a script with the holder's token limited to another model
    "partner",  # member of a partner organisation named by every model's gate policy
    "staff",  # is_staff, no admin permissions
    "admin",  # superuser
)
PHASES = ("proprietary", "gated", "open", "withdrawn")

LOGIN = "login"  # a redirect to a sign-in page (the portal's or the admin's)
LISTED = "listed"  # 200 and the row's marker is in the body
HIDDEN = "hidden"  # 200 and the marker is not

Cell = int | str
PhaseCells = tuple[Cell, Cell, Cell, Cell]  # proprietary, gated, open, withdrawn


@dataclass(frozen=True)
class Row:
    """One endpoint and method. `url`, `json`, `form` and `marker` take placeholders from
    `World.values` (and `{repo}`, the phase's model, in phase rows); `expected` maps each role
    to one cell, or to four (one per phase) when `phased`."""

    method: str
    route: str  # the resolver's route string
    url: str
    expected: Mapping[str, Any]
    phased: bool = False
    json: dict[str, Any] | None = None  # a JSON body (API); otherwise a form post
    form: dict[str, str] = field(default_factory=dict)
    marker: str | None = None


def phased(method: str, route: str, url: str, expected: Mapping[str, PhaseCells], **kw: Any) -> Row:
    return Row(method, route, url, expected, phased=True, **kw)


def per_role(**cells: Cell) -> dict[str, Cell]:
    return cells


# --- Expected answers shared by many rows ---------------------------------------------------------

# Reads of a model's metadata through the API (model, versions, files, signature, gate, Hub
# info and tree): what the caller may not see is a 404, as if it did not exist.
METADATA: dict[str, PhaseCells] = {
    #                 proprietary gated open withdrawn
    "anonymous": (404, 200, 200, 404),
    "developer": (404, 200, 200, 404),
    "holder": (404, 200, 200, 404),  # a grant alone never shows a proprietary model
    "revoked": (404, 200, 200, 404),
    "holder_token": (404, 200, 200, 404),
    "expired_token": (401, 401, 401, 401),
    "others_token": (404, 200, 200, 404),
    "scoped_token": (404, 200, 200, 404),  # the scope limits downloads, not reads
    "partner": (200, 200, 200, 404),
    "staff": (200, 200, 200, 200),
    "admin": (200, 200, 200, 200),
}

# Lists of models (API and portal catalog): whether the phase's model is listed.
LISTING: dict[str, PhaseCells] = {
    "anonymous": (HIDDEN, LISTED, LISTED, HIDDEN),
    "developer": (HIDDEN, LISTED, LISTED, HIDDEN),
    "holder": (HIDDEN, LISTED, LISTED, HIDDEN),
    "revoked": (HIDDEN, LISTED, LISTED, HIDDEN),
    "holder_token": (HIDDEN, LISTED, LISTED, HIDDEN),
    "expired_token": (401, 401, 401, 401),
    "others_token": (HIDDEN, LISTED, LISTED, HIDDEN),
    "scoped_token": (HIDDEN, LISTED, LISTED, HIDDEN),
    "partner": (LISTED, LISTED, LISTED, HIDDEN),
    "staff": (LISTED, LISTED, LISTED, LISTED),
    "admin": (LISTED, LISTED, LISTED, LISTED),
}

# A download (REST GET .../files/{path}, Hub GET and HEAD resolve): 302 to the bytes, or the
# refusal of `release.selectors.file_download_decision`.
DOWNLOAD: dict[str, PhaseCells] = {
    "anonymous": (404, 401, 302, 404),
    "developer": (404, 403, 302, 404),
    "holder": (404, 302, 302, 404),  # the grant of the withdrawn model is suspended
    "revoked": (404, 403, 302, 404),
    "holder_token": (404, 302, 302, 404),
    "expired_token": (401, 401, 401, 401),
    "others_token": (404, 403, 302, 404),  # acts as its owner, who holds no grant
    "scoped_token": (404, 403, 403, 404),  # what the holder may not see stays hidden
    "partner": (302, 403, 302, 404),
    "staff": (302, 302, 302, 403),
    "admin": (302, 302, 302, 403),
}

# The portal's pages are Django views: a bearer token means nothing there (no session), so every
# script is anonymous.
SCRIPTS = ("holder_token", "expired_token", "others_token", "scoped_token")
PORTAL_METADATA = {**METADATA, **{role: METADATA["anonymous"] for role in SCRIPTS}}
PORTAL_LISTING = {**LISTING, **{role: LISTING["anonymous"] for role in SCRIPTS}}
NOT_SIGNED_IN = ("anonymous", *SCRIPTS)

# Staff-only API operations (config.api_permissions.staff_with: staff with the model's Django
# permission, as the admin asks): 401 without credentials, 403 for everyone else, staff without
# admin permissions included; a token is read-only, so it is refused any POST (403) first.
STAFF_READ = per_role(
    anonymous=401,
    developer=403,
    holder=403,
    revoked=403,
    holder_token=403,
    expired_token=401,
    others_token=403,
    scoped_token=403,
    partner=403,
    staff=403,
    admin=200,
)


def staff_write(ok: Cell) -> dict[str, Cell]:
    """A staff-only POST: `ok` for admins (400 for a deliberately empty body); staff without the
    model's permission are refused, as in the admin."""
    return {**STAFF_READ, "admin": ok}


PUBLIC = per_role(**{role: 200 for role in ROLES})
PUBLIC_API = {**PUBLIC, "expired_token": 401}  # DRF views authenticate any token sent

# --- REST API -------------------------------------------------------------------------------------

M = "api/v1/models/<str:org>/<str:name>"
V = f"{M}/versions/<str:revision>"
REST_ROWS = [
    phased("GET", "api/v1/models/", "/api/v1/models/", LISTING, marker='"{repo}"'),
    phased("GET", f"{M}/", "/api/v1/models/{repo}/", METADATA),
    phased("GET", f"{M}/downloads/", "/api/v1/models/{repo}/downloads/", METADATA),
    phased("GET", f"{M}/versions/", "/api/v1/models/{repo}/versions/", METADATA),
    phased("GET", f"{V}/", "/api/v1/models/{repo}/versions/v1/", METADATA),
    phased("GET", f"{V}/files/", "/api/v1/models/{repo}/versions/v1/files/", METADATA),
    phased("GET", f"{V}/signature", "/api/v1/models/{repo}/versions/v1/signature", METADATA),
    phased(
        "GET", f"{V}/files/<path:path>", "/api/v1/models/{repo}/versions/v1/files/{path}", DOWNLOAD
    ),
    phased("GET", f"{M}/gate", "/api/v1/models/{repo}/gate", METADATA),
    phased(
        "POST",
        f"{M}/access-requests/",
        "/api/v1/models/{repo}/access-requests/",
        {
            #                 proprietary gated open withdrawn
            "anonymous": (401, 401, 401, 401),
            "developer": (404, 201, 201, 404),
            "holder": (404, 409, 409, 404),  # already approved
            "revoked": (404, 409, 409, 404),  # the request stays approved; the grant is revoked
            "holder_token": (403, 403, 403, 403),  # tokens are read-only
            "expired_token": (401, 401, 401, 401),
            "others_token": (403, 403, 403, 403),
            "scoped_token": (403, 403, 403, 403),
            "partner": (201, 201, 201, 404),
            "staff": (201, 201, 201, 201),
            "admin": (201, 201, 201, 201),
        },
        json={"license_sha256": "{license_sha256}"},
    ),
    phased(
        "GET",
        f"{M}/access-requests/review",
        "/api/v1/models/{repo}/access-requests/review",
        {role: (cell,) * 4 for role, cell in STAFF_READ.items()},
    ),
    Row(
        "POST",
        f"{M}/access-requests/handle",
        "/api/v1/models/matrix/gated/access-requests/handle",
        staff_write(400),
        json={},
    ),
    Row(
        "POST",
        f"{M}/access-requests/grant",
        "/api/v1/models/matrix/gated/access-requests/grant",
        staff_write(400),
        json={},
    ),
    Row(
        "POST",
        "api/v1/grants/<uuid:grant_id>/revoke",
        "/api/v1/grants/{grant}/revoke",
        staff_write(200),
        json={"reason": "matrix"},
    ),
    Row("GET", "api/v1/signing-keys/", "/api/v1/signing-keys/", PUBLIC_API),
    Row(
        "POST",
        f"{M}/ingests/",
        "/api/v1/models/matrix/proprietary/ingests/",
        staff_write(400),
        json={},
    ),
    Row("GET", "api/v1/ingests/<int:ingest_id>/", "/api/v1/ingests/{ingest}/", STAFF_READ),
    Row("GET", "api/v1/unlocks/", "/api/v1/unlocks/", STAFF_READ),
    Row("POST", "api/v1/unlocks/schedule", "/api/v1/unlocks/schedule", staff_write(400), json={}),
    Row("GET", "api/v1/unlocks/<int:unlock_id>/", "/api/v1/unlocks/{unlock}/", STAFF_READ),
    # Approving needs no body: both approve (someone else scheduled it; two are required).
    Row(
        "POST",
        "api/v1/unlocks/<int:unlock_id>/approve",
        "/api/v1/unlocks/{unlock}/approve",
        staff_write(200),
        json={},
    ),
    Row(
        "POST",
        "api/v1/unlocks/<int:unlock_id>/reject",
        "/api/v1/unlocks/{unlock}/reject",
        staff_write(400),
        json={},
    ),
    Row(
        "POST",
        "api/v1/unlocks/<int:unlock_id>/cancel",
        "/api/v1/unlocks/{unlock}/cancel",
        staff_write(400),
        json={},
    ),
    Row(
        "POST",
        "api/v1/unlocks/<int:unlock_id>/reschedule",
        "/api/v1/unlocks/{unlock}/reschedule",
        staff_write(400),
        json={},
    ),
    # A person's own things: the holder's request, grant and token are the targets.
    Row(
        "GET",
        "api/v1/me/access-requests/",
        "/api/v1/me/access-requests/",
        per_role(
            anonymous=401,
            developer=HIDDEN,
            holder=LISTED,
            revoked=HIDDEN,
            holder_token=LISTED,
            expired_token=401,
            others_token=HIDDEN,
            scoped_token=LISTED,
            partner=HIDDEN,
            staff=HIDDEN,
            admin=HIDDEN,
        ),
        marker="matrix/queue",
    ),
    Row(
        "POST",
        "api/v1/me/access-requests/<int:request_id>/withdraw",
        "/api/v1/me/access-requests/{request}/withdraw",
        per_role(
            anonymous=401,
            developer=404,
            holder=200,
            revoked=404,
            holder_token=403,
            expired_token=401,
            others_token=403,
            scoped_token=403,
            partner=404,
            staff=404,
            admin=404,
        ),
        json={},
    ),
    Row(
        "GET",
        "api/v1/me/grants/",
        "/api/v1/me/grants/",
        per_role(
            anonymous=401,
            developer=HIDDEN,
            holder=LISTED,
            revoked=HIDDEN,
            holder_token=LISTED,
            expired_token=401,
            others_token=HIDDEN,
            scoped_token=LISTED,
            partner=HIDDEN,
            staff=HIDDEN,
            admin=HIDDEN,
        ),
        marker="{grant}",
    ),
    Row(
        "GET",
        "api/v1/me/grants/<uuid:grant_id>.jwt",
        "/api/v1/me/grants/{grant}.jwt",
        per_role(
            anonymous=401,
            developer=404,
            holder=200,
            revoked=404,
            holder_token=200,
            expired_token=401,
            others_token=404,
            scoped_token=200,
            partner=404,
            staff=404,
            admin=404,
        ),
    ),
    Row(
        "GET",
        "api/v1/me/tokens/",
        "/api/v1/me/tokens/",
        per_role(
            anonymous=401,
            developer=HIDDEN,
            holder=LISTED,
            revoked=HIDDEN,
            holder_token=LISTED,
            expired_token=401,
            others_token=HIDDEN,
            scoped_token=LISTED,
            partner=HIDDEN,
            staff=HIDDEN,
            admin=HIDDEN,
        ),
        marker="holder-laptop",
    ),
    Row(
        "POST",
        "api/v1/me/tokens/",
        "/api/v1/me/tokens/",
        per_role(
            anonymous=401,
            developer=201,
            holder=201,
            revoked=201,
            holder_token=403,
            expired_token=401,
            others_token=403,
            scoped_token=403,
            partner=201,
            staff=201,
            admin=201,
        ),
        json={"name": "matrix"},
    ),
    Row(
        "POST",
        "api/v1/me/tokens/<int:token_id>/revoke",
        "/api/v1/me/tokens/{token}/revoke",
        per_role(
            anonymous=401,
            developer=404,
            holder=200,
            revoked=404,
            holder_token=403,
            expired_token=401,
            others_token=403,
            scoped_token=403,
            partner=404,
            staff=404,  # the API revokes only your own (the service would let staff)
            admin=404,
        ),
        json={},
    ),
]

# --- Hugging Face Hub-compatible API --------------------------------------------------------------

H = "api/models/<str:org>/<str:name>"
HUB_ROWS = [
    Row(
        "GET",
        "api/whoami-v2",
        "/api/whoami-v2",
        per_role(
            anonymous=401,
            developer=200,
            holder=200,
            revoked=200,
            holder_token=200,
            expired_token=401,
            others_token=200,
            scoped_token=200,
            partner=200,
            staff=200,
            admin=200,
        ),
    ),
    phased("GET", H, "/api/models/{repo}", METADATA),
    phased("GET", f"{H}/revision/<str:revision>", "/api/models/{repo}/revision/v1", METADATA),
    phased("GET", f"{H}/tree/<str:revision>", "/api/models/{repo}/tree/v1", METADATA),
    phased(
        "GET", f"{H}/tree/<str:revision>/<path:path>", "/api/models/{repo}/tree/v1/base", METADATA
    ),
    phased(
        "GET",
        "<str:org>/<str:name>/resolve/<str:revision>/<path:path>",
        "/{repo}/resolve/v1/{path}",
        DOWNLOAD,
    ),
    # What huggingface_hub sends first: HEAD on `main`, the newest version the caller may see.
    phased(
        "HEAD",
        "<str:org>/<str:name>/resolve/<str:revision>/<path:path>",
        "/{repo}/resolve/main/{path}",
        DOWNLOAD,
    ),
]

# --- Portal ---------------------------------------------------------------------------------------


def signed_in(**cells: Cell) -> dict[str, Cell]:
    """A page for signed-in people: everyone not signed in goes to the sign-in page."""
    return {**{role: LOGIN for role in NOT_SIGNED_IN}, **cells}


def signed_in_phased(**cells: PhaseCells) -> dict[str, PhaseCells]:
    login: PhaseCells = (LOGIN, LOGIN, LOGIN, LOGIN)
    return {**{role: login for role in NOT_SIGNED_IN}, **cells}


P = "models/<str:org>/<str:name>"
PORTAL_ROWS = [
    phased("GET", "", "/", PORTAL_LISTING, marker="{repo}"),
    phased("GET", "models/", "/models/", PORTAL_LISTING, marker="{repo}"),
    phased("GET", P, "/models/{repo}", PORTAL_METADATA),
    phased(
        "GET",
        f"{P}/access",
        "/models/{repo}/access",
        signed_in_phased(
            #           proprietary gated open withdrawn
            developer=(404, 200, 200, 404),
            holder=(404, 200, 200, 404),
            revoked=(404, 200, 200, 404),
            partner=(200, 200, 200, 404),
            staff=(200, 200, 200, 200),
            admin=(200, 200, 200, 200),
        ),
    ),
    phased(
        "GET",
        f"{P}/access/request",
        "/models/{repo}/access/request",
        signed_in_phased(
            developer=(404, 200, 200, 404),
            holder=(404, 302, 302, 404),  # approved already: to the status page
            revoked=(404, 302, 302, 404),
            partner=(200, 200, 200, 404),
            staff=(200, 200, 200, 200),
            admin=(200, 200, 200, 200),
        ),
    ),
    # No license accepted in the form: 400 for whoever may ask.
    phased(
        "POST",
        f"{P}/access/request",
        "/models/{repo}/access/request",
        signed_in_phased(
            developer=(404, 400, 400, 404),
            holder=(404, 302, 302, 404),
            revoked=(404, 302, 302, 404),
            partner=(400, 400, 400, 404),
            staff=(400, 400, 400, 400),
            admin=(400, 400, 400, 400),
        ),
    ),
    phased(
        "POST",
        f"{P}/access/withdraw",
        "/models/{repo}/access/withdraw",
        signed_in_phased(
            developer=(404, 404, 404, 404),  # nothing to withdraw
            holder=(404, 302, 302, 404),  # approved, not pending: refused with a message
            revoked=(404, 302, 302, 404),
            partner=(404, 404, 404, 404),
            staff=(404, 404, 404, 404),
            admin=(404, 404, 404, 404),
        ),
    ),
    Row(
        "GET",
        "tokens/",
        "/tokens/",
        signed_in(
            developer=HIDDEN,
            holder=LISTED,
            revoked=HIDDEN,
            partner=HIDDEN,
            staff=HIDDEN,
            admin=HIDDEN,
        ),
        marker="holder-laptop",
    ),
    Row(
        "POST",
        "tokens/",
        "/tokens/",
        signed_in(developer=400, holder=400, revoked=400, partner=400, staff=400, admin=400),
    ),
    Row(
        "GET",
        "tokens/<int:token_id>/revoke",
        "/tokens/{token}/revoke",
        signed_in(developer=404, holder=200, revoked=404, partner=404, staff=404, admin=404),
    ),
    Row(
        "POST",
        "tokens/<int:token_id>/revoke",
        "/tokens/{token}/revoke",
        signed_in(developer=404, holder=302, revoked=404, partner=404, staff=404, admin=404),
    ),
    Row(
        "GET",
        "me/access/",
        "/me/access/",
        signed_in(
            developer=HIDDEN,
            holder=LISTED,
            revoked=HIDDEN,
            partner=HIDDEN,
            staff=HIDDEN,
            admin=HIDDEN,
        ),
        marker="matrix/queue",
    ),
]

# --- Public documents, health, API docs -----------------------------------------------------------

PUBLIC_ROWS = [
    Row("GET", ".well-known/jwks.json", "/.well-known/jwks.json", PUBLIC),  # no authentication
    Row(
        "GET",
        ".well-known/weightgate-revocations.jwt",
        "/.well-known/weightgate-revocations.jwt",
        PUBLIC,
    ),
    Row("GET", "healthz", "/healthz", PUBLIC),
    Row("GET", "readyz", "/readyz", PUBLIC),
    # Answered to a scraper by address (loopback here) or METRICS_TOKEN, never by a person's role.
    Row("GET", "metrics", "/metrics", PUBLIC),
    Row("GET", "api/schema/", "/api/schema/", PUBLIC_API),
    Row("GET", "api/docs/", "/api/docs/", PUBLIC_API),
]

# --- Accounts (django-allauth) --------------------------------------------------------------------

SIGNED_IN = ("developer", "holder", "revoked", "partner", "staff", "admin")


def accounts(anonymous: Cell, signed_in: Cell) -> dict[str, Cell]:
    return {
        **{role: anonymous for role in NOT_SIGNED_IN},
        **{role: signed_in for role in SIGNED_IN},
    }


A = "accounts/"
ACCOUNT_ROWS = [
    Row("GET", f"{A}login/", "/accounts/login/", accounts(200, 302)),
    Row("GET", f"{A}logout/", "/accounts/logout/", accounts(302, 200)),
    Row("GET", f"{A}inactive/", "/accounts/inactive/", accounts(200, 200)),
    Row("GET", f"{A}signup/", "/accounts/signup/", accounts(200, 302)),
    Row("GET", f"{A}reauthenticate/", "/accounts/reauthenticate/", accounts(LOGIN, 200)),
    # Re-authenticating by a code mailed to a verified address: only the holder has one (the
    # others are sent to the password form); confirming needs a code requested first.
    Row(
        "GET",
        f"{A}reauthenticate/code/",
        "/accounts/reauthenticate/code/",
        {**accounts(LOGIN, 302), "holder": 200},
    ),
    Row(
        "GET",
        f"{A}reauthenticate/code/confirm/",
        "/accounts/reauthenticate/code/confirm/",
        accounts(LOGIN, 302),
    ),
    Row("GET", f"{A}email/", "/accounts/email/", accounts(LOGIN, 200)),
    Row("GET", f"{A}confirm-email/", "/accounts/confirm-email/", accounts(200, 200)),
    Row("GET", f"{A}password/change/", "/accounts/password/change/", accounts(LOGIN, 200)),
    Row("GET", f"{A}password/set/", "/accounts/password/set/", accounts(LOGIN, 302)),
    Row("GET", f"{A}password/reset/", "/accounts/password/reset/", accounts(200, 200)),
    # Only after a sign-in by code was started: back to the sign-in page (or away from it).
    Row("GET", f"{A}login/code/confirm/", "/accounts/login/code/confirm/", accounts(LOGIN, 302)),
    Row(
        "GET",
        r"accounts/confirm-email/(?P<key>[-:\w]+)/$",
        "/accounts/confirm-email/no-such-key/",
        accounts(200, 200),
    ),
    Row(
        "GET",
        f"{A}password/reset/key/done/",
        "/accounts/password/reset/key/done/",
        accounts(200, 200),
    ),
    Row(
        "GET",
        "accounts/password/reset/key/(?P<uidb36>[0-9A-Za-z]+)-(?P<key>.+)/$",
        "/accounts/password/reset/key/1-no-such-key/",
        accounts(200, 200),
    ),
    Row("GET", f"{A}password/reset/done/", "/accounts/password/reset/done/", accounts(200, 200)),
]

# --- The Django admin -----------------------------------------------------------------------------


def staff_only(staff: Cell, admin_: Cell) -> dict[str, Cell]:
    """An admin page: everyone but staff goes to the admin's sign-in page (a script's token
    means nothing to the admin)."""
    others = {role: LOGIN for role in ROLES if role not in ("staff", "admin")}
    return {**others, "staff": staff, "admin": admin_}


# What a superuser gets from each ModelAdmin's generated pages, in this order: changelist, add,
# change (of an existing object), delete (its confirmation page), history. 403 where the admin
# is read-only by design (sealed, audited, issued by a service). Staff without model permissions
# get 403 on all five; the bare object URL redirects (302) to the change page for every staff
# member.
ADMIN_PAGES: dict[str, tuple[int, int, int, int, int]] = {
    "auth.group": (200, 200, 200, 200, 200),
    "auth.user": (200, 200, 200, 200, 200),
    "account.emailaddress": (200, 200, 200, 200, 200),
    "licensing.auditevent": (200, 403, 200, 403, 200),  # append-only
    "licensing.signingkey": (200, 403, 200, 403, 200),  # keys change only by rotate/retire
    "licensing.license": (200, 200, 200, 200, 200),  # the sample is a draft (published: frozen)
    "licensing.partnerorganisation": (200, 200, 200, 200, 200),
    "licensing.gatepolicy": (200, 200, 200, 200, 200),
    "licensing.accessrequest": (200, 403, 200, 403, 200),  # decided by actions
    "licensing.grant": (200, 403, 200, 403, 200),  # issued on approval, revoked by action
    "licensing.webhookendpoint": (200, 200, 200, 403, 200),  # paused, never deleted
    "licensing.webhookdelivery": (200, 403, 200, 403, 200),  # the delivery log
    "release.model": (200, 200, 200, 403, 200),
    "release.version": (200, 200, 200, 403, 200),  # the sample is sealed: read-only
    "release.artifact": (200, 200, 200, 403, 200),
    "release.file": (200, 403, 200, 403, 200),  # from ingest only
    "release.heartbeat": (200, 403, 200, 200, 200),
    "release.ingestjob": (200, 200, 200, 403, 200),
    "release.releasepolicy": (200, 200, 200, 200, 200),
    "release.unlock": (200, 200, 200, 403, 200),
    "release.downloaddaily": (200, 403, 200, 403, 200),
}


def _admin_model_rows() -> Iterator[Row]:
    for model in admin.site._registry:
        label = model._meta.label_lower
        if label not in ADMIN_PAGES:
            continue  # `test_admin_pages_table_names_every_model_admin` reports it
        changelist, add, change, delete, history = ADMIN_PAGES[label]
        base = f"admin/{model._meta.app_label}/{model._meta.model_name}/"
        url = "/" + base
        obj = "{pk_" + label.replace(".", "_") + "}"
        yield Row("GET", base, url, staff_only(403, changelist))
        yield Row("GET", f"{base}add/", f"{url}add/", staff_only(403, add))
        yield Row(
            "GET", f"{base}<path:object_id>/change/", f"{url}{obj}/change/", staff_only(403, change)
        )
        yield Row(
            "GET", f"{base}<path:object_id>/delete/", f"{url}{obj}/delete/", staff_only(403, delete)
        )
        yield Row(
            "GET",
            f"{base}<path:object_id>/history/",
            f"{url}{obj}/history/",
            staff_only(403, history),
        )
        yield Row("GET", f"{base}<path:object_id>/", f"{url}{obj}/", staff_only(302, 302))


def _app_index_route() -> str:
    for route in all_routes():
        if route.startswith("admin/(?P<app_label>"):
            return route
    raise AssertionError("the admin has no app index")


def _admin_app_rows() -> Iterator[Row]:
    """One row per app with a ModelAdmin (one route for all): staff with no permission in the
    app get a 404, as if the app had no admin."""
    route = _app_index_route()
    for app_label in sorted({model._meta.app_label for model in admin.site._registry}):
        yield Row("GET", route, f"/admin/{app_label}/", staff_only(404, 200))


CONSOLE = "admin/release/model/<int:model_id>/console"
KEYS = "admin/licensing/signingkey"
ADMIN_SITE_ROWS = [
    Row("GET", "admin/", "/admin/", staff_only(200, 200)),
    Row(
        "GET",
        "admin/login/",
        "/admin/login/",
        {**{role: 200 for role in ROLES}, "staff": 302, "admin": 302},
    ),
    # Logging out is a POST (GET: 405); the admin sends anyone not staff to its index first.
    Row(
        "GET",
        "admin/logout/",
        "/admin/logout/",
        {**{role: 302 for role in ROLES}, "staff": 405, "admin": 405},
    ),
    Row("GET", "admin/password_change/", "/admin/password_change/", staff_only(200, 200)),
    Row("GET", "admin/password_change/done/", "/admin/password_change/done/", staff_only(200, 200)),
    # Without the app, model and field to complete for: refused.
    Row("GET", "admin/autocomplete/", "/admin/autocomplete/", staff_only(403, 403)),
    Row("GET", "admin/jsi18n/", "/admin/jsi18n/", staff_only(200, 200)),
    # "View on site": no model has a public URL of its own.
    Row(
        "GET",
        "admin/r/<path:content_type_id>/<path:object_id>/",
        "/admin/r/{ct_release_model}/{pk_release_model}/",
        staff_only(404, 404),
    ),
    Row("GET", "admin/(?P<url>.*)$", "/admin/no-such-page/", staff_only(404, 404)),
    # An admin action (a POST to the changelist): approve the unlock someone else scheduled.
    Row(
        "POST",
        "admin/release/unlock/",
        "/admin/release/unlock/",
        staff_only(403, 302),
        form={"action": "approve", "_selected_action": "{unlock}"},
    ),
    # Pages the project adds to its ModelAdmins.
    Row(
        "GET",
        "admin/auth/user/<id>/password/",
        "/admin/auth/user/{pk_auth_user}/password/",
        staff_only(403, 200),
    ),
    Row(
        "GET",
        "admin/licensing/auditevent/verify/",
        "/admin/licensing/auditevent/verify/",
        staff_only(403, 200),
    ),
    Row("GET", f"{KEYS}/rotate/", "/admin/licensing/signingkey/rotate/", staff_only(403, 200)),
    Row("POST", f"{KEYS}/rotate/", "/admin/licensing/signingkey/rotate/", staff_only(403, 400)),
    Row(
        "GET",
        f"{KEYS}/<int:key_id>/retire/",
        "/admin/licensing/signingkey/{key}/retire/",
        staff_only(403, 200),
    ),
    Row(
        "GET",
        "admin/licensing/accessrequest/export.<slug:fmt>",
        "/admin/licensing/accessrequest/export.csv",
        staff_only(403, 200),
    ),
    # The release console of the proprietary model (which has the unlock).
    Row("GET", f"{CONSOLE}/", "/admin/release/model/{console}/console/", staff_only(403, 200)),
    Row(
        "GET",
        f"{CONSOLE}/progress/",
        "/admin/release/model/{console}/console/progress/",
        staff_only(403, 200),
    ),
    Row(
        "GET",
        f"{CONSOLE}/schedule/",
        "/admin/release/model/{console}/console/schedule/",
        staff_only(403, 200),
    ),
    Row(
        "POST",
        f"{CONSOLE}/schedule/",
        "/admin/release/model/{console}/console/schedule/",
        staff_only(403, 400),
    ),
    Row(
        "GET",
        f"{CONSOLE}/unlocks/<int:unlock_id>/<slug:action>/",
        "/admin/release/model/{console}/console/unlocks/{unlock}/approve/",
        staff_only(403, 200),
    ),
    Row(
        "POST",
        f"{CONSOLE}/unlocks/<int:unlock_id>/<slug:action>/",
        "/admin/release/model/{console}/console/unlocks/{unlock}/reject/",
        staff_only(403, 400),
    ),
    Row(
        "GET",
        f"{CONSOLE}/artifacts/<int:artifact_id>/withdraw/",
        "/admin/release/model/{console}/console/artifacts/{console_artifact}/withdraw/",
        staff_only(403, 200),
    ),
    Row(
        "POST",
        f"{CONSOLE}/artifacts/<int:artifact_id>/withdraw/",
        "/admin/release/model/{console}/console/artifacts/{console_artifact}/withdraw/",
        staff_only(403, 400),
    ),
    Row(
        "GET",
        f"{CONSOLE}/downloads/",
        "/admin/release/model/{console}/console/downloads/",
        staff_only(403, 200),
    ),
]


def admin_rows() -> list[Row]:
    return [*ADMIN_SITE_ROWS, *_admin_app_rows(), *_admin_model_rows()]


def all_rows() -> list[Row]:
    return [*REST_ROWS, *HUB_ROWS, *PORTAL_ROWS, *PUBLIC_ROWS, *ACCOUNT_ROWS, *admin_rows()]


def all_routes() -> set[str]:
    """Every route the resolver knows, as `ResolverMatch.route` spells it."""

    def walk(resolver: URLResolver, prefix: str) -> Iterator[str]:
        for pattern in resolver.url_patterns:
            part = str(pattern.pattern)
            # As Django joins them: a nested regex loses its leading ^.
            route = prefix + (part.removeprefix("^") if prefix else part)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern, route)
            else:
                assert isinstance(pattern, URLPattern)
                yield route

    return set(walk(get_resolver(), ""))


# --- The world: one model per phase, the people, their grants, requests and tokens ----------------


@dataclass(frozen=True)
class World:
    people: dict[str, User]
    tokens: dict[str, str]  # role: the clear token its script sends
    values: dict[str, str]  # placeholders of URLs and bodies


def _build() -> World:
    admin_ = make_user("root", is_staff=True, is_superuser=True)
    scheduler = make_user("scheduler", is_staff=True)
    people = {
        "developer": make_user("developer"),
        "holder": make_user("holder"),
        "revoked": make_user("revoked"),
        "partner": make_user("partner"),
        "staff": make_user("staffer", is_staff=True),
        "admin": admin_,
    }
    holder = people["holder"]
    signing_key_ensure(purpose="grants")
    license = make_license(actor=admin_, slug="matrix")
    agency = PartnerOrganisation.objects.create(name="Agency")
    agency.members.add(people["partner"])

    versions = {}
    for phase in PHASES:
        # Grants are issued while proprietary (staff may grant ahead), then the artifact moves
        # on: withdrawing suspends the model's grants, as it does in production.
        version = make_release(
            org="matrix", name=phase, artifacts={"base": Phase.PROPRIETARY}, files_per_artifact=1
        )
        access.gate_policy_set(
            actor=admin_, model=version.model, license=license, approval_mode="manual"
        )
        GatePolicy.objects.get(model=version.model).partners.add(agency)
        for person in (holder, people["revoked"]):
            access.access_grant_direct(model=version.model, user=person, reviewer=admin_)
        artifact = version.artifacts.get()
        if phase in ("gated", "open"):
            services.artifact_set_phase(actor=admin_, artifact=artifact, phase=Phase.GATED)
        if phase == "open":
            services.artifact_set_phase(actor=admin_, artifact=artifact, phase=Phase.OPEN)
        if phase == "withdrawn":
            services.artifact_withdraw(actor=admin_, artifact=artifact, reason="matrix")
        versions[phase] = version
    for grant in Grant.objects.filter(user=people["revoked"]):
        access.grant_revoke(grant=grant, actor=admin_, reason="broke the license")

    # The holder's pending request (on a model of its own, with a webhook, so that a delivery
    # exists for the admin's pages).
    queue = make_release(org="matrix", name="queue", artifacts={"base": Phase.GATED}).model
    access.gate_policy_set(actor=admin_, model=queue, license=license, approval_mode="manual")
    with override_settings(WEBHOOK_ALLOW_PRIVATE_ADDRESSES=True):
        endpoint, _ = webhook_endpoint_create(
            actor=admin_, model=queue, url="http://127.0.0.1:9/hook"
        )
    pending = submit(holder, queue)

    unlock = services.unlock_schedule(
        actor=scheduler,
        version=versions["proprietary"],
        artifacts=["base"],
        target_phase=Phase.GATED,
        not_before=datetime.now(UTC) + timedelta(days=2),
    )
    ingested, _ = ingest_now(org="matrix", name="ingested", artifacts={"base": {"a.json": b"{}"}})
    services.heartbeat_record(worker="matrix")

    tokens = {
        "holder_token": token_create(user=holder, name="holder-ci")[1],
        "others_token": token_create(user=people["developer"], name="developer-ci")[1],
        "scoped_token": token_create(user=holder, name="holder-scoped", models=["matrix/other"])[1],
    }
    expiring, tokens["expired_token"] = token_create(
        user=holder, name="holder-old", expires_at=timezone.now() + timedelta(seconds=5)
    )
    DownloadToken.objects.filter(pk=expiring.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    target_token, _ = token_create(user=holder, name="holder-laptop")

    gated = versions["gated"]
    grant = Grant.objects.get(user=holder, model=gated.model)
    samples = {
        "auth.group": Group.objects.create(name="release-managers").pk,
        "auth.user": holder.pk,
        "account.emailaddress": EmailAddress.objects.create(
            user=holder, email=holder.email, verified=True, primary=True
        ).pk,
        "licensing.auditevent": AuditEvent.objects.order_by("pk").values_list("pk", flat=True)[0],
        "licensing.signingkey": SigningKey.objects.filter(purpose="grants").get().pk,
        "licensing.license": make_license(actor=admin_, slug="draft", publish=False).pk,
        "licensing.partnerorganisation": agency.pk,
        "licensing.gatepolicy": GatePolicy.objects.get(model=gated.model).pk,
        "licensing.accessrequest": pending.pk,
        "licensing.grant": grant.pk,
        "licensing.webhookendpoint": endpoint.pk,
        "licensing.webhookdelivery": WebhookDelivery.objects.filter(endpoint=endpoint)[0].pk,
        "release.model": gated.model.pk,
        "release.version": gated.pk,
        "release.artifact": gated.artifacts.get().pk,
        "release.file": gated.files.get().pk,
        "release.heartbeat": Heartbeat.objects.get().pk,
        "release.ingestjob": ingested.model.ingests.get().pk,
        "release.releasepolicy": ReleasePolicy.objects.create(model=queue).pk,
        "release.unlock": unlock.pk,
        "release.downloaddaily": DownloadDaily.objects.create(
            model=gated.model, version="v1", day=timezone.now().date(), count=1
        ).pk,
    }
    missing = sorted(set(ADMIN_PAGES) - set(samples))
    assert not missing, f"no sample object for the admin pages of {missing}"
    values = {
        "path": "base/part-0.bin",
        "license_sha256": license.text_sha256,
        "grant": str(grant.jti),
        "request": str(pending.pk),
        "token": str(target_token.pk),
        "unlock": str(unlock.pk),
        "ingest": str(samples["release.ingestjob"]),
        "key": str(samples["licensing.signingkey"]),
        "console": str(versions["proprietary"].model.pk),
        "console_artifact": str(versions["proprietary"].artifacts.get().pk),
        "ct_release_model": str(ContentType.objects.get(app_label="release", model="model").pk),
        **{"pk_" + label.replace(".", "_"): str(pk) for label, pk in samples.items()},
    }
    assert AccessRequest.objects.get(pk=pending.pk).status == AccessRequest.Status.PENDING
    return World(people=people, tokens=tokens, values=values)


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    """Built once for the module in a transaction that is rolled back at its end; each test's
    own transaction (and each cell's savepoint) nests inside it."""
    # What conftest's function-scoped fixtures give each test, for the build: fast password
    # hashing, and a cache key prefix of its own.
    fast = override_settings(
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        CACHES={
            "default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
        },
    )
    with django_db_blocker.unblock(), transaction.atomic():
        with fast:
            built = _build()
        yield built
        transaction.set_rollback(True)


@pytest.fixture
def clients(
    world: World, db: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[dict[str, Client]]:
    # Refusals are the point here: Django would log each 4xx with its traceback.
    caplog.set_level(logging.ERROR, logger="django.request")
    # Downloads are logged to a Redis list that other test runs flush into their databases:
    # ours go to a list of our own, dropped afterwards.
    buffer = f"test-matrix:{uuid.uuid4().hex}:downloads"
    monkeypatch.setattr(distribution, "BUFFER_KEY", buffer)
    out = {}
    for role in ROLES:
        token = world.tokens.get(role)
        client = Client(
            raise_request_exception=False,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
        if role in world.people:
            client.force_login(world.people[role])
        out[role] = client
    yield out
    redis_client().delete(buffer)


# --- Asking every cell ----------------------------------------------------------------------------

SIGN_IN_PAGES = {reverse("account_login"), reverse("admin:login")}


def _fill(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    return value


def _outcome(response: Any, marker: str | None) -> Cell:  # a test client's response
    status: int = response.status_code
    if status in (301, 302) and urlsplit(response.get("Location", "")).path in SIGN_IN_PAGES:
        return LOGIN
    if marker is not None and status == 200:
        return LISTED if marker in response.content.decode() else HIDDEN
    return status


def _ask(client: Client, row: Row, values: Mapping[str, str]) -> Cell:
    url = _fill(row.url, values)
    with transaction.atomic():
        if row.method == "POST" and row.json is not None:
            response = client.post(url, _fill(row.json, values), content_type="application/json")
        elif row.method == "POST":
            response = client.post(url, _fill(row.form, values))
        else:
            response = client.generic(row.method, url)
        transaction.set_rollback(True)  # no cell's write changes another cell's answer
    marker = _fill(row.marker, values) if row.marker else None
    return _outcome(response, marker)


def _check(rows: list[Row], world: World, clients: Mapping[str, Client]) -> None:
    """Ask every cell of `rows`; fail with a table of every row that answered otherwise."""
    problems = []
    for row in rows:
        assert set(row.expected) == set(ROLES), f"{row.method} {row.route}: not every role"
        expected: dict[str, tuple[Cell, ...]] = {}
        actual: dict[str, tuple[Cell, ...]] = {}
        for role in ROLES:
            if row.phased:
                expected[role] = tuple(row.expected[role])
                actual[role] = tuple(
                    _ask(clients[role], row, {**world.values, "repo": f"matrix/{phase}"})
                    for phase in PHASES
                )
            else:
                expected[role] = (row.expected[role],)
                actual[role] = (_ask(clients[role], row, world.values),)
        wrong = [role for role in ROLES if expected[role] != actual[role]]
        if wrong:
            url = _fill(row.url, {**world.values, "repo": "matrix/{phase}"})
            head = "  ".join(f"{p:>11}" for p in PHASES) if row.phased else ""
            lines = [f"{row.method} {url}  (route {row.route})", f"  {'':23}{head}"]
            for role in wrong:
                exp = "  ".join(f"{c!s:>11}" for c in expected[role])
                got = "  ".join(f"{c!s:>11}" for c in actual[role])
                lines.append(f"  {role:<14}expected {exp}\n  {'':14}actual   {got}")
            problems.append("\n".join(lines))
    assert not problems, f"{len(problems)} row(s) answer otherwise:\n\n" + "\n\n".join(problems)


# --- The tests ------------------------------------------------------------------------------------


def test_rest_api(world, clients):
    _check(REST_ROWS, world, clients)


def test_hub_api(world, clients):
    _check(HUB_ROWS, world, clients)


def test_portal(world, clients):
    _check(PORTAL_ROWS, world, clients)


def test_public_documents_health_and_api_docs(world, clients):
    _check(PUBLIC_ROWS, world, clients)


def test_accounts(world, clients):
    _check(ACCOUNT_ROWS, world, clients)


def test_admin(world, clients):
    _check(admin_rows(), world, clients)


def test_every_route_has_a_row():
    """A new endpoint must come with its row, and a row must not outlive its endpoint."""
    covered = {row.route for row in all_rows()}
    routes = all_routes()

    assert sorted(routes - covered) == [], "routes without a row in the authorisation matrix"
    assert sorted(covered - routes) == [], "rows whose route no longer exists"


def test_every_row_asks_its_own_route():
    """A row's URL must reach the route it claims, or the table would vouch for another."""
    values = {key: "1" for key in ("ingest", "request", "token", "unlock", "key", "console")}
    values |= {"console_artifact": "1", "ct_release_model": "1", "path": "base/part-0.bin"}
    values |= {"grant": str(uuid.UUID(int=1)), "license_sha256": "0" * 64, "repo": "matrix/open"}
    values |= {"pk_" + label.replace(".", "_"): "1" for label in ADMIN_PAGES}
    wrong = []
    for row in all_rows():
        url = _fill(row.url, values)
        route = resolve(urlsplit(url).path).route
        if route != row.route:
            wrong.append(f"{row.method} {url}: reaches {route!r}, row says {row.route!r}")
    assert wrong == []


def test_admin_pages_table_names_every_model_admin():
    registered = {model._meta.label_lower for model in admin.site._registry}

    assert sorted(registered - set(ADMIN_PAGES)) == [], "ModelAdmins without expected pages"
    assert sorted(set(ADMIN_PAGES) - registered) == [], "entries for ModelAdmins that are gone"
