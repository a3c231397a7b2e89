"""The developer portal in a real browser (Debian's Chromium, driven by Playwright) against a
live server, the real object store and the real `weightgate` CLI:

sign up -> verify the email -> sign in -> open a gated model -> request access with its form ->
a reviewer approves -> the status page offers the signed grant -> create a token and copy it
-> the download command shown on the model page downloads the weights with that token.

Screenshots of the main pages go to a temporary folder, or to WEIGHTGATE_SCREENSHOTS when set
(`WEIGHTGATE_SCREENSHOTS=docs/screenshots` refreshes the README's).
"""

import hashlib
import re
import shlex
from pathlib import Path

import pytest
from django.core import mail

from licensing import access
from licensing.keys import signing_key_ensure
from licensing.models import AccessRequest
from release import services
from release.models import Phase
from release.sample_weights import sample_model_files, sample_tokenizer_files
from tests.e2e.conftest import needs_chromium
from tests.factories import make_release, make_user
from tests.licensing.factories import make_license
from tests.staging import ingest_now
from weightgate_cli.main import main as weightgate

PASSWORD = "a long and unusual passphrase 42"
CARD = """# Browser LLM

A tiny decoder for **testing the portal**. Released in stages:

| artifact | phase |
|---|---|
| base | gated |
| tokenizer | open |

<script>document.title = "owned"</script>
"""

pytestmark = [
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]


