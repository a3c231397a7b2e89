"""Celery tasks of the licensing app: thin wrappers that call services."""

import smtplib
from typing import Any

from celery import shared_task

from licensing import notifications

# Mail server trouble worth retrying (smtplib's errors are OSErrors; named for the reader).
MAIL_RETRIES = {
    "autoretry_for": (smtplib.SMTPException, OSError),
    "retry_backoff": 30,
    "retry_backoff_max": 1800,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(**MAIL_RETRIES, soft_time_limit=60, time_limit=90)
def access_request_decision_email(request_id: int, event: str) -> None:
    """Email the requester the decision on their request (queued on commit of the decision)."""
    notifications.access_request_decision_email_send(request_id=request_id, event=event)


@shared_task(**MAIL_RETRIES, soft_time_limit=60, time_limit=90)
def access_request_reviewers_email(request_id: int) -> None:
    """Email reviewers of a new pending request, for models that want it in real time."""
    notifications.access_request_reviewers_email_send(request_id=request_id)


@shared_task(**MAIL_RETRIES, soft_time_limit=120, time_limit=150)
def reviewer_digest_send() -> None:
    """Beat, daily: reviewers get the pending requests of models that want a digest."""
    notifications.reviewer_digest_send()


@shared_task(
    bind=True,
    max_retries=None,  # the row counts attempts and gives up (WEBHOOK_MAX_ATTEMPTS)
    soft_time_limit=notifications.ATTEMPT_TIME_LIMIT_SECONDS - 10,
    time_limit=notifications.ATTEMPT_TIME_LIMIT_SECONDS,
)
def webhook_deliver(self: Any, delivery_id: int) -> None:
    """POST one webhook delivery; on a network error, 5xx or 429 try again later with
    exponential backoff and jitter, until WEBHOOK_MAX_ATTEMPTS (counted on the row, which
    records every attempt). Safe to run twice: the row is claimed before posting."""
    retry_in = notifications.webhook_delivery_attempt(delivery_id=delivery_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(soft_time_limit=50, time_limit=60)
def webhook_deliveries_requeue() -> None:
    """Beat, every few minutes: queue again deliveries whose task message was lost."""
    notifications.webhook_deliveries_requeue()


@shared_task(soft_time_limit=50, time_limit=60)
def revocation_list_refresh() -> None:
    """Re-sign the revocation list before it expires (beat, every
    REVOCATION_LIST_REFRESH_SECONDS), so clients always find a fresh one."""
    from licensing.publishing import revocation_list_publish

    revocation_list_publish()
