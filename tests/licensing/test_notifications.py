"""Notifications: signed webhooks to a real local HTTP receiver (retries, give-up, URL safety,
subscriptions) and emails through Django's locmem backend (decisions, real-time reviewer mail,
daily digest). Tasks run eagerly in the test process, after commit; one test runs a real
Celery worker."""

import json
import os
import random
import socket
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core import mail
from django.db import transaction

from config.celery import app
from config.errors import DomainError, NotAllowed
from licensing import access, notifications, tasks
from licensing.keys import signing_key_ensure
from licensing.models import AccessRequest, AuditEvent, License, WebhookDelivery
from licensing.notifications import (
    WebhookSignatureInvalid,
    WebhookUrlRefused,
    webhook_endpoint_create,
    webhook_signature,
    webhook_signature_verify,
)
from release import services
from release.models import Phase, ReleasePolicy, Unlock
from release.sample_weights import sample_model_files
from release.services.unlocks import unlock_advance, unlock_push_file
from release.storage import s3_client
from tests.celery_worker import celery_worker, wait_for
from tests.factories import make_release, make_user
from tests.staging import ingest_now, overwrite

Status = WebhookDelivery.Status
PUBLIC_URL = "https://93.184.215.14/hooks/weightgate"  # an IP literal: no DNS needed


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.1 that records each request and answers with the statuses
    queued in `plan` (then 200)."""
    recorded: list[SimpleNamespace] = []
    plan: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            recorded.append(SimpleNamespace(path=self.path, headers=self.headers, body=body))
            status = plan.pop(0) if plan else 200
            answer = f"answer {status}".encode()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    yield SimpleNamespace(
        url=f"http://127.0.0.1:{port}/hooks/weightgate?source=test",
        port=port,
        requests=recorded,
        plan=plan,
    )
    server.shutdown()
    server.server_close()


@pytest.fixture
def local_webhooks(settings):
    """Receivers on this machine are allowed, and retries do not wait."""
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0
    return settings


@pytest.fixture
def outbox(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    return mail.outbox


@pytest.fixture
def eager():
    """`.delay()` runs the task here and now, retries too (at once: countdowns are skipped)."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks, eager):
    """Run what the services queue on commit, as a worker would right after."""

    def run():
        return django_capture_on_commit_callbacks(execute=True)

    return run


def gated(staff, *, name="tiny", mode="manual", notify="realtime"):
    """A sealed release with a gated artifact, a published license and a gate policy."""
    version = make_release(name=name, artifacts={"base": Phase.GATED})
    license = License.objects.create(
        slug=f"acme-{name}", version="1.0", title="Acme community license", text="Use well.\n"
    )
    license = access.license_publish(actor=staff, license=license)
    access.gate_policy_set(
        actor=staff,
        model=version.model,
        license=license,
        approval_mode=mode,
        reviewer_notifications=notify,
    )
    signing_key_ensure(purpose="grants")
    return version.model


def submit(user, model):
    return access.access_request_submit(
        user=user, model=model, license=model.gate_policy.license, answers={}
    )


def mails_to(outbox, address):
    return [message for message in outbox if address in message.to]


# --- signatures -----------------------------------------------------------------------------


SECRET = "whsec_test-secret"
BODY = b'{"id":"evt_1","event":"grant.revoked","data":{}}'


def test_signature_verifies_with_the_secret():
    header = webhook_signature(secret=SECRET, body=BODY, timestamp=int(time.time()))

    webhook_signature_verify(SECRET, header, BODY)
    webhook_signature_verify(SECRET, header, BODY.decode())
    webhook_signature_verify(SECRET, f"{header},v1={'0' * 64}", BODY)  # during a rotation


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda s, h, b: (s, h, b.replace(b"revoked", b"created")), id="body"),
        pytest.param(lambda s, h, b: (s, h[:-1] + ("1" if h[-1] == "0" else "0"), b), id="mac"),
        pytest.param(
            lambda s, h, b: (s, f"t={int(h[2:12]) - 1},{h.split(',')[1]}", b), id="timestamp"
        ),
        pytest.param(lambda s, h, b: ("whsec_other", h, b), id="secret"),
        pytest.param(lambda s, h, b: (s, h.split(",")[1], b), id="no-timestamp"),
        pytest.param(lambda s, h, b: (s, h.split(",")[0], b), id="no-signature"),
        pytest.param(lambda s, h, b: (s, "", b), id="empty"),
    ],
)
def test_signature_is_refused_when_anything_changed(alter):
    header = webhook_signature(secret=SECRET, body=BODY, timestamp=int(time.time()))
    secret, changed_header, body = alter(SECRET, header, BODY)

    with pytest.raises(WebhookSignatureInvalid):
        webhook_signature_verify(secret, changed_header, body)


