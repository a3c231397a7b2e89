"""Custom access-request forms, like the Hub's gated-repo forms: a gate policy lists its fields,
and every answer is validated here, on the server, whatever the client did."""

from datetime import date
from typing import Any

import pycountry

from config.errors import DomainError
from config.text import plain_text_clean

FIELD_TYPES = frozenset({"text", "select", "country", "date", "checkbox"})
MAX_TEXT = 1000
COUNTRY_CODES = frozenset(country.alpha_2 for country in pycountry.countries)


class InvalidForm(DomainError):
    code = "invalid_form"


def form_fields_check(fields: Any) -> list[dict[str, Any]]:
    """Check a policy's field list: known types, unique names, options for selects."""
    if not isinstance(fields, list):
        raise InvalidForm("form fields must be a list")
    seen: set[str] = set()
    for index, field in enumerate(fields):
        if not isinstance(field, dict) or not isinstance(field.get("name"), str):
            raise InvalidForm(f"field {index} needs a name")
        name = field["name"]
        if not name.isidentifier() or name in seen:
            raise InvalidForm(f"field name {name!r} must be a unique identifier")
        seen.add(name)
        if field.get("type") not in FIELD_TYPES:
            raise InvalidForm(
                f"field {name!r}: type must be one of {', '.join(sorted(FIELD_TYPES))}"
            )
        options = field.get("options")
        if field["type"] == "select" and (
            not isinstance(options, list)
            or not options
            or not all(isinstance(o, str) and o for o in options)
        ):
            raise InvalidForm(f"field {name!r}: a select needs a list of string options")
    return fields


def form_answers_clean(fields: list[dict[str, Any]], answers: Any) -> dict[str, Any]:
    """The answers, validated against the fields and normalised; every problem is reported at
    once as {field: message} in the error's detail."""
    if not isinstance(answers, dict):
        raise InvalidForm("answers must be an object of field name to value")
    known = {field["name"] for field in fields}
    problems: dict[str, str] = {
        name: "is not a field of this form" for name in answers if name not in known
    }
    cleaned: dict[str, Any] = {}
    for field in fields:
        name, kind = field["name"], field["type"]
        required = bool(field.get("required"))
        value = answers.get(name)
        # Whitespace alone is no answer: a required text of "   " would otherwise pass as "".
        blank = value is None or (isinstance(value, str) and not value.strip())
        if blank and kind != "checkbox":
            if required:
                problems[name] = "is required"
            continue
        try:
            cleaned[name] = _clean_answer(field, kind, value, required)
        except ValueError as error:
            problems[name] = str(error)
    if problems:
        raise InvalidForm(
            "the form has problems: "
            + "; ".join(f"{name} {message}" for name, message in sorted(problems.items())),
            detail=problems,
        )
    return cleaned


def _clean_answer(field: dict[str, Any], kind: str, value: Any, required: bool) -> Any:
    if kind == "checkbox":
        # Not `value in (True, False)`: 1 == True and 0 == False would slip through.
        if value is not None and not isinstance(value, bool):
            raise ValueError("must be true or false")
        if required and value is not True:
            raise ValueError("must be ticked")
        return bool(value)
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if kind == "text":
        return plain_text_clean(value, limit=int(field.get("max_length", MAX_TEXT)))
    if kind == "select":
        if value not in field["options"]:
            raise ValueError(f"must be one of {', '.join(field['options'])}")
        return value
    if kind == "country":
        code = value.strip().upper()
        if code not in COUNTRY_CODES:
            raise ValueError("must be an ISO 3166-1 alpha-2 country code")
        return code
    try:
        return date.fromisoformat(value.strip()).isoformat()  # kind == "date"
    except ValueError:
        raise ValueError("must be a date as YYYY-MM-DD") from None
