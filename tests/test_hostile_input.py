"""Hostile input at the edges: oversized bodies, wrong content types, malformed JSON, NUL and
other tricks in URLs, Unicode tricks in names and free text, and off-site redirects. Each is
refused with a clear error (the API's JSON error body, or a plain page for the portal) and
changes nothing, or is stored as typed and rendered escaped. (CSV injection in the review
export: tests/licensing/test_admin_console.py; webhook URLs: tests/licensing/test_notifications.py;
malformed weights: tests/release/test_hostile_weights.py; the schema fuzz: tests/test_api_fuzz.py.)
"""

import hashlib
import json
import unicodedata
from typing import Any
from urllib.parse import urlsplit

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from config.errors import DomainError
from licensing import access, tokens
from licensing.models import AccessRequest, DownloadToken, License
from licensing.request_forms import InvalidForm, form_answers_clean
from release import services
from release.models import IngestJob, Model
from tests.factories import make_user
from tests.licensing.factories import current_license, gated_model, submit
from tests.staging import stage

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # tests.factories.make_user's
LIMIT = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # Django's 2.5 MiB unless configured


@pytest.fixture
def developer() -> User:
    user = make_user("dev")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    return user


@pytest.fixture
def dev_api(developer) -> APIClient:
    client = APIClient()
    client.force_login(developer)
    return client


def error_of(response: Any) -> dict[str, Any]:
    """The API's one error body; fails if the answer is anything else."""
    assert response["Content-Type"] == "application/json", response.content[:300]
    body = json.loads(response.content)
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"code", "message"} <= set(error)
    return error


# --- bodies: too big, wrong type, malformed ----------------------------------------------------


def test_an_oversized_json_body_is_refused_with_413_before_it_is_read(dev_api, developer):
    name = "x" * (LIMIT + 1)

    response = dev_api.post("/api/v1/me/tokens/", {"name": name}, format="json")

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "request_too_large"
    assert f"larger than the {LIMIT} bytes" in error["message"]
    assert not DownloadToken.objects.filter(user=developer).exists()


def test_a_body_just_under_the_limit_still_reaches_the_view(dev_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    body = json.dumps({"name": "laptop", "models": ["acme/x"] * 300})
    assert len(body) < 4096

    response = dev_api.post("/api/v1/me/tokens/", body, content_type="application/json")

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/tokens/", {"name": "laptop", "expires": "30"}),
        ("/models/acme/tiny/access/request", {"license_sha256": "0" * 64}),
    ],
    ids=["tokens", "access-request"],
)
def test_oversized_portal_forms_are_refused_and_change_nothing(
    client, developer, settings, path, form
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    gated_model(actor=make_user("staff", is_staff=True))
    client.force_login(developer)

    response = client.post(path, {**form, "padding": "p" * 10_001})

    assert response.status_code == 413
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert "larger than the 10000 bytes this server accepts" in response.content.decode()
    assert not DownloadToken.objects.exists()
    assert not AccessRequest.objects.exists()


def test_an_oversized_admin_sign_in_is_refused(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    make_user("staff", is_staff=True)

    response = client.post(
        "/admin/login/", {"username": "staff", "password": PASSWORD + "x" * 10_001}
    )

    assert response.status_code == 413


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "name=laptop"),
        ("multipart/form-data; boundary=b", '--b\r\nContent-Disposition: form-data; name="name"'),
        ("text/plain", '{"name": "laptop"}'),
        ("application/xml", "<name>laptop</name>"),
        ("application/json-patch+json", '[{"op": "add"}]'),
    ],
    ids=["form", "multipart", "text", "xml", "json-patch"],
)
def test_a_body_that_is_not_json_gets_415_with_the_error_body(dev_api, content_type, body):
    response = dev_api.post("/api/v1/me/tokens/", body, content_type=content_type)

    assert response.status_code == 415
    error = error_of(response)
    assert error["code"] == "unsupported_media_type"
    assert content_type.split(";")[0] in error["message"]
    assert not DownloadToken.objects.exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"name": "laptop"', "JSON parse error"),
        ("{'name': 'laptop'}", "JSON parse error"),
        ('{"name": NaN}', "Out of range float values"),
        ('{"name": "a\\ud800b"}', "lone surrogate"),
        ('{"name": "x", "\\udfff": 1}', "lone surrogate"),
        ("[" * 100_000 + "]" * 100_000, "JSON parse error"),
        ("\xff\xfe{}", "JSON parse error"),
    ],
    ids=["cut-short", "single-quotes", "nan", "surrogate-value", "surrogate-key", "deep", "bom"],
)
def test_malformed_json_gets_400_with_the_error_body(dev_api, body, message):
    response = dev_api.post(
        "/api/v1/me/tokens/", body.encode("utf-8", "surrogatepass"), content_type="application/json"
    )

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "parse_error"
    assert message in error["message"]
    assert not DownloadToken.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/models/ac%00me/tiny/",
        "/api/v1/models/?org=ac%00me",
        "/api/v1/models/acme/tiny/versions/v1/files/a%00b",
        "/api/models/acme/tiny",  # made hostile below, in the query
        "/acme/tiny/resolve/main/config.json%00.bin",
    ],
)
def test_a_nul_in_the_url_is_400_never_a_database_error(dev_api, url):
    if "%00" not in url:
        url += "?revision=%00"

    response = dev_api.get(url)

    assert response.status_code == 400
    assert "NUL character" in response.content.decode()