def test_signature_older_than_the_tolerance_is_refused():
    body = b"{}"
    header = webhook_signature(secret="whsec_s", body=body, timestamp=1_700_000_000)

    webhook_signature_verify("whsec_s", header, body, now=1_700_000_300)
    with pytest.raises(WebhookSignatureInvalid, match="tolerance"):
        webhook_signature_verify("whsec_s", header, body, now=1_700_000_301)
    with pytest.raises(WebhookSignatureInvalid, match="tolerance"):
        webhook_signature_verify("whsec_s", header, body, tolerance=60, now=1_700_000_061)


# --- endpoints and URL safety ---------------------------------------------------------------


@pytest.mark.django_db
def test_endpoint_secret_is_returned_once_and_stored_only_encrypted(staff):
    model = make_release().model

    endpoint, secret = webhook_endpoint_create(actor=staff, model=model, url=PUBLIC_URL)

    assert secret.startswith("whsec_")
    assert len(secret) > 40
    endpoint.refresh_from_db()
    stored = bytes(endpoint.secret_encrypted)
    assert secret.encode() not in stored
    assert secret.removeprefix("whsec_").encode() not in stored
    assert notifications._secret_decrypt(endpoint) == secret
    audit = AuditEvent.objects.get(action="webhook_endpoint.created")
    assert secret not in json.dumps(audit.data)
    assert audit.data["origin"] == "https://93.184.215.14"


@pytest.mark.django_db
def test_endpoint_secret_does_not_decrypt_for_another_endpoint(staff):
    model = make_release().model
    first, _ = webhook_endpoint_create(actor=staff, model=model, url=PUBLIC_URL)
    second, _ = webhook_endpoint_create(actor=staff, model=model, url=PUBLIC_URL)

    second.secret_encrypted = first.secret_encrypted

    with pytest.raises(DomainError, match="cannot be decrypted"):
        notifications._secret_decrypt(second)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.5/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        # Other spellings of 127.0.0.1 that the system resolver accepts (inet_aton).
        "http://2130706433/hook",  # decimal
        "http://0x7f.1/hook",  # hex, short form
        "http://0x7f000001/hook",
        "http://017700000001/hook",  # octal
        "http://0177.0.0.1/hook",
        "http://127.1/hook",
        "http://0/hook",  # 0.0.0.0
        "http://[::ffff:7f00:1]/hook",  # IPv4-mapped, hex form
        "http://[::127.0.0.1]/hook",  # IPv4-compatible (deprecated)
        "http://[2002:7f00:1::1]/hook",  # 6to4 of 127.0.0.1
        "http://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1: a gateway would reach it
        "http://[fec0::1]/hook",  # site-local (deprecated, still routed in places)
    ],
)
def test_private_and_loopback_urls_are_refused_unless_allowed(staff, settings, url):
    model = make_release().model

    with pytest.raises(WebhookUrlRefused, match="not a public address"):
        webhook_endpoint_create(actor=staff, model=model, url=url)
    assert not model.webhook_endpoints.exists()

    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    endpoint, _ = webhook_endpoint_create(actor=staff, model=model, url=url)
    assert endpoint.url == url


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://hooks.example.com/a\r\nX-Injected: 1", "control characters"),
        ("https://hooks.example.com/a\nHost: evil", "control characters"),
        ("https://hooks.example.com/a%0d%0a b", "spaces"),
        ("https://hooks.example.com/\x00", "control characters"),
        ("https://hooks.example.com/ünïcode", "non-ASCII"),
        ("https://user:password@hooks.example.com/", "credentials"),
        ("ftp://hooks.example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("https:///no-host", "needs a host"),
        ("https://hooks..example.com/", "not a valid host name"),
        ("https://hooks.example.com:99999/", "port"),
        ("https://hooks.example.com/" + "a" * 2000, "at most"),
        ("https://hooks.example.com/a\tb", "control characters"),
        ("https://hooks.example.com/%0d%0aX-Injected:%201\r\n", "control characters"),
        ("https://hooks.example.com\r\nHost: evil/", "control characters"),
        ("https://hooks.example.com\\@evil.example/", "backslashes"),
        ("https://hooks.example.com@evil.example/", "credentials"),
        ("https://:@evil.example/", "credentials"),
        ("https://hooks.example.com%40evil.example/", "not a valid host name|cannot be resolved"),
        ("https://hooks.exa\u200bmple.com/", "non-ASCII"),
        ("https://hооks.example.com/", "non-ASCII"),  # Cyrillic о: give the xn-- form
    ],
)
def test_malformed_and_injecting_urls_are_refused(staff, settings, url, reason):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True  # refused for what they are, not where
    model = make_release().model

    with pytest.raises(WebhookUrlRefused, match=reason):
        webhook_endpoint_create(actor=staff, model=model, url=url)
    assert not model.webhook_endpoints.exists()


