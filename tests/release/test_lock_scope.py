"""Services that change a row lock that row alone, never the model it belongs to.

Django's foreign keys on PostgreSQL are checked at commit (DEFERRABLE INITIALLY DEFERRED): a
transaction that inserted rows pointing at a model (an access request and its grant) takes FOR
KEY SHARE on the model row when it commits, after it took the audit chain's lock for its audit
events. A service that holds the model row FOR UPDATE and then waits for the audit lock closes
the cycle: PostgreSQL aborts one of the two (bench/launch.py saw unlock flips and access requests
fail with "deadlock detected" during a launch-day surge). Each test runs a service in a
transaction left open and checks, from another connection, that the model row is free for that
foreign key check."""

import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import connection, transaction

from release import services
from release.models import Phase
from release.sample_weights import sample_model_files
from tests.factories import make_release
from tests.staging import stage

pytestmark = pytest.mark.django_db(transaction=True)


def model_row_free(model_id: int) -> bool:
    """Whether another connection gets FOR KEY SHARE on the model row (what a foreign key check
    at commit takes) without waiting."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
        autocommit=True,
    ) as other:
        try:
            rows = other.execute(
                "SELECT id FROM release_model WHERE id = %s FOR KEY SHARE NOWAIT", [model_id]
            ).fetchall()
        except psycopg.errors.LockNotAvailable:
            return False
    assert rows == [(model_id,)]  # the other connection sees the row: the probe probes
    return True


def test_a_phase_change_leaves_the_model_row_free():
    version = make_release(artifacts={"base": Phase.PROPRIETARY})
    artifact = version.artifacts.get(name="base")

    with transaction.atomic():
        services.artifact_set_phase(actor=None, artifact=artifact, phase=Phase.GATED)
        free = model_row_free(version.model_id)

    assert free


def test_an_unlock_approval_leaves_the_model_row_free(people):
    scheduler, alice, _ = people
    version = make_release(artifacts={"base": Phase.PROPRIETARY})
    unlock = services.unlock_schedule(
        actor=scheduler,
        version=version,
        artifacts=["base"],
        target_phase=Phase.GATED,
        not_before=datetime.now(UTC) + timedelta(days=2),
    )

    with transaction.atomic():
        services.unlock_approve(unlock=unlock, approver=alice)
        free = model_row_free(version.model_id)

    assert free


def test_changing_an_unsealed_version_leaves_the_model_row_free():
    version = make_release(artifacts={"base": Phase.PROPRIETARY}, seal=False)

    with transaction.atomic():
        services.artifact_create(actor=None, version=version, name="extra")
        free = model_row_free(version.model_id)

    assert free


def test_sealing_an_ingest_leaves_the_model_row_free():
    from licensing.keys import signing_key_ensure

    signing_key_ensure(purpose="models")
    model = services.model_create(actor=None, org="acme", name="locks")
    job = services.ingest_start(
        actor=None,
        model=model,
        version_name="v1",
        sources={"base": stage(sample_model_files(seed=os.getpid()))},
    )
    for file_id in job.files.values_list("pk", flat=True):
        services.ingest_file_hash(file_id=file_id)

    with transaction.atomic():
        sealed = services.ingest_finalize(job_id=job.pk)
        free = model_row_free(model.pk)

    assert sealed.state == "sealed", sealed.error
    assert free