def test_a_nul_in_a_portal_search_is_a_plain_400(client):
    response = client.get("/models/", {"q": "a\x00b"})

    assert response.status_code == 400
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_an_unknown_api_url_answers_the_json_error_body(dev_api):
    response = dev_api.get("/api/v1/no-such-thing/")

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "0x10"),
        ("limit", "1e3"),
        ("limit", ""),
        ("offset", "-1"),
        ("offset", "abc"),
        ("offset", "1000000001"),
        ("offset", "9" * 5000),  # past Python's 4300-digit int() limit
    ],
)
def test_malformed_pagination_is_refused_not_ignored(dev_api, parameter, value):
    response = dev_api.get("/api/v1/models/", {parameter: value})

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_pagination"
    assert error["message"].startswith(f"{parameter} must be an integer from")


@pytest.mark.parametrize("cursor", ["abc", "-5", "1.5", "9" * 5000])
def test_a_hub_tree_cursor_that_is_not_ours_is_400(dev_api, cursor):
    gated_model(actor=make_user("staff", is_staff=True), mode="auto")

    response = dev_api.get("/api/models/acme/tiny/tree/v1", {"cursor": cursor})

    assert response.status_code == 400
    assert response["X-Error-Code"] == "BadRequest"
    assert "is not a tree position" in response.json()["error"]


# --- identifiers: ASCII only, as on the Hub ----------------------------------------------------

SPOOFED_NAMES = [
    pytest.param("acme\n", id="trailing-newline"),
    pytest.param("ac\u202eme", id="rtl-override"),
    pytest.param("ac\u200bme", id="zero-width-space"),
    pytest.param("\u0430cme", id="cyrillic-a-homoglyph"),
    pytest.param("acme\u0301", id="combining-accent"),
    pytest.param("ac\x00me", id="nul"),
    pytest.param("ａｃｍｅ", id="fullwidth"),
    pytest.param("a" * 97, id="97-characters"),
    pytest.param("..", id="dot-dot"),
    pytest.param("-acme", id="leading-dash"),
]


@pytest.mark.parametrize("org", SPOOFED_NAMES)
def test_spoofed_organisation_and_model_names_are_refused(org):
    for names in ({"org": org, "name": "tiny"}, {"org": "acme", "name": org}):
        with pytest.raises(DomainError, match="Use letters, digits") as refused:
            services.model_create(actor=None, **names)
        assert refused.value.code == "invalid_name"
    assert not Model.objects.exists()


@pytest.mark.parametrize("name", SPOOFED_NAMES)
def test_spoofed_version_and_artifact_names_are_refused_at_ingest(name):
    model = services.model_create(actor=None, org="acme", name="tiny")
    source = stage({"a.bin": b"a"})

    for version, artifact in ((name, "base"), ("v1", name)):
        with pytest.raises(DomainError, match="Use letters, digits"):
            services.ingest_start(
                actor=None, model=model, version_name=version, sources={artifact: source}
            )
    assert not IngestJob.objects.exists()