@pytest.mark.django_db
def test_only_staff_create_endpoints_and_events_must_be_known(staff, outsider):
    model = make_release().model

    with pytest.raises(NotAllowed, match="only staff"):
        webhook_endpoint_create(actor=outsider, model=model, url=PUBLIC_URL)
    with pytest.raises(DomainError, match="unknown events unlock.maybe"):
        webhook_endpoint_create(actor=staff, model=model, url=PUBLIC_URL, events=["unlock.maybe"])


# --- deliveries -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_delivery_is_signed_and_verifiable_by_the_receiver(
    staff, outsider, receiver, local_webhooks, after_commit
):
    model = gated(staff)
    endpoint, secret = webhook_endpoint_create(actor=staff, model=model, url=receiver.url)

    with after_commit():
        request = submit(outsider, model)

    [received] = receiver.requests
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert received.path == "/hooks/weightgate?source=test"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["Weightgate-Event"] == "access_request.created"
    assert received.headers["Weightgate-Delivery"] == str(delivery.pk)
    webhook_signature_verify(secret, received.headers["Weightgate-Signature"], received.body)
    payload = json.loads(received.body)
    assert payload == delivery.payload
    assert payload["event"] == "access_request.created"
    assert payload["id"].startswith("evt_")
    data = payload["data"]["access_request"]
    assert data["id"] == request.pk
    assert data["model"] == "acme/tiny"
    assert data["status"] == "pending"
    assert data["user"] == {"id": outsider.pk, "username": "outsider", "email": outsider.email}
    assert "answers" not in data
    assert "ip" not in data
    assert (delivery.status, delivery.attempts, delivery.response_status) == (
        Status.DELIVERED,
        1,
        200,
    )
    assert delivery.response_body == "answer 200"
    assert delivery.delivered_at is not None


@pytest.mark.django_db
def test_delivery_is_retried_after_a_500_then_delivered(
    staff, outsider, receiver, local_webhooks, after_commit
):
    model = gated(staff)
    endpoint, secret = webhook_endpoint_create(actor=staff, model=model, url=receiver.url)
    receiver.plan.extend([500])

    with after_commit():
        submit(outsider, model)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == Status.DELIVERED
    assert delivery.attempts == 2
    assert delivery.response_status == 200
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.body == second.body  # the same event, the same id
    assert first.headers["Weightgate-Delivery"] == second.headers["Weightgate-Delivery"]
    for received in receiver.requests:
        webhook_signature_verify(secret, received.headers["Weightgate-Signature"], received.body)


@pytest.mark.django_db
def test_429_is_retried_and_gives_up_after_the_last_attempt(
    staff, outsider, receiver, local_webhooks, after_commit
):
    local_webhooks.WEBHOOK_MAX_ATTEMPTS = 3
    model = gated(staff)
    endpoint, _ = webhook_endpoint_create(actor=staff, model=model, url=receiver.url)
    receiver.plan.extend([429, 503, 500, 200])

    with after_commit():
        submit(outsider, model)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == Status.FAILED
    assert delivery.attempts == 3
    assert delivery.response_status == 500
    assert "gave up after 3 attempts" in delivery.last_error
    assert len(receiver.requests) == 3


