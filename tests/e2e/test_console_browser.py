"""The release console in a real browser (Debian's Chromium, driven by Playwright) against a
live server and the real object store:

a release manager signs in to the admin -> opens the model's console -> schedules an unlock
for now -> a second admin approves it in the console (a third through the service: two people
other than the scheduler, the default rule) -> the workers' steps run (stage, push every file,
verify, flip) -> the open console page follows the progress by itself and shows the flip.

Screenshots go to a temporary folder, or to WEIGHTGATE_SCREENSHOTS when set
(`WEIGHTGATE_SCREENSHOTS=docs/screenshots` refreshes docs/screenshots/console*.png).
"""

import random
from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from release import services
from release.models import Artifact, DownloadDaily, Phase, Unlock
from release.sample_weights import sample_model_files, sample_tokenizer_files
from release.services.unlocks import unlock_advance, unlock_push_file
from tests.e2e.conftest import needs_chromium
from tests.factories import make_user
from tests.staging import ingest_now

PASSWORD = "correct horse battery staple"  # tests.factories.make_user's

pytestmark = [
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]


@pytest.fixture
def release(live_server, settings):
    """A proprietary model whose files really are in staging, three admins, and some downloads
    of an older version for the chart."""
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.TIME_ZONE = "Europe/Paris"
    people = {
        name: make_user(name, is_staff=True, is_superuser=True)
        for name in ("rm", "legal", "safety")
    }
    model = services.model_create(
        actor=people["rm"], org="acme", name="console-llm", title="Console LLM"
    )
    files = sample_model_files(shards=3, seed=random.randrange(1 << 30))  # blobs outlive tests
    version, _ = ingest_now(
        org="acme",
        name="console-llm",
        version="v1",
        artifacts={"base": files, "tokenizer": sample_tokenizer_files()},
    )
    today = timezone.now().astimezone(UTC).date()
    for days_ago, count in [(1, 42), (2, 17), (4, 63), (7, 8), (12, 30)]:
        DownloadDaily.objects.create(
            model=model, version="v0", day=today - timedelta(days=days_ago), count=count
        )
    services.heartbeat_record(worker="celery@console-test")
    return {"url": live_server.url, "model": model, "version": version, **people}


def sign_in(browser, base: str, username: str, errors: list[str]):
    """A page signed in to the admin, collecting script errors and CSP violations."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{base}/admin/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()
    return context, page


def test_admins_schedule_approve_and_watch_an_unlock_flip(release, browser, screenshots):
    base, model = release["url"], release["model"]
    errors: list[str] = []

    # The release manager schedules the base weights to go gated now.
    rm_context, rm = sign_in(browser, base, "rm", errors)
    rm.goto(f"{base}/admin/release/model/")
    rm.get_by_role("link", name=f"Console of {model}").click()
    rm.get_by_role("heading", name=f"Release console: {model}").wait_for()
    rm.get_by_role("link", name="Schedule an unlock").first.click()
    rm.get_by_label("Version:", exact=True).select_option(value=str(release["version"].pk))
    rm.get_by_label("v1: base (now proprietary)").check()
    rm.get_by_label("Gated: developers request access").check()
    rm.get_by_label("Not before:", exact=True).fill(timezone.localtime().strftime("%Y-%m-%dT%H:%M"))
    rm.get_by_label("I checked the version").check()
    rm.screenshot(path=screenshots / "console-schedule.png", full_page=True)
    rm.get_by_role("button", name="Schedule").click()
    rm.get_by_text("needs 2 approval(s) from someone else").wait_for()
    assert rm.get_by_text("2 more approvals needed").is_visible()
    unlock = Unlock.objects.get()
    assert unlock.created_by == release["rm"]

    # The scheduler may not approve it: the service says so.
    rm.get_by_role("link", name=f"Approve unlock #{unlock.pk}").click()
    rm.get_by_role("button", name="Approve").click()
    rm.get_by_text("someone else must approve it").wait_for()

    # A second admin approves in the console; a third through the service.
    legal_context, legal = sign_in(browser, base, "legal", errors)
    legal.goto(f"{base}/admin/release/model/{model.pk}/console/")
    legal.get_by_role("link", name=f"Approve unlock #{unlock.pk}").click()
    legal.get_by_label("Comment:", exact=True).fill("license text checked")
    legal.get_by_role("button", name="Approve").click()
    legal.get_by_text("1 more approval needed").wait_for()
    services.unlock_approve(unlock=unlock, approver=release["safety"])
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.SCHEDULED

    # Approved and due: the page now follows it by itself while the workers' steps run.
    legal.reload()
    assert legal.locator("[data-progress-url]").count() == 1
    unlock_advance(unlock_id=unlock.pk)  # claims it: one push per file
    legal.locator(f"#unlock-{unlock.pk}[data-state='staging']").wait_for()
    rows = list(unlock.files.order_by("pk").values_list("pk", flat=True))
    unlock_push_file(unlock_file_id=rows[0])
    progress = legal.locator(f"#progress-{unlock.pk}")
    legal.wait_for_function(
        "id => { const p = document.getElementById(id); return p && p.value > 0; }",
        arg=f"progress-{unlock.pk}",
    )
    assert 0 < float(progress.get_attribute("value") or 0) < float(progress.get_attribute("max"))
    legal.screenshot(path=screenshots / "console-progress.png", full_page=True)
    for row in rows[1:]:
        unlock_push_file(unlock_file_id=row)
    unlock_advance(unlock_id=unlock.pk)  # ready, due: flips

    legal.get_by_role("heading", name="Finished unlocks").wait_for()
    assert Unlock.objects.get(pk=unlock.pk).state == Unlock.State.DONE
    assert Artifact.objects.get(version=release["version"], name="base").phase == Phase.GATED
    assert legal.get_by_text("v1:base: proprietary → gated").first.is_visible()
    assert legal.locator("[data-progress-url]").count() == 0  # nothing runs: no more polling
    legal.screenshot(path=screenshots / "console.png", full_page=True)

    # The downloads of the model, drawn without any script library.
    legal.get_by_role("link", name="Downloads", exact=True).click()
    assert legal.locator("svg rect.wg-bar").count() == 5
    assert legal.get_by_role("img", name="Downloads per day").is_visible()
    legal.screenshot(path=screenshots / "console-downloads.png", full_page=True)

    assert errors == []
    rm_context.close()
    legal_context.close()
