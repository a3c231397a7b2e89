"""Notifications of access and release events: emails to people, signed webhooks to systems.

The services call the three hooks (`access_request_event`, `grant_event`, `unlock_event`) inside
their transactions. A hook does no network I/O. It writes one `WebhookDelivery` row per
subscribed endpoint in the caller's transaction (an outbox: a rolled-back change notifies no
one, a committed one cannot lose its deliveries) and queues the tasks on commit.

Webhooks, like Stripe's and Standard Webhooks':

    POST <endpoint url>
    Content-Type: application/json
    Weightgate-Event: access_request.approved
    Weightgate-Delivery: 42                       (the same on every retry of this delivery)
    Weightgate-Signature: t=1718000000,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

    {"id": "evt_...", "event": "...", "created_at": "...", "data": {...}}

A receiver checks the signature with `webhook_signature_verify` (or its few lines in any
language) and refuses a timestamp older than a few minutes, so a captured request cannot be
replayed later. Delivery is at least once: receivers deduplicate on `Weightgate-Delivery`.

The endpoint secret must be at hand to sign, so it cannot be stored as a one-way hash: it is
stored AES-256-GCM encrypted under SIGNING_MASTER_KEY (as signing keys are, `licensing.keys`),
bound to its endpoint, and shown once when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import re
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from config.errors import DomainError, NotAllowed
from licensing.models import AccessRequest, GatePolicy, Grant, WebhookDelivery, WebhookEndpoint
from licensing.services import audit_record

if TYPE_CHECKING:
    from release.models import Model, Unlock

logger = logging.getLogger(__name__)

ACCESS_REQUEST_EVENTS = (
    "access_request.created",
    "access_request.approved",
    "access_request.rejected",
)
GRANT_EVENTS = ("grant.revoked",)
UNLOCK_EVENTS = ("unlock.scheduled", "unlock.done", "unlock.failed")
EVENTS = ACCESS_REQUEST_EVENTS + GRANT_EVENTS + UNLOCK_EVENTS

SIGNATURE_HEADER = "Weightgate-Signature"
EVENT_HEADER = "Weightgate-Event"
DELIVERY_HEADER = "Weightgate-Delivery"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a recognisable prefix, not a secret)

# A task attempt is killed after this long (licensing.tasks); the claim on a delivery outlives
# it, so a delivery whose worker died is taken up again only after that worker is surely gone.
ATTEMPT_TIME_LIMIT_SECONDS = 90
_CLAIM = timedelta(seconds=ATTEMPT_TIME_LIMIT_SECONDS + 30)
# Clocks of the host that scheduled a retry and of the one running it may differ a little.
_CLOCK_SLACK = timedelta(seconds=5)
# A pending delivery this late lost its task message (broker down at commit, worker killed).
_OVERDUE = timedelta(minutes=5)
_EXCERPT_CHARS = 1000
_NONCE_BYTES = 12
_MAX_URL_LENGTH = 2000


# --- Hooks the services call, inside their transactions ---------------------------------------


def access_request_event(event: str, request: AccessRequest) -> None:
    """access_request.created / approved / rejected: webhooks, and email to the requester on a
    decision or to the reviewers on a new request."""
    _known(event, ACCESS_REQUEST_EVENTS)
    _webhooks_queue(
        event=event, model_id=request.model_id, data={"access_request": _request_data(request)}
    )
    from licensing import tasks

    request_id = request.pk
    # robust: the decision is committed; a broker hiccup must not turn it into an error page.
    if event == "access_request.created":
        if request.status != AccessRequest.Status.PENDING:
            return  # decided at once (auto approval): nothing for reviewers to do
        transaction.on_commit(
            lambda: tasks.access_request_reviewers_email.delay(request_id), robust=True
        )
    else:
        transaction.on_commit(
            lambda: tasks.access_request_decision_email.delay(request_id, event), robust=True
        )


def grant_event(event: str, grant: Grant) -> None:
    """grant.revoked: webhooks only (the requester hears of a rejection by email already)."""
    _known(event, GRANT_EVENTS)
    _webhooks_queue(event=event, model_id=grant.model_id, data={"grant": _grant_data(grant)})


def unlock_event(event: str, unlock: Unlock) -> None:
    """unlock.scheduled / done / failed: webhooks. `unlock` carries its state after the change."""
    _known(event, UNLOCK_EVENTS)
    _webhooks_queue(
        event=event, model_id=unlock.version.model_id, data={"unlock": _unlock_data(unlock)}
    )


def _known(event: str, events: Sequence[str]) -> None:
    if event not in events:
        raise ValueError(f"unknown event {event!r}; one of {', '.join(events)}")


# --- Event payloads: what the endpoint's owner (staff) may see, no secrets -------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _user_data(user: User) -> dict[str, Any]:
    return {"id": user.pk, "username": user.get_username(), "email": user.email}


def _request_data(request: AccessRequest) -> dict[str, Any]:
    """No form answers, IP address or user agent: a webhook may end up in a chat channel."""
    license = request.license
    return {
        "id": request.pk,
        "model": str(request.model),
        "status": request.status,
        "user": _user_data(request.user),
        "license": None
        if license is None
        else {"slug": license.slug, "version": license.version, "sha256": request.license_sha256},
        "created_at": _iso(request.created_at),
        "decided_at": _iso(request.decided_at),
        "reviewer": request.reviewer.get_username() if request.reviewer else None,
        "reason": request.reason,
        "may_reapply": request.may_reapply,
    }


def _grant_data(grant: Grant) -> dict[str, Any]:
    """The grant's facts, not its token."""
    return {
        "id": str(grant.jti),
        "model": str(grant.model),
        "user": _user_data(grant.user),
        "access_request": grant.request_id,
        "artifacts": grant.artifacts,
        "license_sha256": grant.license_sha256,
        "issued_at": _iso(grant.issued_at),
        "expires_at": _iso(grant.expires_at),
        "revoked_at": _iso(grant.revoked_at),
        "reason": grant.revoked_reason,
    }