@pytest.mark.django_db
@pytest.mark.parametrize("status", [404, 400, 410, 302])
def test_client_errors_and_redirects_fail_without_retry(
    staff, outsider, receiver, local_webhooks, after_commit, status
):
    model = gated(staff)
    endpoint, _ = webhook_endpoint_create(actor=staff, model=model, url=receiver.url)
    receiver.plan.append(status)

    with after_commit():
        submit(outsider, model)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts, delivery.response_status) == (
        Status.FAILED,
        1,
        status,
    )
    assert len(receiver.requests) == 1  # a redirect is not followed either
    assert delivery.last_error.startswith(f"HTTP {status}")


@pytest.mark.django_db
def test_network_errors_are_retried_then_recorded(staff, outsider, local_webhooks, after_commit):
    local_webhooks.WEBHOOK_MAX_ATTEMPTS = 2
    model = gated(staff)
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there any more
    endpoint, _ = webhook_endpoint_create(
        actor=staff, model=model, url=f"http://127.0.0.1:{port}/hook"
    )

    with after_commit():
        submit(outsider, model)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts, delivery.response_status) == (
        Status.FAILED,
        2,
        None,
    )
    assert "ConnectionRefusedError" in delivery.last_error


@pytest.mark.django_db
def test_url_is_checked_again_before_each_delivery(
    staff, outsider, receiver, local_webhooks, after_commit
):
    model = gated(staff)
    endpoint, _ = webhook_endpoint_create(actor=staff, model=model, url=receiver.url)
    local_webhooks.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False

    with after_commit():
        submit(outsider, model)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts) == (Status.FAILED, 1)
    assert "not a public address" in delivery.last_error
    assert receiver.requests == []


@pytest.mark.django_db
def test_a_delivery_runs_once_however_often_its_task_does(
    staff, outsider, receiver, local_webhooks, after_commit
):
    model = gated(staff)
    endpoint, _ = webhook_endpoint_create(actor=staff, model=model, url=receiver.url)
    with after_commit():
        submit(outsider, model)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)

    tasks.webhook_deliver.apply(args=[delivery.pk])

    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.get(pk=delivery.pk).attempts == 1


@pytest.mark.django_db
def test_a_rolled_back_change_notifies_no_one(staff, outsider, django_capture_on_commit_callbacks):
    model = gated(staff)
    webhook_endpoint_create(actor=staff, model=model, url=PUBLIC_URL)

    def submit_then_fail():
        with transaction.atomic():
            submit(outsider, model)
            raise RuntimeError("something after the request failed")

    with django_capture_on_commit_callbacks() as queued, pytest.raises(RuntimeError):
        submit_then_fail()

    assert not WebhookDelivery.objects.exists()
    assert queued == []


@pytest.mark.django_db
def test_lost_task_messages_are_queued_again(staff, outsider, receiver, local_webhooks, eager):
    model = gated(staff)
    endpoint, _ = webhook_endpoint_create(actor=staff, model=model, url=receiver.url)
    submit(outsider, model)  # its on-commit queueing never runs: the message is "lost"
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == Status.PENDING
    assert delivery.next_attempt_at is not None

    assert notifications.webhook_deliveries_requeue() == 0  # not overdue yet
    later = delivery.next_attempt_at + notifications._OVERDUE * 2
    assert notifications.webhook_deliveries_requeue(now=later) == 1

    assert WebhookDelivery.objects.get(pk=delivery.pk).status == Status.DELIVERED
    assert len(receiver.requests) == 1


# --- subscriptions: which endpoints hear which events --------------------------------------


def deliveries(endpoint):
    return list(
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .order_by("id")
        .values_list("event", flat=True)
    )


