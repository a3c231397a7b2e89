"""Settings helpers read the environment and fail loudly on malformed values."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import settings


def test_env_bool_accepts_common_spellings(monkeypatch):
    monkeypatch.setenv("WG_FLAG", "yes")
    assert settings.env_bool("WG_FLAG", False) is True
    monkeypatch.setenv("WG_FLAG", "0")
    assert settings.env_bool("WG_FLAG", True) is False


def test_env_bool_refuses_nonsense(monkeypatch):
    monkeypatch.setenv("WG_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="WG_FLAG='maybe' is not a boolean"):
        settings.env_bool("WG_FLAG", False)


def test_env_int_refuses_non_numbers_and_values_below_minimum(monkeypatch):
    monkeypatch.setenv("WG_NUMBER", "ten")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        settings.env_int("WG_NUMBER", 1)
    monkeypatch.setenv("WG_NUMBER", "-1")
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        settings.env_int("WG_NUMBER", 1, minimum=0)


def test_missing_required_value_names_the_variable(monkeypatch):
    monkeypatch.delenv("WG_REQUIRED", raising=False)
    with pytest.raises(ImproperlyConfigured, match="WG_REQUIRED must be set"):
        settings.env_str("WG_REQUIRED")


def test_secret_can_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    monkeypatch.delenv("WG_SECRET", raising=False)
    monkeypatch.setenv("WG_SECRET_FILE", str(secret))

    assert settings.env_str("WG_SECRET") == "s3cr3t-value"


def test_unreadable_secret_file_fails_loudly(monkeypatch, tmp_path):
    monkeypatch.delenv("WG_SECRET", raising=False)
    monkeypatch.setenv("WG_SECRET_FILE", str(tmp_path / "missing"))

    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        settings.env_str("WG_SECRET")


def test_production_defaults_are_safe():
    """Without DEBUG asked for, cookies are secure and errors are not shown."""
    from django.conf import settings as live

    assert live.DEBUG is False
    assert live.SESSION_COOKIE_SECURE is True
    assert live.CSRF_COOKIE_SECURE is True
    assert live.SESSION_COOKIE_HTTPONLY is True