def _unlock_data(unlock: Unlock) -> dict[str, Any]:
    version = unlock.version
    return {
        "id": unlock.pk,
        "model": str(version.model),
        "version": version.name,
        "commit": version.commit,
        "artifacts": sorted(unlock.artifacts.values_list("name", flat=True)),
        "target_phase": unlock.target_phase,
        "state": unlock.state,
        "not_before": _iso(unlock.not_before),
        "flipped_at": _iso(unlock.flipped_at),
        "reason": unlock.reason,
    }


def _webhooks_queue(*, event: str, model_id: int, data: dict[str, Any]) -> None:
    """One delivery row per active endpoint of the model that wants `event`; posted after
    commit."""
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(model_id=model_id, active=True)
        if not endpoint.events or event in endpoint.events
    ]
    if not endpoints:
        return
    now = timezone.now()
    payload = {
        "id": f"evt_{uuid.uuid4().hex}",
        "event": event,
        "created_at": now.isoformat(),
        "data": data,
    }
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoint, event=event, payload=payload, next_attempt_at=now, created_at=now
        )
        for endpoint in endpoints
    )
    ids = [delivery.pk for delivery in deliveries]
    # robust: a message lost here is queued again by `webhook_deliveries_requeue`.
    transaction.on_commit(lambda: _deliveries_queue(ids), robust=True)


def _deliveries_queue(delivery_ids: Iterable[int]) -> None:
    from licensing import tasks

    for delivery_id in delivery_ids:
        tasks.webhook_deliver.delay(delivery_id)


# --- Signatures ----------------------------------------------------------------------------


class WebhookSignatureInvalid(Exception):
    """A webhook request that must not be trusted: malformed header, stale timestamp, or no
    signature made with the secret over this body."""