@pytest.mark.django_db
def test_unlock_events_reach_subscribed_endpoints_only(staff):
    seed = random.randrange(1 << 30)
    version, _ = ingest_now(artifacts={"base": sample_model_files(seed=seed)})
    ReleasePolicy.objects.create(model=version.model, required_approvals=0)
    other = make_release(org="other", name="model").model
    everything, _ = webhook_endpoint_create(actor=staff, model=version.model, url=PUBLIC_URL)
    done_only, _ = webhook_endpoint_create(
        actor=staff, model=version.model, url=PUBLIC_URL, events=["unlock.done"]
    )
    access_only, _ = webhook_endpoint_create(
        actor=staff, model=version.model, url=PUBLIC_URL, events=["access_request.created"]
    )
    paused, _ = webhook_endpoint_create(
        actor=staff, model=version.model, url=PUBLIC_URL, active=False
    )
    other_model, _ = webhook_endpoint_create(actor=staff, model=other, url=PUBLIC_URL)

    unlock = services.unlock_schedule(
        actor=staff,
        version=version,
        artifacts=["base"],
        target_phase=Phase.GATED,
        not_before=datetime.now(UTC),
    )
    unlock_advance(unlock_id=unlock.pk)
    for row_id in unlock.files.values_list("pk", flat=True):
        unlock_push_file(unlock_file_id=row_id)
    unlock_advance(unlock_id=unlock.pk)

    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.DONE
    assert deliveries(everything) == ["unlock.scheduled", "unlock.done"]
    assert deliveries(done_only) == ["unlock.done"]
    assert deliveries(access_only) == []
    assert deliveries(paused) == []
    assert deliveries(other_model) == []
    done = WebhookDelivery.objects.get(endpoint=done_only)
    data = done.payload["data"]["unlock"]
    assert data["id"] == unlock.pk
    assert data["model"] == "acme/llm"
    assert (data["state"], data["target_phase"], data["artifacts"]) == ("done", "gated", ["base"])
    assert data["flipped_at"] is not None
    assert done.status == Status.PENDING  # posted by a worker after commit


@pytest.mark.django_db
def test_a_failed_unlock_is_announced(staff):
    seed = random.randrange(1 << 30)
    version, sources = ingest_now(artifacts={"base": sample_model_files(seed=seed)})
    ReleasePolicy.objects.create(model=version.model, required_approvals=0)
    endpoint, _ = webhook_endpoint_create(
        actor=staff, model=version.model, url=PUBLIC_URL, events=["unlock.failed"]
    )
    shard = version.files.get(path="model-00001-of-00002.safetensors")  # bytes of this seed only
    staged = s3_client().get_object(Bucket=django_settings.S3_BUCKET_STAGING, Key=shard.storage_key)
    corrupted = bytearray(staged["Body"].read())
    corrupted[-1] ^= 0xFF
    overwrite(sources["base"], shard.path, bytes(corrupted))

    unlock = services.unlock_schedule(
        actor=staff,
        version=version,
        artifacts=["base"],
        target_phase=Phase.GATED,
        not_before=datetime.now(UTC),
    )
    unlock_advance(unlock_id=unlock.pk)
    for row_id in unlock.files.values_list("pk", flat=True):
        unlock_push_file(unlock_file_id=row_id)

    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.FAILED
    [delivery] = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert delivery.event == "unlock.failed"
    assert delivery.payload["data"]["unlock"]["state"] == "failed"
    assert shard.path in delivery.payload["data"]["unlock"]["reason"]


@pytest.mark.django_db
def test_access_and_grant_events_reach_their_subscribers(staff, outsider):
    model = gated(staff)
    endpoint, _ = webhook_endpoint_create(
        actor=staff,
        model=model,
        url=PUBLIC_URL,
        events=["access_request.approved", "access_request.rejected", "grant.revoked"],
    )

    request = submit(outsider, model)
    access.access_request_approve(request=request, reviewer=staff)
    access.access_request_reject(request=request, reviewer=staff, reason="Licence breach")

    assert deliveries(endpoint) == [
        "access_request.approved",
        "grant.revoked",
        "access_request.rejected",
    ]
    revoked = WebhookDelivery.objects.get(endpoint=endpoint, event="grant.revoked")
    grant = revoked.payload["data"]["grant"]
    assert grant["access_request"] == request.pk
    assert grant["reason"] == "access rejected: Licence breach"
    assert "token" not in grant
    assert request.grants.get().token not in json.dumps(revoked.payload)


# --- emails -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_requester_is_emailed_on_approval(staff, outsider, outbox, after_commit):
    model = gated(staff, notify="digest")
    request = submit(outsider, model)

    with after_commit():
        access.access_request_approve(request=request, reviewer=staff)

    [message] = mails_to(outbox, outsider.email)
    assert message.subject == "[Weightgate] Access to acme/tiny approved"
    assert message.from_email == django_settings.DEFAULT_FROM_EMAIL
    assert "Acme community license (version 1.0)" in message.body
    assert f"{django_settings.SITE_URL}/api/v1/me/access-requests/" in message.body


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("may_reapply", "verdict"),
    [(True, "You may apply again"), (False, "You may not apply again")],
)
def test_requester_is_emailed_on_rejection_with_the_reason(
    staff, outsider, outbox, after_commit, may_reapply, verdict
):
    model = gated(staff, notify="digest")
    request = submit(outsider, model)

    with after_commit():
        access.access_request_reject(
            request=request,
            reviewer=staff,
            reason="Please apply with your <work> email & affiliation",
            may_reapply=may_reapply,
        )

    [message] = mails_to(outbox, outsider.email)
    assert message.subject == "[Weightgate] Your request for acme/tiny was not approved"
    assert "Please apply with your <work> email & affiliation" in message.body  # not escaped
    assert verdict in message.body


