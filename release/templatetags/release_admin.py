from typing import Any

from django import template

from release.selectors import heartbeat_status, unlocks_needing_attention

register = template.Library()


@register.inclusion_tag("admin/release/heartbeat_banner.html")
def heartbeat_banner() -> dict[str, Any]:
    """Shown on every admin page: whether workers run, and unlocks that need a person."""
    return {"status": heartbeat_status(), "attention": list(unlocks_needing_attention()[:5])}
