"""Developer accounts (django-allauth): sign up with an email address, verify it from the
email, sign in and out, reset a forgotten password; repeated failed sign-ins are throttled."""

import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a long and unusual passphrase 42"


def link_in(message: mail.EmailMessage) -> str:
    found = re.search(r"https?://[^/\s]+(/\S+)", str(message.body))
    assert found is not None, message.body
    return found.group(1)


def sign_up(client: Client, email: str = "dev@example.com") -> None:
    response = client.post(
        "/accounts/signup/", {"email": email, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def test_signup_sends_a_verification_email_and_confirming_it_signs_in(client):
    sign_up(client)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["dev@example.com"]
    assert message.subject.startswith("[Weightgate] ")
    user = User.objects.get(email="dev@example.com")
    assert not EmailAddress.objects.get(user=user).verified
    # Not signed in yet: verification is mandatory.
    assert client.get("/tokens/").status_code == 302

    confirm = link_in(message)
    page = client.get(confirm)
    assert page.status_code == 200
    assert "dev@example.com" in page.content.decode()
    assert not EmailAddress.objects.get(user=user).verified  # a GET (a link scanner) is not enough

    client.post(confirm)
    assert EmailAddress.objects.get(user=user).verified

    fresh = Client()
    response = fresh.post(
        "/accounts/login/", {"login": "dev@example.com", "password": PASSWORD}, follow=True
    )
    assert response.context["user"].is_authenticated
    assert fresh.get("/tokens/").status_code == 200


def test_signing_in_before_verifying_sends_the_email_again_and_does_not_sign_in(client):
    sign_up(client)
    mail.outbox.clear()

    fresh = Client()
    response = fresh.post(
        "/accounts/login/", {"login": "dev@example.com", "password": PASSWORD}, follow=True
    )

    assert not response.context["user"].is_authenticated
    assert "verif" in response.content.decode().lower()
    assert fresh.get("/tokens/").status_code == 302


def test_sign_out_is_a_post(client):
    user = User.objects.create_user("someone", "someone@example.com", PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    client.force_login(user)

    client.post("/accounts/logout/")

    assert client.get("/tokens/").status_code == 302


def test_password_reset_by_email(client):
    user = User.objects.create_user("someone", "someone@example.com", "old password 123 xyz")
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)

    client.post("/accounts/password/reset/", {"email": "someone@example.com"})

    assert len(mail.outbox) == 1
    reset = client.get(link_in(mail.outbox[0]), follow=True)
    form_url = reset.redirect_chain[-1][0] if reset.redirect_chain else link_in(mail.outbox[0])
    client.post(form_url, {"password1": PASSWORD, "password2": PASSWORD})
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_repeated_failed_sign_ins_are_throttled(client):
    user = User.objects.create_user("someone", "someone@example.com", PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)

    for _ in range(5):
        client.post("/accounts/login/", {"login": "someone@example.com", "password": "wrong"})
    # Even the right password is refused now, until the window passes.
    response = client.post(
        "/accounts/login/", {"login": "someone@example.com", "password": PASSWORD}
    )

    assert "Too many failed login attempts" in response.content.decode()
    assert client.get("/tokens/").status_code == 302


def test_sign_up_page_has_labelled_fields_and_the_portal_layout(client):
    html = client.get("/accounts/signup/").content.decode()
    assert '<label for="id_email">' in html
    assert '<label for="id_password1">' in html
    assert "portal.css" in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_too_many_sign_in_attempts_from_one_address_get_a_429_page(client):
    for _ in range(30):
        client.post("/accounts/login/", {"login": "nobody@example.com", "password": "x"})

    response = client.post("/accounts/login/", {"login": "nobody@example.com", "password": "x"})

    assert response.status_code == 429
    assert "Too many attempts" in response.content.decode()
