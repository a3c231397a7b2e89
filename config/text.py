"""Free text people type (form answers, token names, titles): stored as typed, rendered escaped,
but refused when it carries characters that make it display as something else.

Control characters (NUL, CR, escape sequences) and invisible formatting characters (zero-width
spaces and joiners, the bidirectional overrides and isolates of "Trojan Source", U+202E RTL
override included, soft hyphens, tag characters, byte-order marks) are refused; every other
script, emoji and combining mark is welcome. Text is NFC-normalised so that one spelling is
stored however it was typed. Identifiers (org/name, versions, artifacts) are stricter still:
ASCII only, like the Hub (`release.models.name_validator`)."""

import unicodedata

# Control, format and lone surrogates (JSON may carry "\ud800"; no database can store it).
# Unassigned code points stay allowed: they are tomorrow's emoji, newer than Python's tables.
_REFUSED = frozenset({"Cc", "Cf", "Cs"})


def plain_text_clean(value: str, *, limit: int, multiline: bool = True) -> str:
    """The text NFC-normalised and stripped, or ValueError saying what is wrong with it (a
    phrase that reads after the field's name: "contains control ...")."""
    # Browsers send textarea line breaks as CRLF.
    text = unicodedata.normalize("NFC", value.replace("\r\n", "\n").replace("\r", "\n")).strip()
    allowed = "\n\t" if multiline else ""
    if any(unicodedata.category(c) in _REFUSED and c not in allowed for c in text):
        raise ValueError("contains control or invisible formatting characters")
    if len(text) > limit:
        raise ValueError(f"is longer than {limit} characters")
    return text


def hidden_characters(text: str, *, allowed: str = "\n\t") -> list[str]:
    """Where `text` holds characters that `plain_text_clean` refuses, as "U+202E (line 3)",
    for text that must be kept byte for byte (a license) and so is checked, not cleaned."""
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        for char in line:
            if unicodedata.category(char) in _REFUSED and char not in allowed:
                found.append(f"U+{ord(char):04X} (line {number})")
    return found
