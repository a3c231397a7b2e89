"""Portal pages of the catalog: the model list with search and filters, and a model's page.

Everything shown is read through the visibility selectors, so a page never shows what the API
would hide from the same person: a proprietary model is a 404 to outsiders here too.
"""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode

from licensing.models import AccessRequest, GatePolicy, Grant
from licensing.selectors import access_request_latest, grant_live_for
from release.cards import card_html
from release.models import Artifact, Model, Phase, Version
from release.selectors import (
    artifacts_visible_to,
    files_visible_to,
    model_get_visible,
    models_visible_to,
    unlocks_announced_for,
)

CATALOG_PAGE_SIZE = 20
MAX_QUERY = 200


@dataclass(frozen=True)
class CatalogEntry:
    model: Model
    phases: list[str]
    latest: Version | None
    license: str


def _search(models: QuerySet[Model], query: str) -> QuerySet[Model]:
    """Every word must match the org, name, title or card; `org/name` matches the repo id."""
    for word in query.split():
        if "/" in word:
            org, _, name = word.partition("/")
            models = models.filter(org__icontains=org, name__icontains=name)
        else:
            models = models.filter(
                Q(org__icontains=word)
                | Q(name__icontains=word)
                | Q(title__icontains=word)
                | Q(card__icontains=word)
            )
    return models


def _phase_order(phase: str) -> int:
    return [Phase.OPEN, Phase.GATED, Phase.PROPRIETARY, Phase.WITHDRAWN].index(Phase(phase))


def catalog(request: HttpRequest) -> HttpResponse:
    """Models the viewer may see, searchable by words and filtered by organisation, phase (of
    any visible artifact) and license."""
    query = request.GET.get("q", "").strip()[:MAX_QUERY]
    org = request.GET.get("org", "").strip()
    phase = request.GET.get("phase", "").strip()
    license = request.GET.get("license", "").strip()

    artifacts = artifacts_visible_to(user=request.user)
    visible = models_visible_to(user=request.user)
    models = _search(visible, query)
    if org:
        models = models.filter(org=org)
    if phase:
        models = models.filter(pk__in=artifacts.filter(phase=phase).values("version__model_id"))
    if license:
        models = models.filter(gate_policy__license__slug=license)
    models = models.select_related("gate_policy__license").order_by("org", "name")

    page = Paginator(models, CATALOG_PAGE_SIZE).get_page(request.GET.get("page"))
    entries = []
    for model in page.object_list:
        versions = model.visible_versions  # type: ignore[attr-defined]
        phases = {a.phase for v in versions for a in v.visible_artifacts}
        policy = _policy(model)
        entries.append(
            CatalogEntry(
                model=model,
                phases=sorted(phases, key=_phase_order),
                latest=versions[0] if versions else None,
                license=str(policy.license) if policy and policy.license else "",
            )
        )
    # Filter choices come from what this viewer can see, never from the whole catalog.
    licenses = (
        GatePolicy.objects.filter(model__in=visible, license__isnull=False)
        .values_list("license__slug", "license__title")
        .distinct()
        .order_by("license__slug")
    )
    chosen = {"q": query, "org": org, "phase": phase, "license": license}
    filters = {key: value for key, value in chosen.items() if value}
    return render(
        request,
        "release/catalog.html",
        {
            "entries": entries,
            "page": page,
            "query": query,
            "org": org,
            "phase": phase,
            "license": license,
            "orgs": visible.order_by("org").values_list("org", flat=True).distinct(),
            "phases": sorted(set(artifacts.values_list("phase", flat=True)), key=_phase_order),
            "licenses": list(licenses),
            "filters": urlencode(filters),
            "filtered": bool(query or org or phase or license),
        },
    )


def _policy(model: Model) -> GatePolicy | None:
    try:
        return model.gate_policy
    except GatePolicy.DoesNotExist:
        return None


@dataclass(frozen=True)
class AccessState:
    """What the model page says about the viewer's access to its gated artifacts."""

    grant: Grant | None
    request: AccessRequest | None


def _access_state(request: HttpRequest, model: Model) -> AccessState:
    if not request.user.is_authenticated:
        return AccessState(grant=None, request=None)
    return AccessState(
        grant=grant_live_for(user=request.user, model_id=model.pk),
        request=access_request_latest(user=request.user, model_id=model.pk),
    )


def _download_commands(model: Model, revision: str) -> dict[str, str]:
    """The commands a developer copies, filled in with this model, version and server."""
    site, repo = settings.SITE_URL, model.repo_id
    return {
        "cli": f"weightgate login --endpoint {site}\n"
        f"weightgate download {repo} --revision {revision}",
        "hf": f'HF_ENDPOINT={site} HF_TOKEN="<your token>" '
        f"hf download {repo} --revision {revision}",
        "python": "from huggingface_hub import snapshot_download\n"
        f'snapshot_download("{repo}", revision="{revision}", endpoint="{site}", '
        'token="<your token>")',
    }


def model_page(request: HttpRequest, org: str, name: str) -> HttpResponse:
    """A model's card, versions, artifacts (phase and announced unlocks), the files of one
    version, its license, the viewer's access and how to download."""
    model = model_get_visible(user=request.user, org=org, name=name, with_versions=True)
    if model is None:
        raise Http404(f"no model {org}/{name}")
    versions: list[Version] = model.visible_versions  # type: ignore[attr-defined]
    wanted = request.GET.get("revision", "")
    selected = next((v for v in versions if wanted in (v.name, v.commit)), None)
    if wanted and selected is None:
        raise Http404(f"no version {wanted} of {model.repo_id}")
    selected = selected or (versions[0] if versions else None)

    all_artifacts: list[Artifact] = [a for v in versions for a in v.visible_artifacts]  # type: ignore[attr-defined]
    announced = unlocks_announced_for(artifact_ids=[a.pk for a in all_artifacts])
    files = (
        list(files_visible_to(user=request.user, version=selected).order_by("path"))
        if selected
        else []
    )
    policy = GatePolicy.objects.select_related("license").filter(model=model).first()
    selected_artifacts: list[Artifact] = selected.visible_artifacts if selected else []  # type: ignore[attr-defined]
    gated = any(a.phase == Phase.GATED for a in all_artifacts)
    context: dict[str, Any] = {
        "model": model,
        "card": card_html(model.card) if model.card.strip() else "",
        "versions": [
            {
                "version": version,
                "artifacts": [
                    {"artifact": a, "unlocks": announced.get(a.pk, [])}
                    for a in version.visible_artifacts  # type: ignore[attr-defined]
                ],
            }
            for version in versions
        ],
        "selected": selected,
        "selected_artifacts": selected_artifacts,
        "files": files,
        "total_size": sum(f.size for f in files),
        "license": policy.license if policy else None,
        "takes_requests": bool(policy and policy.license and gated),
        "access": _access_state(request, model),
        "commands": _download_commands(model, selected.name) if selected else {},
        "tokens_url": reverse("portal-tokens"),
    }
    return render(request, "release/model.html", context)