# --- free text: refused when it hides something, else stored NFC and shown escaped --------------

HIDDEN = [
    pytest.param("pay\u202egnp.exe", id="rtl-override"),
    pytest.param("lap\u200btop", id="zero-width-space"),
    pytest.param("lap\u2066top\u2069", id="bidi-isolate"),
    pytest.param("lap\ufefftop", id="byte-order-mark"),
    pytest.param("lap\u00adtop", id="soft-hyphen"),
    pytest.param("lap\U000e0041top", id="tag-character"),
    pytest.param("lap\x1b[31mtop", id="ansi-escape"),
    pytest.param("lap\ntop", id="newline"),
]


@pytest.mark.parametrize("name", HIDDEN)
def test_token_names_that_hide_something_are_refused(dev_api, name):
    response = dev_api.post("/api/v1/me/tokens/", {"name": name})
    too_long = dev_api.post("/api/v1/me/tokens/", {"name": "x" * 101})

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid_name"
    assert (
        "the token name contains control or invisible formatting characters" in (error["message"])
    )
    assert error_of(too_long)["detail"] == {
        "name": ["Ensure this field has no more than 100 characters."]
    }
    assert not DownloadToken.objects.exists()


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Ноутбук", "Ноутбук"),  # Cyrillic: a name, not a spoof, where nothing is an identifier
        ("مختبر", "مختبر"),  # right-to-left script, no override character
        ("cafe\u0301", "caf\u00e9"),  # decomposed é is stored composed (NFC)
        ("🚀 cluster", "🚀 cluster"),
        ("  padded  ", "padded"),
    ],
)
def test_token_names_in_any_script_are_stored_normalised(dev_api, typed, stored):
    response = dev_api.post("/api/v1/me/tokens/", {"name": typed})

    assert response.status_code == 201, response.content
    assert DownloadToken.objects.get().name == stored == response.json()["name"]


def test_the_portal_form_refuses_a_hidden_character_in_a_token_name(client, developer):
    client.force_login(developer)

    response = client.post("/tokens/", {"name": "pay\u202egnp.exe", "expires": "30"})

    assert response.status_code == 400
    assert "the token name contains control or invisible formatting characters" in (
        response.content.decode()
    )
    assert not DownloadToken.objects.exists()


def test_markup_in_names_and_answers_is_shown_escaped(client, developer):
    staff = make_user("admin", is_staff=True, is_superuser=True)
    model = gated_model(actor=staff, fields=[{"name": "affiliation", "type": "text"}])
    markup = '<img src=x onerror="alert(1)">'
    tokens.token_create(user=developer, name=markup)
    request = submit(developer, model, {"affiliation": markup})
    client.force_login(developer)
    tokens_page = client.get("/tokens/").content.decode()
    client.force_login(staff)
    review_page = client.get(
        f"/admin/licensing/accessrequest/{request.pk}/change/"
    ).content.decode()

    for page in (tokens_page, review_page):
        assert markup not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_a_model_title_that_hides_something_is_refused():
    with pytest.raises(DomainError, match="the title contains control or invisible"):
        services.model_create(actor=None, org="acme", name="tiny", title="Llama \u202e3")
    with pytest.raises(DomainError, match="the title is longer than 200"):
        services.model_create(actor=None, org="acme", name="tiny", title="t" * 201)

    assert not Model.objects.exists()


def test_a_user_agent_with_control_characters_is_stored_without_them(client, developer):
    gated_model(actor=make_user("staff", is_staff=True), mode="auto")
    model = Model.objects.get()
    client.force_login(developer)

    client.post(
        "/models/acme/tiny/access/request",
        {"license_sha256": current_license(model).text_sha256},
        HTTP_USER_AGENT="curl/8\x00\x1b[2J\u202e" + "A" * 600,
    )

    stored = AccessRequest.objects.get().user_agent
    assert stored == ("curl/8[2J" + "A" * 600)[:512]
    assert all(unicodedata.category(c)[0] != "C" for c in stored)


# --- redirects stay on this site ----------------------------------------------------------------