def webhook_signature(*, secret: str, body: bytes, timestamp: int) -> str:
    """The `Weightgate-Signature` value: `t=<unix time>,v1=<hex HMAC-SHA256>`, the MAC over
    `<t>.<body>` with the whole secret string (`whsec_...`) as key."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_signature_verify(
    secret: str,
    header: str,
    body: bytes | str,
    tolerance: int = 300,
    *,
    now: float | None = None,
) -> None:
    """Raise WebhookSignatureInvalid unless `header` signs exactly `body` with `secret` and its
    timestamp is within `tolerance` seconds of now. Several v1 values are accepted (any one
    may match), so a sender can sign with an old and a new secret during a rotation."""
    raw = body.encode() if isinstance(body, str) else body
    fields = [part.strip().split("=", 1) for part in header.split(",")]
    timestamps = [pair[1] for pair in fields if len(pair) == 2 and pair[0] == "t"]
    signatures = [pair[1] for pair in fields if len(pair) == 2 and pair[0] == "v1"]
    if len(timestamps) != 1 or not re.fullmatch(r"[0-9]{1,12}", timestamps[0]) or not signatures:
        raise WebhookSignatureInvalid("malformed signature header (want t=<unix>,v1=<hex>)")
    timestamp = int(timestamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise WebhookSignatureInvalid(f"timestamp {timestamp} is outside the tolerance")
    expected = webhook_signature(secret=secret, body=raw, timestamp=timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookSignatureInvalid("no signature matches the body and secret")


# --- Endpoint URLs: no header injection, no way into the internal network --------------------


class WebhookUrlRefused(DomainError):
    code = "webhook_url_refused"


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


def _target(url: str) -> _Target:
    """Checks that need no network. Control characters, spaces and anything outside printable
    ASCII are refused outright: they are how a URL smuggles extra headers or request lines."""
    if len(url) > _MAX_URL_LENGTH:
        raise WebhookUrlRefused(f"a webhook URL is at most {_MAX_URL_LENGTH} characters")
    if any(not 0x20 < ord(char) < 0x7F for char in url) or "\\" in url:
        raise WebhookUrlRefused(
            "a webhook URL may not contain spaces, control characters (CR, LF...), backslashes "
            "or non-ASCII characters (give an international host name in its xn-- form)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlRefused("a webhook URL must be http:// or https://")
    if "@" in parts.netloc:
        raise WebhookUrlRefused("a webhook URL may not contain credentials (user:password@)")
    if not parts.hostname:
        raise WebhookUrlRefused("a webhook URL needs a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookUrlRefused("the webhook URL's port is not valid") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme=parts.scheme, host=parts.hostname, port=port, path=path)


# NAT64 (RFC 6052 well-known and RFC 8215 local-use prefixes): a gateway translates these to the
# IPv4 address in their last 32 bits, private ones included.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and any(address in network for network in _NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return _public(embedded)
        if address.is_site_local:  # fec0::/10: deprecated, still routed inside some networks
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _addresses(target: _Target) -> list[str]:
    """Resolve the host once and check every address it has; the request then goes to these
    addresses only. socket.gaierror (an OSError) means DNS failed, which may pass."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except UnicodeError:  # a label too long or empty: no DNS answer will ever fix it
        raise WebhookUrlRefused(f"{target.host!r} is not a valid host name") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        for address in addresses:
            if not _public(ipaddress.ip_address(address)):
                raise WebhookUrlRefused(
                    f"{target.host} resolves to {address}, which is not a public address "
                    "(private, loopback, link-local, multicast or reserved); only "
                    "WEBHOOK_ALLOW_PRIVATE_ADDRESSES allows that",
                )
    return addresses


def webhook_url_check(url: str) -> str:
    """Refuse (WebhookUrlRefused) a URL that could inject headers or that points at a
    non-public address; return it unchanged otherwise."""
    target = _target(url)
    try:
        _addresses(target)
    except OSError as error:
        raise WebhookUrlRefused(f"{target.host} cannot be resolved: {error}") from None
    return url


# --- Endpoints -------------------------------------------------------------------------------


def _staff(user: User, what: str) -> None:
    if not (user.is_active and user.is_staff):
        raise NotAllowed(f"only staff may {what}", code="staff_only")


