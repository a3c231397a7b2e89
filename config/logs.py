"""Log formats, shared by Django's LOGGING (settings) and gunicorn's own loggers
(infra/gunicorn.conf.py): `json`, one object per line (time, level, logger, message,
request_id, and any `extra=` fields), or `plain`, one readable line.

Nothing here logs request headers: clients send their token in Authorization and their session
in a cookie, and neither may reach a log. The one secret that travels in a path, the key of an
email confirmation or password reset link, is blanked in every line (SecretPathFilter).
"""

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

FORMATS = ("json", "plain")

_FILTERS = {
    "request_id": {"()": "config.request_id.RequestIdFilter"},
    "secret_paths": {"()": "config.logs.SecretPathFilter"},
}

# allauth's links carry their key in the path: /accounts/confirm-email/<key>/ and
# /accounts/password/reset/key/<uidb36>-<key>/. Whoever reads the access log must not be able to
# confirm someone's address or reset their password with it.
_SECRET_PATH = re.compile(r"(/accounts/(?:confirm-email|password/reset/key)/)[^/\s\"?]+")


def secret_paths_blanked(value: object) -> object:
    return _SECRET_PATH.sub(r"\1[key]", value) if isinstance(value, str) else value


class SecretPathFilter(logging.Filter):
    """Blanks link keys in a record's message and arguments (Django's "Not Found: <path>",
    gunicorn's request line and path atoms), before any formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = secret_paths_blanked(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: secret_paths_blanked(v) for key, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(secret_paths_blanked(v) for v in record.args)
        return True


_FORMATTERS: dict[str, dict[str, Any]] = {
    "json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": ["levelname", "name", "message", "request_id"],
        "rename_fields": {"levelname": "level", "name": "logger"},
        "timestamp": "time",
        # Django adds the HttpRequest object to its request log records (`extra`); its text
        # would be noise at best.
        "reserved_attrs": [*RESERVED_ATTRS, "request"],
    },
    "plain": {
        "()": "logging.Formatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        "defaults": {"request_id": "-"},
    },
}


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's LOGGING: everything to stderr through one handler that stamps request ids."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": copy.deepcopy(_FILTERS),
        "formatters": {log_format: copy.deepcopy(_FORMATTERS[log_format])},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["secret_paths", "request_id"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
    }


class GunicornAccessFields(logging.Filter):
    """gunicorn logs each request with its "atoms" as the record's arguments: lift a few into
    fields of the JSON line, among them the request id our middleware put on the response
    (gunicorn writes the line after the app returned, outside the request's context)."""

    ATOMS = {
        "h": "remote_addr",
        "m": "method",
        "U": "path",
        "s": "status",
        "M": "duration_ms",
        "{x-request-id}o": "request_id",
    }

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, Mapping):
            for atom, field in self.ATOMS.items():
                value = atoms.get(atom)
                if value is not None:
                    setattr(record, field, value)
        return True


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's `logconfig_dict` for JSON logs: its error log to stderr, its access log to
    stdout, both as JSON lines (plain logs keep gunicorn's own set-up)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "secret_paths": {"()": "config.logs.SecretPathFilter"},
            "access_fields": {"()": "config.logs.GunicornAccessFields"},
        },
        "formatters": {"json": copy.deepcopy(_FORMATTERS["json"])},
        "handlers": {
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["secret_paths", "access_fields"],
                "stream": "ext://sys.stdout",
            },
            "error": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["secret_paths"],
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["error"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["error"], "level": "INFO"},
    }
