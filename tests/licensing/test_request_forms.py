"""Access-request forms: every answer is checked on the server, whatever the client did, and every
problem is reported at once, field by field."""

from typing import Any

import pytest

from licensing import access
from licensing.models import GatePolicy
from licensing.request_forms import (
    MAX_TEXT,
    InvalidForm,
    form_answers_clean,
    form_fields_check,
)
from tests.licensing.factories import gated_model

TEXT: dict[str, Any] = {
    "name": "affiliation",
    "label": "Affiliation",
    "type": "text",
    "required": True,
}
SELECT: dict[str, Any] = {
    "name": "use",
    "label": "Intended use",
    "type": "select",
    "options": ["research", "commercial"],
    "required": True,
}
COUNTRY: dict[str, Any] = {
    "name": "country",
    "label": "Country",
    "type": "country",
    "required": True,
}
DATE: dict[str, Any] = {"name": "born", "label": "Date of birth", "type": "date"}
CHECKBOX: dict[str, Any] = {
    "name": "terms",
    "label": "I accept",
    "type": "checkbox",
    "required": True,
}
FORM: list[dict[str, Any]] = [TEXT, SELECT, COUNTRY, DATE, CHECKBOX]
GOOD: dict[str, Any] = {
    "affiliation": "Acme Labs",
    "use": "research",
    "country": "FR",
    "born": "1990-04-01",
    "terms": True,
}


def problems_of(fields, answers) -> dict[str, str]:
    with pytest.raises(InvalidForm) as refused:
        form_answers_clean(fields, answers)
    assert refused.value.code == "invalid_form"
    assert refused.value.status == 400
    assert refused.value.detail is not None
    return refused.value.detail


def test_a_complete_form_is_cleaned():
    assert form_answers_clean(FORM, GOOD) == GOOD


# --- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "bell\x07",  # a control character
        "nul\x00byte",
        "vertical\x0btab",
        "zero\u200bwidth",  # zero-width space
        "\u200dhidden joiner",
        "right-to-left \u202eoverride",  # renders text backwards: a classic spoof
        "soft\u00adhyphen",
    ],
)
def test_text_with_control_or_invisible_characters_is_refused(value):
    assert problems_of([TEXT], {"affiliation": value}) == {
        "affiliation": "contains control or invisible formatting characters"
    }


def test_text_keeps_newlines_and_tabs_and_is_trimmed():
    cleaned = form_answers_clean([TEXT], {"affiliation": "  Acme\n\tLabs  "})

    assert cleaned == {"affiliation": "Acme\n\tLabs"}


def test_browser_line_breaks_become_newlines():
    cleaned = form_answers_clean([TEXT], {"affiliation": "Acme\r\nLabs\rEurope"})

    assert cleaned == {"affiliation": "Acme\nLabs\nEurope"}


def test_text_is_nfc_normalised_before_its_length_is_counted():
    decomposed = "e\u0301" * MAX_TEXT  # 2000 code points, 1000 once composed

    cleaned = form_answers_clean([TEXT], {"affiliation": decomposed})

    assert cleaned["affiliation"] == "\u00e9" * MAX_TEXT


def test_text_longer_than_the_limit_is_refused():
    assert form_answers_clean([TEXT], {"affiliation": "x" * MAX_TEXT})["affiliation"]
    assert problems_of([TEXT], {"affiliation": "x" * (MAX_TEXT + 1)}) == {
        "affiliation": f"is longer than {MAX_TEXT} characters"
    }
    short = {**TEXT, "max_length": 5}
    assert problems_of([short], {"affiliation": "Acme Labs"}) == {
        "affiliation": "is longer than 5 characters"
    }


@pytest.mark.parametrize("value", [42, ["Acme"], {"name": "Acme"}, True])
def test_text_must_be_a_string(value):
    assert problems_of([TEXT], {"affiliation": value}) == {"affiliation": "must be a string"}


@pytest.mark.parametrize("value", [None, "", "   ", "\n\t"])
def test_a_blank_answer_to_a_required_text_is_missing(value):
    assert problems_of([TEXT], {"affiliation": value}) == {"affiliation": "is required"}


# --- select, country, date, checkbox --------------------------------------------------------------


@pytest.mark.parametrize("value", ["military", "Research", " research"])
def test_select_refuses_an_option_it_does_not_offer(value):
    assert problems_of([SELECT], {"use": value}) == {"use": "must be one of research, commercial"}


@pytest.mark.parametrize(("value", "cleaned"), [("DE", "DE"), ("de", "DE"), (" jp ", "JP")])
def test_country_is_an_iso_code_normalised_to_upper_case(value, cleaned):
    assert form_answers_clean([COUNTRY], {"country": value}) == {"country": cleaned}


