"""DRF's JSON parser, with the two inputs it lets through to a 500 refused as 400 instead."""

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json


class StrictJSONParser(JSONParser):
    """Refuses, besides malformed JSON:

    - lone surrogate escapes ("\\ud800"): legal JSON, but not text; neither PostgreSQL nor the
      JSON renderer (which writes UTF-8) can take them, wherever they hide (an unknown key
      echoed back in an error is enough);
    - nesting deeper than Python's recursion limit, which escapes DRF as a RecursionError.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError(
                "JSON parse error - a string holds a lone surrogate escape (\\ud800-\\udfff), "
                "which is not text"
            ) from None
        return data
