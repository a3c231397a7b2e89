"""The portal's catalog and model pages: what each person sees, search and filters, the model
card rendered safely, announced unlocks, files and the download commands."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client

from licensing.models import PartnerOrganisation
from release import services
from release.models import Model, Phase
from tests.factories import make_release, make_user
from tests.licensing.factories import gated_model

pytestmark = pytest.mark.django_db


def page(client: Client, url: str, user: User | None = None, status: int = 200) -> str:
    if user is not None:
        client.force_login(user)
    response = client.get(url)
    assert response.status_code == status, response.content[:500]
    return response.content.decode()


@pytest.fixture
def catalog(staff):
    """An open model, a gated one (with a license) and a wholly proprietary one."""
    make_release(org="acme", name="open-llm", artifacts={"base": Phase.OPEN})
    gated = gated_model(actor=staff, org="beta", name="gated-llm")
    make_release(org="acme", name="secret-llm", artifacts={"base": Phase.PROPRIETARY})
    return gated


def test_catalog_shows_open_and_gated_models_to_anyone_and_hides_proprietary(client, catalog):
    for url in ("/", "/models/"):
        html = page(client, url)
        assert "acme/open-llm" in html
        assert "beta/gated-llm" in html
        assert "secret-llm" not in html


def test_catalog_shows_proprietary_models_to_staff(client, catalog, staff):
    assert "acme/secret-llm" in page(client, "/models/", staff)


def test_catalog_search_matches_words_and_repo_ids(client, catalog):
    html = page(client, "/models/?q=gated")
    assert "beta/gated-llm" in html
    assert "acme/open-llm" not in html
    html = page(client, "/models/?q=acme/open")
    assert "acme/open-llm" in html
    assert "beta/gated-llm" not in html
    assert "No models match" in page(client, "/models/?q=nothing-like-this")


def test_catalog_filters_by_organisation_phase_and_license(client, catalog):
    html = page(client, "/models/?org=acme")
    assert "acme/open-llm" in html
    assert "beta/gated-llm" not in html

    html = page(client, "/models/?phase=gated")
    assert "beta/gated-llm" in html
    assert "acme/open-llm" not in html

    html = page(client, "/models/?license=beta-gated-llm")
    assert "beta/gated-llm" in html
    assert "acme/open-llm" not in html


def test_catalog_filters_never_reveal_proprietary_models(client, catalog):
    html = page(client, "/models/?phase=proprietary")
    assert "secret-llm" not in html
    assert "0 models" in html
    # Nor do the filter choices name what the viewer cannot see.
    assert '<option value="proprietary"' not in page(client, "/models/")


def test_model_page_of_a_proprietary_model_is_404_to_outsiders(client, catalog, outsider):
    page(client, "/models/acme/secret-llm", status=404)
    page(client, "/models/acme/secret-llm", outsider, status=404)
    page(client, "/models/acme/no-such-model", status=404)


def test_model_page_of_a_proprietary_model_shows_to_staff_and_partners(client, staff):
    model = gated_model(actor=staff, org="gamma", name="early")
    version = make_release(
        org="gamma", name="early", version="v2", artifacts={"base": "proprietary"}
    )
    partner = make_user("partner")
    organisation = PartnerOrganisation.objects.create(name="Partner Labs")
    organisation.members.add(partner)
    model.gate_policy.partners.add(organisation)

    assert "v2" in page(client, "/models/gamma/early", staff)
    assert "v2" in page(Client(), "/models/gamma/early?revision=v2", partner)
    assert f"?revision={version.name}" not in page(Client(), "/models/gamma/early")


def test_model_page_lists_versions_artifacts_files_with_sizes_and_the_license(client, catalog):
    html = page(client, "/models/beta/gated-llm")
    assert "v1" in html
    assert "base/part-0.bin" in html
    assert "base/part-1.bin" in html
    assert "badge-gated" in html
    assert "bytes" in html  # sizes, human-readable (the test files are a few bytes)
    assert "beta-gated-llm license" in html
    assert "version 1.0" in html
    assert "Sign in to request access" in html


def test_model_page_fills_in_the_download_commands(client, catalog, settings):
    settings.SITE_URL = "https://weights.example.com"
    html = page(client, "/models/beta/gated-llm")
    assert "weightgate download beta/gated-llm --revision v1" in html
    assert (
        "HF_ENDPOINT=https://weights.example.com HF_TOKEN=&quot;&lt;your token&gt;&quot; "
        "hf download beta/gated-llm --revision v1"
    ) in html
    assert "snapshot_download(&quot;beta/gated-llm&quot;, revision=&quot;v1&quot;" in html


def test_model_page_of_an_unknown_revision_is_404(client, catalog):
    page(client, "/models/beta/gated-llm?revision=v9", status=404)


def test_model_card_markdown_is_rendered_and_sanitised(client):
    model = services.model_create(
        actor=None,
        org="acme",
        name="carded",
        card="# Carded\n\nSome **bold** text.\n\n<script>alert('owned')</script>\n\n"
        '<img src="https://example.com/x.png" onerror="alert(1)">\n\n'
        '<a href="javascript:alert(2)">click</a> [md](javascript:alert(3))\n',
    )
    make_release(org=model.org, name=model.name, artifacts={"base": Phase.OPEN})

    html = page(client, "/models/acme/carded")

    assert "<strong>bold</strong>" in html
    assert "<h1>Carded</h1>" in html
    assert "<script>alert" not in html
    assert "owned" not in html  # a script's content goes with it
    assert "onerror" not in html
    assert 'href="javascript:' not in html
    assert '<img src="https://example.com/x.png">' in html


def test_model_page_announces_approved_unlocks_but_not_those_awaiting_approval(client, staff):
    version = make_release(
        org="acme", name="soon", artifacts={"base": Phase.GATED, "tokenizer": Phase.GATED}
    )
    approvers = make_user("alice", is_staff=True), make_user("bob", is_staff=True)
    when = datetime(2031, 5, 4, 12, 30, tzinfo=UTC)
    approved = services.unlock_schedule(
        actor=staff, version=version, artifacts=["base"], target_phase="open", not_before=when
    )
    for person in approvers:
        services.unlock_approve(unlock=approved, approver=person)
    services.unlock_schedule(
        actor=staff,
        version=version,
        artifacts=["tokenizer"],
        target_phase="open",
        not_before=when + timedelta(days=30),
    )

    html = page(client, "/models/acme/soon")

    assert "4 May 2031, 12:30 UTC" in html
    assert "3 Jun 2031" not in html  # awaiting approval: not announced


def test_pages_carry_a_content_security_policy(client, catalog):
    response = client.get("/models/beta/gated-llm")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "object-src 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"


def test_catalog_pages_through_many_models(client):
    for index in range(25):
        make_release(org="many", name=f"m{index:02d}", artifacts={"base": Phase.OPEN})
    first = page(client, "/models/?org=many")
    assert "25 models" in first
    assert "many/m19" in first
    assert "many/m20" not in first
    second = page(client, "/models/?org=many&page=2")
    assert "many/m24" in second
    assert Model.objects.filter(org="many").count() == 25
