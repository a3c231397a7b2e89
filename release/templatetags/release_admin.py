from django import template

from release.selectors import HeartbeatStatus, heartbeat_status

register = template.Library()


@register.inclusion_tag("admin/release/heartbeat_banner.html")
def heartbeat_banner() -> dict[str, HeartbeatStatus]:
    return {"status": heartbeat_status()}
