"""A Hugging Face Hub-compatible read API, so `huggingface_hub` (and transformers, vLLM… on top
of it) download from Weightgate with `HF_ENDPOINT=<weightgate>` and `HF_TOKEN=<wg_ token>`.

Every file is presented as an LFS file: its `lfs.oid` and ETag are its sha256 (what the client
names its cache blob after), its git `oid` the hash of the LFS pointer. Downloads answer a 302
to the object store whose metadata (X-Repo-Commit, X-Linked-Etag, X-Linked-Size) sits on the 302
itself, because clients read a cross-host redirect without following it on HEAD. Never send
Xet headers: they switch clients to another protocol.
"""

import hashlib
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from licensing.authentication import request_token
from release import selectors
from release.api_download import CountedDownloadView, Refusal, file_lookup
from release.distribution import download_url
from release.models import File, Model, Version

TREE_PAGE = 1000


def _hub_error(status: int, code: str, message: str, commit: str | None = None) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    response["X-Error-Code"] = code
    response["X-Error-Message"] = message
    if commit:
        response["X-Repo-Commit"] = str(commit)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="weightgate"'
    return response


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def git_blob_oid(content: bytes) -> str:
    """What git names a blob: sha1 over a header and the content (not for security)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


def _resolve_version(request: Request, model: Model, revision: str) -> Version | None:
    """A version name or commit; `main` (the clients' default) is the newest version the caller
    may see, unless a version is actually named main."""
    version = selectors.version_get_visible(user=request.user, model=model, revision=revision)
    if version is None and revision == "main":
        version = (
            selectors.versions_visible_to(user=request.user, model=model)
            .order_by("-sealed_at")
            .first()
        )
    return version


def _lookup(
    request: Request, org: str, name: str, revision: str
) -> tuple[Model, Version] | JsonResponse:
    """The model and version a request names, or the Hub's error answer."""
    model = selectors.model_get_visible(user=request.user, org=org, name=name)
    if model is None:
        return _hub_error(404, "RepoNotFound", f"Repository {org}/{name} not found")
    version = _resolve_version(request, model, revision)
    if version is None or version.commit is None:
        return _hub_error(
            404, "RevisionNotFound", f"Revision {revision!r} not found in {org}/{name}"
        )
    return model, version


def _visible_files(request: Request, version: Version) -> QuerySet[File]:
    return selectors.files_visible_to(user=request.user, version=version).order_by("path")


class HubModelInfoApi(APIView):
    """`GET /api/models/{org}/{name}[/revision/{rev}]`: id, sha, siblings."""

    @extend_schema(exclude=True)
    def get(self, request: Request, org: str, name: str, revision: str = "main") -> HttpResponse:
        found = _lookup(request, org, name, revision)
        if isinstance(found, JsonResponse):
            return found
        model, version = found
        policy = getattr(model, "gate_policy", None)
        phases = {a.phase for a in getattr(version, "visible_artifacts", [])}
        return JsonResponse(
            {
                "_id": f"{model.pk}",
                "id": model.repo_id,
                "modelId": model.repo_id,
                "author": model.org,
                "sha": version.commit,
                # The Hub's own format, which clients parse strictly: UTC with a Z.
                "lastModified": (version.sealed_at or version.created_at)
                .astimezone(UTC)
                .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "private": False,
                "disabled": False,
                "gated": (policy.approval_mode if policy and "gated" in phases else False),
                "tags": [],
                "siblings": [
                    {"rfilename": path}
                    for path in _visible_files(request, version).values_list("path", flat=True)
                ],
            }
        )


class HubTreeApi(APIView):
    """`GET /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=`: files and folders, with
    git and LFS object ids, paginated with `Link: <…>; rel="next"`."""

    @extend_schema(exclude=True)
    def get(
        self, request: Request, org: str, name: str, revision: str, path: str = ""
    ) -> HttpResponse:
        found = _lookup(request, org, name, revision)
        if isinstance(found, JsonResponse):
            return found
        _, version = found
        prefix = path.strip("/")
        recursive = request.query_params.get("recursive", "false").lower() in ("1", "true")
        entries = _tree_entries(_visible_files(request, version), prefix, recursive)
        if prefix and not entries:
            return _hub_error(
                404, "EntryNotFound", f"{prefix!r} not found in {org}/{name}", commit=version.commit
            )
        raw_cursor = request.query_params.get("cursor") or "0"
        if not (raw_cursor.isascii() and raw_cursor.isdigit() and len(raw_cursor) <= 12):
            # Only our own Link headers carry a cursor; anything else is not one of them.
            return _hub_error(400, "BadRequest", f"cursor {raw_cursor!r} is not a tree position")
        start = int(raw_cursor)
        page = entries[start : start + TREE_PAGE]
        response = JsonResponse(page, safe=False)
        if start + TREE_PAGE < len(entries):
            query = request.query_params.copy()
            query["cursor"] = str(start + TREE_PAGE)
            response["Link"] = (
                f'<{request.build_absolute_uri(request.path)}?{urlencode(query)}>; rel="next"'
            )
        return response


def _tree_entries(files: QuerySet[File], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    base = f"{prefix}/" if prefix else ""
    entries: list[dict[str, Any]] = []
    folders: dict[str, None] = {}
    for path, size, sha256 in files.values_list("path", "size", "sha256"):
        if not path.startswith(base):
            continue
        rest = path[len(base) :]
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.setdefault(base + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            pointer = lfs_pointer(sha256, size)
            entries.append(
                {
                    "type": "file",
                    "path": path,
                    "size": size,
                    "oid": git_blob_oid(pointer),
                    "lfs": {"oid": sha256, "size": size, "pointerSize": len(pointer)},
                }
            )
    dirs = [
        {"type": "directory", "path": folder, "oid": git_blob_oid(folder.encode())}
        for folder in folders
    ]
    return sorted(dirs + entries, key=lambda entry: entry["path"])


# The Hub's error codes for what `_lookup` refuses, as the download API names them.
_LOOKUP_REFUSALS = {"RepoNotFound": "model_not_found", "RevisionNotFound": "version_not_found"}


class HubResolveApi(CountedDownloadView):
    """`HEAD`/`GET /{org}/{name}/resolve/{rev}/{path}`: a 302 to the file, with the Hub's
    metadata headers on the 302 itself."""

    surface = "hub"

    @extend_schema(exclude=True)
    def get(self, request: Request, org: str, name: str, revision: str, path: str) -> HttpResponse:
        if revision == "main":  # clients' default: the newest version the caller may see
            looked_up = _lookup(request, org, name, revision)
            if isinstance(looked_up, JsonResponse):
                reason = _LOOKUP_REFUSALS.get(looked_up["X-Error-Code"], "not_found")
                self.refused(Refusal(looked_up.status_code, reason, ""))
                return looked_up
            revision = str(looked_up[1].commit)
        found = file_lookup(request, org, name, revision, path)
        commit = found.version.commit if found.version else None
        if found.refusal is not None:
            refusal = found.refusal
            self.refused(refusal)
            if refusal.code == "model_not_found":
                return _hub_error(404, "RepoNotFound", f"Repository {org}/{name} not found")
            if refusal.code == "version_not_found":
                return _hub_error(
                    404, "RevisionNotFound", f"Revision {revision!r} not found in {org}/{name}"
                )
            if refusal.status == 404:
                return _hub_error(404, "EntryNotFound", f"{path} not found in {org}/{name}", commit)
            if refusal.code == "gated":
                return _hub_error(refusal.status, "GatedRepo", refusal.message, commit)
            code = {403: "Forbidden", 429: "TooManyRequests", 503: "ServiceUnavailable"}.get(
                refusal.status, "Unauthorized"
            )
            error = _hub_error(refusal.status, code, refusal.message, commit)
            if refusal.retry_after:
                error["Retry-After"] = str(refusal.retry_after)
            return error
        assert found.file is not None  # no refusal: a file
        response = HttpResponse(status=302)
        response["Location"] = download_url(found.file)
        self.issued(request, found.file)
        response["X-Repo-Commit"] = str(commit)
        response["ETag"] = f'"{found.file.sha256}"'
        response["X-Linked-Etag"] = f'"{found.file.sha256}"'
        response["X-Linked-Size"] = str(found.file.size)
        response["Content-Length"] = "0"
        return response


class HubWhoAmIApi(APIView):
    """`GET /api/whoami-v2`: who the token (or session) belongs to."""

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        if not request.user.is_authenticated:
            return _hub_error(401, "Unauthorized", "Invalid or missing credentials")
        token = request_token(request)
        return JsonResponse(
            {
                "type": "user",
                "name": request.user.get_username(),
                "fullname": request.user.get_full_name()
                if hasattr(request.user, "get_full_name")
                else "",
                "auth": {
                    "type": "access_token",
                    "accessToken": {
                        "displayName": token.name if token else "session",
                        "role": "read",
                    },
                },
            }
        )