@pytest.mark.django_db
def test_a_decision_overtaken_by_another_sends_only_the_latest(staff, outsider, outbox, eager):
    model = gated(staff, notify="digest")
    request = submit(outsider, model)
    access.access_request_approve(request=request, reviewer=staff)
    access.access_request_reject(request=request, reviewer=staff, reason="Changed our mind")

    tasks.access_request_decision_email.apply(args=[request.pk, "access_request.approved"])
    tasks.access_request_decision_email.apply(args=[request.pk, "access_request.rejected"])

    [message] = outbox
    assert "not approved" in message.subject


@pytest.mark.django_db
def test_reviewers_are_emailed_in_real_time_on_a_new_request(
    staff, admin_user, outsider, outbox, after_commit
):
    User.objects.create_user("nomail", is_staff=True)  # no email address
    make_user("inactive", is_staff=True, is_active=False)
    make_user("developer")
    model = gated(staff, notify="realtime")

    with after_commit():
        submit(outsider, model)

    [message] = outbox
    assert sorted(message.to) == ["admin@example.com", "staff@example.com"]
    assert message.subject == "[Weightgate] New access request for acme/tiny from outsider"
    assert "outsider <outsider@example.com> asks for access to acme/tiny" in message.body
    assert "/api/v1/models/acme/tiny/access-requests/review" in message.body


@pytest.mark.django_db
def test_auto_approved_requests_do_not_bother_reviewers(staff, outsider, outbox, after_commit):
    model = gated(staff, mode="auto", notify="realtime")

    with after_commit():
        request = submit(outsider, model)

    assert request.status == AccessRequest.Status.APPROVED
    assert [message.to for message in outbox] == [[outsider.email]]
    assert "approved" in outbox[0].subject


@pytest.mark.django_db
def test_digest_models_get_no_real_time_email_but_a_daily_digest(
    staff, outsider, outbox, after_commit
):
    digest_model = gated(staff, name="quiet", notify="digest")
    realtime_model = gated(staff, name="loud", notify="realtime")
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    with after_commit():
        submit(alice, digest_model)
        submit(bob, digest_model)
        decided = submit(carol, digest_model)
        access.access_request_approve(request=decided, reviewer=staff)
        submit(outsider, realtime_model)
    assert [m.subject for m in mails_to(outbox, staff.email)] == [
        "[Weightgate] New access request for acme/loud from outsider"
    ]
    outbox.clear()

    tasks.reviewer_digest_send.apply()

    [digest] = outbox
    assert digest.to == [staff.email]
    assert digest.subject == "[Weightgate] 2 access requests awaiting review"
    assert "acme/quiet: 2 pending" in digest.body
    assert "alice <alice@example.com>" in digest.body
    assert "bob <bob@example.com>" in digest.body
    assert "carol" not in digest.body  # decided already
    assert "acme/loud" not in digest.body  # reviewers heard of it in real time
    assert "/api/v1/models/acme/quiet/access-requests/review" in digest.body


@pytest.mark.django_db
def test_digest_with_nothing_pending_sends_nothing(staff, outbox):
    gated(staff, notify="digest")

    assert notifications.reviewer_digest_send() == 0
    assert outbox == []


def test_digest_is_on_the_beat_schedule():
    entry = django_settings.CELERY_BEAT_SCHEDULE["reviewer-digest"]
    assert entry["task"] == "licensing.tasks.reviewer_digest_send"
    assert entry["task"] == tasks.reviewer_digest_send.name
    requeue = django_settings.CELERY_BEAT_SCHEDULE["webhook-deliveries-requeue"]
    assert requeue["task"] == tasks.webhook_deliveries_requeue.name