@pytest.fixture
def portal(live_server, settings, tmp_path, monkeypatch):
    """A live server whose links point at itself, with plain-HTTP cookies and mail kept in
    memory; a gated model whose files really are in the object store."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = live_server.url
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    monkeypatch.setenv("WEIGHTGATE_CONFIG", str(tmp_path / "cli" / "config.json"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("WEIGHTGATE_TOKEN", "WEIGHTGATE_ENDPOINT", "HF_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)

    reviewer = make_user("reviewer", is_staff=True)
    files = sample_model_files(shards=2, seed=7)
    services.model_create(
        actor=None, org="acme", name="browser-llm", title="Browser LLM", card=CARD
    )
    version, _ = ingest_now(
        org="acme",
        name="browser-llm",
        version="v1",
        artifacts={"base": files, "tokenizer": sample_tokenizer_files()},
    )
    artifacts = {a.name: a for a in version.artifacts.all()}
    services.artifact_set_phase(actor=reviewer, artifact=artifacts["base"], phase=Phase.GATED)
    services.artifact_set_phase(actor=reviewer, artifact=artifacts["tokenizer"], phase=Phase.OPEN)
    signing_key_ensure(purpose="grants")
    access.gate_policy_set(
        actor=reviewer,
        model=version.model,
        license=make_license(actor=reviewer, slug="acme-community"),
        approval_mode="manual",
        form_fields=[
            {"name": "affiliation", "label": "Affiliation", "type": "text", "required": True},
            {
                "name": "use",
                "label": "Intended use",
                "type": "select",
                "options": ["research", "product", "evaluation"],
                "required": True,
            },
            {"name": "country", "label": "Country", "type": "country", "required": True},
            {"name": "start", "label": "Start date", "type": "date"},
            {
                "name": "terms",
                "label": "I will follow the acceptable use policy",
                "type": "checkbox",
                "required": True,
            },
        ],
    )
    # Neighbours in the catalog.
    make_release(org="acme", name="tiny-open", artifacts={"base": Phase.OPEN})
    make_release(org="beta", name="vision-encoder", artifacts={"encoder": Phase.OPEN})
    return {
        "url": live_server.url,
        "files": {**files, **sample_tokenizer_files()},
        "reviewer": reviewer,
    }


def test_developer_journey_from_sign_up_to_download(portal, browser, screenshots, tmp_path):
    base = portal["url"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    csp_violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )

    # The catalog, anonymously.
    page.goto(f"{base}/")
    assert page.get_by_role("link", name="acme/browser-llm").is_visible()
    page.screenshot(path=screenshots / "catalog.png", full_page=True)

    # Sign up, then verify the address from the email.
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Email").fill("dev@example.com")
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again):", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()
    page.get_by_role("heading", name="Verify Your Email Address").wait_for()
    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+", str(mail.outbox[0].body))
    assert link is not None
    page.goto(link.group(0))
    page.get_by_role("button", name="Confirm").click()

    # Sign out and in again with the verified address.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Email").fill("dev@example.com")
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.get_by_role("link", name="My access").wait_for()

    # The gated model: the sanitised card, and a way to ask for access.
    page.goto(f"{base}/models/acme/browser-llm")
    assert page.title() != "owned"  # the card's <script> never ran
    assert page.get_by_role("cell", name="model.safetensors.index.json").is_visible()
    page.screenshot(path=screenshots / "model.png", full_page=True)
    page.get_by_role("link", name="Request access").click()

    # Fill in the form and accept the license.
    page.get_by_label("Affiliation").fill("University of Examples")
    page.get_by_label("Intended use").select_option("research")
    page.get_by_label("Country").select_option("FR")
    page.get_by_label("Start date").fill("2030-01-15")
    page.get_by_label("I will follow the acceptable use policy").check()
    page.screenshot(path=screenshots / "request-access.png", full_page=True)
    page.get_by_role("button", name="Accept the license and request access").click()
    page.get_by_text("is waiting for a reviewer").wait_for()

    # A reviewer approves; the status page then offers the signed grant.
    request = AccessRequest.objects.get(user__email="dev@example.com")
    assert request.answers["country"] == "FR"
    access.access_request_approve(request=request, reviewer=portal["reviewer"])
    page.reload()
    grant_link = page.get_by_role("link", name="Download the signed grant (.jwt)")
    assert grant_link.is_visible()
    grant = page.request.get(base + grant_link.get_attribute("href"))
    assert grant.ok
    assert grant.text() == request.grants.get().token
    page.screenshot(path=screenshots / "status.png", full_page=True)

    # A token, copied from the page.
    page.get_by_role("link", name="Tokens").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#token-value")
    token = secret.input_value()
    assert token.startswith("wg_")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page.get_by_role("button", name="Copy", exact=True).click()
    page.get_by_text(re.compile("Copied to the clipboard|press Ctrl\\+C")).wait_for()
    # The secret is masked: the picture is for the README.
    page.screenshot(
        path=screenshots / "tokens.png",
        full_page=True,
        mask=[secret, page.locator("#token-export")],
        mask_color="#d0d7de",
    )

    # The download commands on the model page, with that token.
    page.goto(f"{base}/models/acme/browser-llm")
    cli = page.locator("#cmd-cli").inner_text().strip().splitlines()
    login, download = shlex.split(cli[0]), shlex.split(cli[1])
    assert login[:3] == ["weightgate", "login", "--endpoint"]
    assert download[:2] == ["weightgate", "download"]
    target = tmp_path / "weights"
    code = weightgate(
        [*download[1:], "--endpoint", login[3], "--token", token, "--dir", str(target), "-q"]
    )
    assert code == 0
    for path, body in portal["files"].items():
        assert hashlib.sha256((target / path).read_bytes()).hexdigest() == (
            hashlib.sha256(body).hexdigest()
        )

    hf = shlex.split(page.locator("#cmd-hf").inner_text())
    endpoint = hf[0].removeprefix("HF_ENDPOINT=")
    import huggingface_hub

    shard = huggingface_hub.hf_hub_download(
        hf[4],
        "model.safetensors.index.json",
        revision=hf[hf.index("--revision") + 1],
        endpoint=endpoint,
        token=token,
        cache_dir=tmp_path / "hf-cache",
    )
    assert Path(shard).read_bytes() == portal["files"]["model.safetensors.index.json"]

    assert csp_violations == []
    context.close()


def test_copy_button_stays_hidden_without_javascript(portal, browser):
    """Without JavaScript the token is still shown, selectable, and no dead button appears."""
    user = make_user("nojs")
    from allauth.account.models import EmailAddress

    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{portal['url']}/accounts/login/")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password:", exact=True).fill("correct horse battery staple")
    page.get_by_role("button", name="Sign In").click()
    page.goto(f"{portal['url']}/tokens/")
    page.get_by_label("Name").fill("no-js")
    page.get_by_role("button", name="Create token").click()

    assert page.locator("#token-value").input_value().startswith("wg_")
    assert not page.get_by_role("button", name="Copy", exact=True).is_visible()
    context.close()


def test_api_docs_and_admin_sign_in_work_under_the_content_security_policy(portal, browser):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )

    page.goto(f"{portal['url']}/api/docs/")
    page.get_by_text("Weightgate API").first.wait_for()
    page.goto(f"{portal['url']}/admin/login/")
    page.get_by_role("button", name="Log in").wait_for()

    assert violations == []
    page.close()
