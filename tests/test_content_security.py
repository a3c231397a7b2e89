"""The Content-Security-Policy: on every answer but those exempt from it, which skip the work."""

from csp.decorators import csp_exempt
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from config.content_security import ContentSecurityPolicyMiddleware


def _answer(view):
    middleware = ContentSecurityPolicyMiddleware(view)
    return middleware(RequestFactory().get("/somewhere"))


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<p>hi</p>")


def test_answers_carry_the_policy_unless_exempt(settings):
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = None

    assert "frame-ancestors 'none'" in _answer(plain)["Content-Security-Policy"]
    assert not _answer(csp_exempt()(plain)).has_header("Content-Security-Policy")


def test_an_exempt_answer_still_carries_a_report_only_policy_it_is_not_exempt_from(settings):
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": {"default-src": ["'none'"]}}

    answer = _answer(csp_exempt()(plain))
    both = _answer(csp_exempt(REPORT_ONLY=True)(csp_exempt()(plain)))

    assert not answer.has_header("Content-Security-Policy")
    assert answer["Content-Security-Policy-Report-Only"] == "default-src 'none'"
    assert not both.has_header("Content-Security-Policy-Report-Only")
    assert not both.has_header("Content-Security-Policy")


def test_download_answers_are_exempt_and_other_api_answers_are_not(client, db):
    missing = client.get("/api/v1/models/acme/none/versions/v1/files/a.bin")

    assert missing.status_code == 404
    assert not missing.has_header("Content-Security-Policy")
    assert client.get("/healthz").has_header("Content-Security-Policy")