OFF_SITE = [
    "//evil.example/",
    "https://evil.example/",
    "http://evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "///evil.example",
    "javascript:alert(1)",
    "https:evil.example",
    "http://testserver@evil.example/",
    " //evil.example",
]


def assert_on_site(response):
    assert response.status_code == 302, response.content[:300]
    location = response["Location"]
    assert location.startswith("/"), location
    assert not location.startswith(("//", "/\\")), location
    assert "evil" not in location, location


@pytest.mark.parametrize("target", OFF_SITE)
def test_portal_sign_in_refuses_an_off_site_next(target, developer):
    client = Client()

    response = client.post(
        f"/accounts/login/?next={target}", {"login": developer.email, "password": PASSWORD}
    )
    posted = Client().post(
        "/accounts/login/", {"login": developer.email, "password": PASSWORD, "next": target}
    )

    assert_on_site(response)
    assert_on_site(posted)


@pytest.mark.parametrize("target", OFF_SITE)
def test_portal_sign_out_refuses_an_off_site_next(client, developer, target):
    client.force_login(developer)

    response = client.post("/accounts/logout/", {"next": target})

    assert_on_site(response)


@pytest.mark.parametrize("target", OFF_SITE)
def test_admin_sign_in_and_out_refuse_an_off_site_next(client, target):
    make_user("staff", is_staff=True)

    signed_in = client.post(
        f"/admin/login/?next={target}",
        {"username": "staff", "password": PASSWORD, "next": target},
    )
    signed_out = client.post("/admin/logout/", {"next": target})

    assert_on_site(signed_in)
    assert signed_in["Location"] == "/"  # LOGIN_REDIRECT_URL, the catalog
    if signed_out.status_code != 200:  # 200: Django's "signed out" page, no redirect at all
        assert_on_site(signed_out)


def test_a_safe_next_is_still_followed(developer):
    response = Client().post(
        "/accounts/login/?next=/tokens/", {"login": developer.email, "password": PASSWORD}
    )

    assert response["Location"] == "/tokens/"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("text", "You may use these weights.\n\u202eNOT for research.\u202c\n"),
        ("text", "Use well.\n\u200bHidden clause.\n"),
        ("text", "Use well.\x1b[8m hidden by the terminal\n"),
        ("title", "Community \u2067license"),
        ("version", "1.0\u200d"),
    ],
    ids=["rtl-override-in-text", "zero-width-in-text", "ansi-in-text", "isolate-in-title", "zwj"],
)
def test_a_license_hiding_characters_cannot_be_published(field, value):
    staff = make_user("staff", is_staff=True)
    fields = {"slug": "acme", "version": "1.0", "title": "Acme", "text": "Use well.\n"}
    license = License.objects.create(**{**fields, field: value})

    with pytest.raises(DomainError, match="control or invisible formatting characters: U\\+"):
        access.license_publish(actor=staff, license=license)

    license.refresh_from_db()
    assert license.published_at is None
    assert license.text_sha256 == ""


def test_a_license_in_any_script_with_windows_line_breaks_is_published_as_written():
    staff = make_user("staff", is_staff=True)
    text = "Licence communautaire\r\n\tمختبر — Ноутбук — 模型\r\n"
    license = License.objects.create(slug="acme", version="1.0", title="Acme", text=text)

    published = access.license_publish(actor=staff, license=license)

    assert published.text == text
    assert published.text_sha256 == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb"])
def test_a_form_answer_with_a_lone_surrogate_is_refused_before_the_database(value):
    with pytest.raises(InvalidForm, match="affiliation contains control or invisible"):
        form_answers_clean([{"name": "affiliation", "type": "text"}], {"affiliation": value})


@pytest.mark.parametrize(
    "path", ["//evil.example/tokens", "//evil.example/models", "/\\evil.example/tokens", "///x"]
)
def test_a_path_that_looks_like_another_host_is_never_redirected_there(client, path):
    # Built by hand: the test client would read "//evil.example" as a host, a server does not.
    response = client.request(PATH_INFO=path, REQUEST_METHOD="GET", QUERY_STRING="")

    if 300 <= response.status_code < 400:
        location = response["Location"]
        assert urlsplit(location).netloc in ("", "testserver"), location
        assert not location.startswith(("//", "/\\")), location
