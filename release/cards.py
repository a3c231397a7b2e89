"""Model cards: Markdown written by the model's authors, shown on the portal as HTML.

Cards come from Hub repos and often carry raw HTML (centred logos, `<details>`, badges), so the
Markdown is rendered with HTML allowed and the result is then sanitised with nh3 (the Ammonia
sanitiser) against an allow-list: no scripts, styles, event handlers, forms, frames or
`javascript:` links survive, whatever the card says.
"""

from functools import lru_cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# Tags a card may use; everything else is dropped (its text kept, except for the tags below).
ALLOWED_TAGS = {
    *("h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "blockquote", "pre", "code"),
    *("em", "strong", "del", "s", "sub", "sup", "kbd", "a", "img", "ul", "ol", "li"),
    *("table", "thead", "tbody", "tr", "th", "td", "details", "summary", "div", "span"),
    *("dl", "dt", "dd"),
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "th": {"align"},
    "td": {"align"},
    "ol": {"start"},
    "code": {"class"},  # language-xxx from fenced blocks
}
# Removed with everything inside them, not just unwrapped.
DROPPED_WITH_CONTENT = {"script", "style", "iframe", "object", "embed", "form", "template"}


@lru_cache(maxsize=1)
def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def card_html(markdown: str) -> SafeString:
    """The card as sanitised HTML, safe to put in a page."""
    rendered = _renderer().render(markdown)
    clean = nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above