# --- admin ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_shows_the_secret_once_and_the_delivery_log_read_only(client, admin_user):
    model = make_release().model
    client.force_login(admin_user)

    response = client.post(
        "/admin/licensing/webhookendpoint/add/",
        {"model": model.pk, "url": PUBLIC_URL, "events": ["unlock.done"], "active": "on"},
        follow=True,
    )

    assert response.status_code == 200
    endpoint = model.webhook_endpoints.get()
    secret = notifications._secret_decrypt(endpoint)
    assert secret in response.content.decode()
    assert endpoint.events == ["unlock.done"]
    page = client.get(f"/admin/licensing/webhookendpoint/{endpoint.pk}/change/")
    assert page.status_code == 200
    assert secret not in page.content.decode()
    refused = client.post(
        "/admin/licensing/webhookendpoint/add/",
        {"model": model.pk, "url": "http://127.0.0.1/hook", "active": "on"},
    )
    assert "not a public address" in refused.content.decode()
    assert client.get("/admin/licensing/webhookdelivery/").status_code == 200
    assert client.get("/admin/licensing/webhookdelivery/add/").status_code == 403


# --- a real worker ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_retries_with_backoff_and_delivers(receiver, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    staff = make_user("staff", is_staff=True)
    model = gated(staff, notify="digest")
    endpoint, secret = webhook_endpoint_create(actor=staff, model=model, url=receiver.url)
    receiver.plan.extend([503])
    worker_env = {
        "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "1",
        "WEBHOOK_RETRY_BASE_SECONDS": "1",
        "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
    }

    with celery_worker(env_extra=worker_env):
        submit(make_user(f"dev{os.getpid()}"), model)  # commits: the worker takes it from here
        wait_for(
            lambda: (
                WebhookDelivery.objects.filter(endpoint=endpoint)
                .exclude(status=Status.PENDING)
                .exists()
            ),
            what="the delivery to finish",
        )

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts) == (Status.DELIVERED, 2), delivery.last_error
    assert [r.headers["Weightgate-Event"] for r in receiver.requests] == [
        "access_request.created"
    ] * 2
    for received in receiver.requests:
        webhook_signature_verify(secret, received.headers["Weightgate-Signature"], received.body)


# --- DNS answers that change under us ----------------------------------------------------------


@pytest.fixture
def resolver(monkeypatch):
    """The system resolver, except for `*.rebind.test`, whose answers the test scripts (and
    counts): an attacker's DNS server answering differently from one lookup to the next."""
    real = socket.getaddrinfo
    answers: list[str] = []
    calls: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if not str(host).endswith(".rebind.test"):
            return real(host, port, *args, **kwargs)
        calls.append(host)
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return SimpleNamespace(answers=answers, calls=calls)


@pytest.mark.django_db
def test_a_name_that_rebinds_to_loopback_after_creation_is_refused_at_delivery(
    staff, outsider, receiver, resolver, after_commit
):
    model = gated(staff)
    resolver.answers[:] = ["93.184.215.14"]  # public when the endpoint is created...
    url = f"http://hooks.rebind.test:{receiver.port}/hook"
    endpoint, _ = webhook_endpoint_create(actor=staff, model=model, url=url)
    resolver.answers[:] = ["127.0.0.1"]  # ...the receiver on this machine when it is used

    with after_commit():
        submit(outsider, model)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts) == (Status.FAILED, 1)
    assert "hooks.rebind.test resolves to 127.0.0.1, which is not a public address" in (
        delivery.last_error
    )
    assert receiver.requests == []


@pytest.mark.django_db
def test_a_delivery_connects_to_the_address_it_checked_never_resolving_twice(
    staff, outsider, receiver, resolver, local_webhooks, after_commit
):
    model = gated(staff)
    # Creation and delivery each resolve once; a third lookup (by the HTTP client, between the
    # check and the connection) would get 127.0.0.2, where nothing listens.
    resolver.answers[:] = ["127.0.0.1", "127.0.0.1", "127.0.0.2"]
    url = f"http://hooks.rebind.test:{receiver.port}/hook"
    endpoint, _ = webhook_endpoint_create(actor=staff, model=model, url=url)

    with after_commit():
        submit(outsider, model)

    assert WebhookDelivery.objects.get(endpoint=endpoint).status == Status.DELIVERED
    assert resolver.calls == ["hooks.rebind.test", "hooks.rebind.test"]
    [received] = receiver.requests
    assert received.headers["Host"] == f"hooks.rebind.test:{receiver.port}"