@pytest.mark.parametrize("value", ["XX", "Germany", "DEU", "D", "EU"])
def test_country_refuses_what_is_not_an_iso_3166_alpha_2_code(value):
    assert problems_of([COUNTRY], {"country": value}) == {
        "country": "must be an ISO 3166-1 alpha-2 country code"
    }


def test_date_is_an_iso_date():
    assert form_answers_clean([DATE], {"born": " 2000-02-29 "}) == {"born": "2000-02-29"}


@pytest.mark.parametrize("value", ["2023-02-29", "2024-13-01", "01/04/1990", "yesterday"])
def test_date_refuses_what_is_not_a_real_date(value):
    assert problems_of([DATE], {"born": value}) == {"born": "must be a date as YYYY-MM-DD"}


def test_a_required_checkbox_must_be_ticked():
    assert form_answers_clean([CHECKBOX], {"terms": True}) == {"terms": True}
    assert problems_of([CHECKBOX], {"terms": False}) == {"terms": "must be ticked"}
    assert problems_of([CHECKBOX], {}) == {"terms": "must be ticked"}


@pytest.mark.parametrize("value", ["true", "yes", 1, 0, "on", []])
def test_a_checkbox_is_true_or_false_not_something_truthy(value):
    assert problems_of([CHECKBOX], {"terms": value}) == {"terms": "must be true or false"}


def test_an_optional_checkbox_left_out_is_false():
    optional = {**CHECKBOX, "required": False}

    assert form_answers_clean([optional], {}) == {"terms": False}


# --- the form as a whole -----------------------------------------------------------------------


def test_optional_fields_left_out_are_not_stored():
    answers = {k: v for k, v in GOOD.items() if k != "born"}

    assert form_answers_clean(FORM, {**answers, "born": ""}) == answers
    assert form_answers_clean(FORM, {**answers, "born": "  "}) == answers
    assert form_answers_clean(FORM, {**answers, "born": None}) == answers


def test_unknown_fields_are_refused():
    assert problems_of(FORM, {**GOOD, "is_admin": True}) == {
        "is_admin": "is not a field of this form"
    }


def test_every_problem_is_reported_at_once():
    with pytest.raises(InvalidForm) as refused:
        form_answers_clean(
            FORM,
            {"use": "warfare", "country": "ZZ", "born": "soon", "terms": False, "extra": "x"},
        )

    assert refused.value.detail == {
        "affiliation": "is required",
        "use": "must be one of research, commercial",
        "country": "must be an ISO 3166-1 alpha-2 country code",
        "born": "must be a date as YYYY-MM-DD",
        "terms": "must be ticked",
        "extra": "is not a field of this form",
    }
    assert refused.value.message == (
        "the form has problems: affiliation is required; born must be a date as YYYY-MM-DD; "
        "country must be an ISO 3166-1 alpha-2 country code; extra is not a field of this form; "
        "terms must be ticked; use must be one of research, commercial"
    )


@pytest.mark.parametrize("answers", [None, [], "affiliation=Acme"])
def test_answers_must_be_an_object(answers):
    with pytest.raises(InvalidForm, match="answers must be an object of field name to value"):
        form_answers_clean(FORM, answers)


# --- the policy's field list ----------------------------------------------------------------------


def test_a_good_field_list_passes():
    assert form_fields_check(FORM) == FORM
    assert form_fields_check([]) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "x"}, "form fields must be a list"),
        (["affiliation"], "field 0 needs a name"),
        ([TEXT, {"type": "text"}], "field 1 needs a name"),
        (
            [{"name": "my-field", "type": "text"}],
            "field name 'my-field' must be a unique identifier",
        ),
        ([TEXT, {**SELECT, "name": "affiliation"}], "field name 'affiliation' must be a unique"),
        ([{"name": "file", "type": "upload"}], "field 'file': type must be one of checkbox, "),
        ([{"name": "file"}], "field 'file': type must be one of"),
        ([{"name": "use", "type": "select"}], "field 'use': a select needs a list of string"),
        ([{"name": "use", "type": "select", "options": []}], "field 'use': a select"),
        ([{"name": "use", "type": "select", "options": "a,b"}], "field 'use': a select"),
        ([{"name": "use", "type": "select", "options": ["a", ""]}], "field 'use': a select"),
        ([{"name": "use", "type": "select", "options": ["a", 1]}], "field 'use': a select"),
    ],
)
def test_a_bad_field_list_is_refused(fields, message):
    with pytest.raises(InvalidForm) as refused:
        form_fields_check(fields)

    assert refused.value.code == "invalid_form"
    assert refused.value.message.startswith(message)


def test_a_policy_with_a_bad_field_list_is_not_saved(staff):
    model = gated_model(actor=staff, fields=[TEXT])

    with pytest.raises(InvalidForm, match="type must be one of"):
        access.gate_policy_set(
            actor=staff, model=model, form_fields=[{"name": "x", "type": "number"}]
        )

    assert GatePolicy.objects.get(model=model).form_fields == [TEXT]