def _events_check(events: Sequence[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise DomainError(
            f"unknown events {', '.join(unknown)}; choose from {', '.join(EVENTS)}",
            code="invalid_events",
        )
    return sorted(set(events))


def _associated_data(endpoint_id: int) -> bytes:
    return f"weightgate webhook secret {endpoint_id}".encode()


def _secret_encrypt(endpoint_id: int, secret: str) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    aead = AESGCM(settings.SIGNING_MASTER_KEY)
    return nonce + aead.encrypt(nonce, secret.encode(), _associated_data(endpoint_id))


def _secret_decrypt(endpoint: WebhookEndpoint) -> str:
    blob = bytes(endpoint.secret_encrypted)
    try:
        clear = AESGCM(settings.SIGNING_MASTER_KEY).decrypt(
            blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _associated_data(endpoint.pk)
        )
    except (InvalidTag, ValueError):
        raise DomainError(
            f"the secret of {endpoint} cannot be decrypted: SIGNING_MASTER_KEY changed or the "
            "row was altered; rotate the endpoint's secret",
            code="webhook_secret_undecryptable",
        ) from None
    return clear.decode()


def _origin(url: str) -> str:
    """What the audit log keeps of a URL: paths and queries may hold a receiver's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def webhook_endpoint_create(
    *, actor: User, model: Model, url: str, events: Sequence[str] = (), active: bool = True
) -> tuple[WebhookEndpoint, str]:
    """Register a webhook for a model's events (none listed: every event). Returns the endpoint
    and its secret, which is shown this once."""
    _staff(actor, "manage webhooks")
    chosen = _events_check(events)
    webhook_url_check(url)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            model=model, url=url, events=chosen, active=active, secret_encrypted=b""
        )
        endpoint.secret_encrypted = _secret_encrypt(endpoint.pk, secret)
        endpoint.save(update_fields=["secret_encrypted"])
        audit_record(
            actor=actor,
            action="webhook_endpoint.created",
            subject_type="webhook_endpoint",
            subject_id=endpoint.pk,
            data={"model": str(model), "origin": _origin(url), "events": chosen},
        )
    return endpoint, secret


def webhook_endpoint_update(
    *,
    actor: User,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: Sequence[str] | None = None,
    active: bool | None = None,
) -> WebhookEndpoint:
    """Change where an endpoint points, what it hears, or pause it (deliveries already queued
    to a paused endpoint fail)."""
    _staff(actor, "manage webhooks")
    if url is not None:
        webhook_url_check(url)
    chosen = _events_check(events) if events is not None else None
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        changed: list[str] = []
        changes: dict[str, Any] = {}  # for the audit log: the URL only as its origin
        if url is not None and url != locked.url:
            locked.url, changes["origin"] = url, _origin(url)
            changed.append("url")
        if chosen is not None and chosen != locked.events:
            locked.events = changes["events"] = chosen
            changed.append("events")
        if active is not None and active != locked.active:
            locked.active = changes["active"] = active
            changed.append("active")
        if changed:
            locked.save(update_fields=changed)
            audit_record(
                actor=actor,
                action="webhook_endpoint.changed",
                subject_type="webhook_endpoint",
                subject_id=locked.pk,
                data=changes,
            )
    return locked


def webhook_endpoint_secret_rotate(*, actor: User, endpoint: WebhookEndpoint) -> str:
    """A new secret, returned this once; deliveries sign with it from now on."""
    _staff(actor, "manage webhooks")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.secret_encrypted = _secret_encrypt(locked.pk, secret)
        locked.save(update_fields=["secret_encrypted"])
        audit_record(
            actor=actor,
            action="webhook_endpoint.secret_rotated",
            subject_type="webhook_endpoint",
            subject_id=locked.pk,
        )
    return secret


# --- Delivery --------------------------------------------------------------------------------


def _connect(addresses: Sequence[str], port: int, timeout: float) -> socket.socket:
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as failed:
            error = failed
    raise error or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to addresses resolved and checked beforehand and never resolves the name again:
    a DNS answer that changes between the check and the connection (rebinding) cannot send the
    request to an internal address. The Host header still names the host."""

    def __init__(self, host: str, port: int, *, addresses: Sequence[str], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses
        self._timeout = timeout

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self._timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As _PinnedHTTPConnection, with TLS verified against the host name (SNI included)."""

    def __init__(self, host: str, port: int, *, addresses: Sequence[str], timeout: float):
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._addresses = addresses
        self._timeout = timeout

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self._timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class _Response:
    status: int
    excerpt: str
    retry_after: str | None


def _post(url: str, *, body: bytes, headers: dict[str, str]) -> _Response:
    """One POST, no proxies from the environment, no redirects followed (a redirect could lead
    anywhere, the internal network included), at most WEBHOOK_TIMEOUT_SECONDS per wait."""
    target = _target(url)
    addresses = _addresses(target)
    timeout = float(settings.WEBHOOK_TIMEOUT_SECONDS)
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target.host, target.port, addresses=addresses, timeout=timeout)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        excerpt = response.read(_EXCERPT_CHARS * 4).decode("utf-8", "replace")[:_EXCERPT_CHARS]
        return _Response(response.status, excerpt, response.getheader("Retry-After"))
    finally:
        connection.close()


def _backoff(attempts: int, retry_after: str | None) -> float:
    """Exponential with jitter (half fixed, half random), so endpoints that came back up are not
    hit by every waiting delivery at once; a Retry-After in seconds is honoured up to the cap."""
    cap = float(settings.WEBHOOK_RETRY_MAX_SECONDS)
    delay = min(cap, settings.WEBHOOK_RETRY_BASE_SECONDS * 2.0 ** (attempts - 1))
    delay = delay / 2 + secrets.SystemRandom().uniform(0, delay / 2)
    if retry_after and retry_after.strip().isdigit():
        delay = max(delay, min(cap, float(retry_after.strip())))
    return delay


def _finish(delivery_id: int, **fields: Any) -> None:
    WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).update(
        **fields
    )


def webhook_delivery_attempt(*, delivery_id: int) -> float | None:
    """Post one delivery once and record the outcome on its row. Returns the seconds to wait
    before the next attempt when it should be retried (network error, 5xx, 429), else None:
    delivered (2xx), failed for good (other answers, a refused URL, the last attempt), or not
    ours to do (already finished, or another worker holds it). Safe to run twice."""
    now = timezone.now()
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + _CLOCK_SLACK))
        .update(attempts=F("attempts") + 1, next_attempt_at=now + _CLAIM)
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    failed = WebhookDelivery.Status.FAILED
    if not endpoint.active:
        _finish(
            delivery_id, status=failed, next_attempt_at=None, last_error="the endpoint is paused"
        )
        return None
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Weightgate-Webhooks/1",
            EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: str(delivery.pk),
            SIGNATURE_HEADER: webhook_signature(
                secret=_secret_decrypt(endpoint), body=body, timestamp=int(time.time())
            ),
        }
        response = _post(endpoint.url, body=body, headers=headers)
    except DomainError as refused:  # a refused URL, an undecryptable secret: no retry helps
        _finish(delivery_id, status=failed, next_attempt_at=None, last_error=refused.message)
        logger.warning("webhook delivery %s failed: %s", delivery_id, refused.message)
        return None
    except (OSError, http.client.HTTPException) as error:  # DNS, connect, TLS, timeout, protocol
        return _retry_or_fail(delivery, error=f"{type(error).__name__}: {error}", response=None)
    if 200 <= response.status < 300:
        _finish(
            delivery_id,
            status=WebhookDelivery.Status.DELIVERED,
            response_status=response.status,
            response_body=response.excerpt,
            last_error="",
            next_attempt_at=None,
            delivered_at=timezone.now(),
        )
        return None
    if response.status == 429 or response.status >= 500:
        return _retry_or_fail(delivery, error=f"HTTP {response.status}", response=response)
    problem = f"HTTP {response.status}" + (
        ": redirects are not followed" if 300 <= response.status < 400 else ""
    )
    _finish(
        delivery_id,
        status=failed,
        response_status=response.status,
        response_body=response.excerpt,
        last_error=problem,
        next_attempt_at=None,
    )
    return None


def _retry_or_fail(
    delivery: WebhookDelivery, *, error: str, response: _Response | None
) -> float | None:
    answer = (
        {"response_status": response.status, "response_body": response.excerpt}
        if response is not None
        else {"response_status": None, "response_body": ""}
    )
    if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        _finish(
            delivery.pk,
            status=WebhookDelivery.Status.FAILED,
            last_error=f"{error} (gave up after {delivery.attempts} attempts)"[:_EXCERPT_CHARS],
            next_attempt_at=None,
            **answer,
        )
        return None
    delay = _backoff(delivery.attempts, response.retry_after if response else None)
    _finish(
        delivery.pk,
        last_error=error[:_EXCERPT_CHARS],
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        **answer,
    )
    return delay


def webhook_delivery_redeliver(*, actor: User, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a finished delivery again (after the receiver was fixed), as a new series of
    attempts with the same id and body."""
    _staff(actor, "redeliver webhooks")
    with transaction.atomic():
        locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        if locked.status == WebhookDelivery.Status.PENDING:
            raise NotAllowed("the delivery is still pending", code="delivery_pending")
        locked.status, locked.attempts = WebhookDelivery.Status.PENDING, 0
        locked.next_attempt_at, locked.last_error = timezone.now(), ""
        locked.save(update_fields=["status", "attempts", "next_attempt_at", "last_error"])
        audit_record(
            actor=actor,
            action="webhook_delivery.redelivered",
            subject_type="webhook_delivery",
            subject_id=locked.pk,
        )
        delivery_id = locked.pk
        transaction.on_commit(lambda: _deliveries_queue([delivery_id]), robust=True)
    return locked


def webhook_deliveries_requeue(*, now: datetime | None = None) -> int:
    """Queue again the pending deliveries whose attempt is long overdue: their task message was
    lost (broker down at commit, worker killed, retry dropped). The claim in
    `webhook_delivery_attempt` keeps a duplicate message from posting twice."""
    now = now or timezone.now()
    overdue = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=now - _OVERDUE
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:1000]
    )
    if overdue:
        logger.warning("re-queueing %d overdue webhook deliveries", len(overdue))
        _deliveries_queue(overdue)
    return len(overdue)


# --- Email -----------------------------------------------------------------------------------


def _link(url_name: str, **kwargs: str) -> str:
    return settings.SITE_URL + reverse(url_name, kwargs=kwargs or None)


def _subject(text: str) -> str:
    """One line, whatever a model title or user name holds."""
    return " ".join(f"[Weightgate] {text}".split())[:200]


def _reviewer_addresses(*, exclude: User | None = None) -> list[str]:
    """Every active staff member with an email address reviews access requests."""
    reviewers = User.objects.filter(is_active=True, is_staff=True).exclude(email="")
    if exclude is not None:
        reviewers = reviewers.exclude(pk=exclude.pk)
    return sorted(set(reviewers.values_list("email", flat=True)))


def _send(*, subject: str, template: str, context: dict[str, Any], to: list[str]) -> None:
    body = render_to_string(f"licensing/email/{template}", context)
    EmailMessage(subject=_subject(subject), body=body, to=to).send()


def access_request_decision_email_send(*, request_id: int, event: str) -> bool:
    """Tell the requester of the decision: approved, or rejected with the reviewer's reason
    and whether they may apply again. Nothing is sent if the request changed again since (the
    later decision sends its own email). Returns whether an email went out."""
    wanted = {
        "access_request.approved": AccessRequest.Status.APPROVED,
        "access_request.rejected": AccessRequest.Status.REJECTED,
    }[event]
    request = (
        AccessRequest.objects.select_related("user", "model", "license")
        .filter(pk=request_id)
        .first()
    )
    if request is None or request.status != wanted or not request.user.email:
        return False
    context = {
        "request": request,
        "model": str(request.model),
        "link": _link("my-access-requests"),
        "site_url": settings.SITE_URL,
    }
    if wanted == AccessRequest.Status.APPROVED:
        subject = f"Access to {request.model} approved"
    else:
        subject = f"Your request for {request.model} was not approved"
    _send(
        subject=subject,
        template=f"access_request_{wanted}.txt",
        context=context,
        to=[request.user.email],
    )
    return True


def access_request_reviewers_email_send(*, request_id: int) -> bool:
    """Tell reviewers of a new request, if the model's policy wants it in real time and the
    request still waits for them (auto approval decides before this runs)."""
    request = (
        AccessRequest.objects.select_related("user", "model", "license")
        .filter(pk=request_id, status=AccessRequest.Status.PENDING)
        .first()
    )
    if request is None:
        return False
    policy = GatePolicy.objects.filter(model_id=request.model_id).first()
    if policy is None or policy.reviewer_notifications != GatePolicy.Notify.REALTIME:
        return False
    to = _reviewer_addresses(exclude=request.user)
    if not to:
        return False
    model = request.model
    context = {
        "request": request,
        "model": str(model),
        "link": _link("access-request-review", org=model.org, name=model.name),
    }
    _send(
        subject=f"New access request for {model} from {request.user.get_username()}",
        template="reviewer_new_request.txt",
        context=context,
        to=to,
    )
    return True


@dataclass(frozen=True)
class DigestModel:
    model: str
    link: str
    requests: list[AccessRequest]
    more: int


def reviewer_digest_send(*, now: datetime | None = None, per_model: int = 50) -> int:
    """The daily summary, for models whose policy asks for a digest: every request still
    pending, oldest first, per model. Returns how many requests it listed (0: nothing sent)."""
    now = now or timezone.now()
    pending = list(
        AccessRequest.objects.filter(
            status=AccessRequest.Status.PENDING,
            model__gate_policy__reviewer_notifications=GatePolicy.Notify.DIGEST,
        )
        .select_related("user", "model", "license")
        .order_by("model__org", "model__name", "created_at")
    )
    to = _reviewer_addresses()
    if not pending or not to:
        return 0
    by_model: dict[int, list[AccessRequest]] = {}
    for request in pending:
        by_model.setdefault(request.model_id, []).append(request)
    models = [
        DigestModel(
            model=str(requests[0].model),
            link=_link(
                "access-request-review", org=requests[0].model.org, name=requests[0].model.name
            ),
            requests=requests[:per_model],
            more=max(0, len(requests) - per_model),
        )
        for requests in by_model.values()
    ]
    new = sum(1 for request in pending if request.created_at >= now - timedelta(days=1))
    count = len(pending)
    _send(
        subject=f"{count} access request{'s' if count != 1 else ''} awaiting review",
        template="reviewer_digest.txt",
        context={"models": models, "count": count, "new": new, "now": now},
        to=to,
    )
    return count
