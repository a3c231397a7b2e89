"""The release console: one admin page per model with its versions, artifacts, phases and
unlocks on a timeline, what each unlock still waits for, and the progress of a running one;
pages to schedule, approve, reject, cancel and reschedule unlocks and to withdraw artifacts; and
the model's downloads per day.

Mounted under the Model admin (`ModelAdmin.get_urls`), so every page is staff-only through
`admin_site.admin_view` (others are sent to the admin login), CSRF-protected, and needs the
permission to view models, like the Model admin. GET only
reads: every action page is a confirmation step that changes nothing, and the change happens
on its POST, through `release.services`, whose refusals (`DomainError`) are shown as messages.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from config.errors import DomainError
from licensing.models import AuditEvent
from release import services
from release.charts import daily_bar_chart
from release.models import Artifact, DownloadDaily, Model, Phase, Unlock, Version
from release.selectors import (
    UnlockApprovalStatus,
    UnlockProgress,
    unlock_approval_status,
    unlock_progress,
)
from release.services.unlocks import LIVE_STATES

REFRESH_SECONDS = 3
TIMELINE_HISTORY_LIMIT = 200
DOWNLOAD_RANGES = [(7, "7 days"), (30, "30 days"), (90, "90 days"), (365, "one year")]


def _staff_user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # admin_view lets only active staff in
    return request.user


def _prestage_lead() -> timedelta:
    return timedelta(hours=settings.UNLOCK_PRESTAGE_LEAD_HOURS)


def unlock_is_running(unlock: Unlock, now: datetime) -> bool:
    """Bytes are moving or about to (the tick starts pre-staging within seconds), so the page
    keeps itself current."""
    if unlock.state in (Unlock.State.STAGING, Unlock.State.READY):
        return True
    return unlock.state == Unlock.State.SCHEDULED and unlock.not_before <= now + _prestage_lead()


def _progress_text(progress: UnlockProgress) -> str:
    if not progress.files_total:
        return "not started"
    return (
        f"{progress.files_done} of {progress.files_total} files verified, "
        f"{filesizeformat(progress.bytes_done)} of {filesizeformat(progress.bytes_total)}"
    )


# --- Forms --------------------------------------------------------------------------------------


class DateTimeLocalInput(forms.DateTimeInput):
    """The browser's own date and time picker; the value is read in TIME_ZONE."""

    input_type = "datetime-local"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs, format="%Y-%m-%dT%H:%M")


def _time_help(extra: str = "") -> str:
    return f"In {timezone.get_current_timezone_name()}. {extra}".strip()


class VersionChoiceField(forms.ModelChoiceField):  # type: ignore[type-arg]
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} (commit {str(obj.commit)[:12]})"


class ArtifactChoiceField(forms.ModelMultipleChoiceField):  # type: ignore[type-arg]
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.version.name}: {obj.name} (now {obj.phase})"


class ScheduleForm(forms.Form):
    version = VersionChoiceField(queryset=Version.objects.none(), help_text="Sealed versions.")
    artifacts = ArtifactChoiceField(
        queryset=Artifact.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="Artifacts of the chosen version that move together.",
    )
    target_phase = forms.ChoiceField(
        choices=[
            (Phase.GATED.value, "Gated: developers request access and accept the license"),
            (Phase.OPEN.value, "Open: anyone may download"),
        ],
        widget=forms.RadioSelect,
    )
    not_before = forms.DateTimeField(label="Not before", widget=DateTimeLocalInput)
    confirm = forms.BooleanField(
        label="I checked the version, the artifacts, the target phase and the time",
        help_text="Phases only move forward: once flipped, this cannot be undone.",
    )

    def __init__(self, *args: Any, model: Model, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sealed = Version.objects.filter(model=model, sealed_at__isnull=False).order_by(
            "-created_at"
        )
        version_field = self.fields["version"]
        assert isinstance(version_field, forms.ModelChoiceField)
        version_field.queryset = sealed.defer("manifest", "signature")
        artifacts_field = self.fields["artifacts"]
        assert isinstance(artifacts_field, forms.ModelChoiceField)
        artifacts_field.queryset = (
            Artifact.objects.filter(version__in=sealed)
            .exclude(phase__in=[Phase.OPEN, Phase.WITHDRAWN])
            .select_related("version")
            .defer("signature", "version__manifest", "version__signature")
            .order_by("-version__created_at", "name")
        )
        self.fields["not_before"].help_text = _time_help(
            "A time in the past means as soon as it is approved and every file is verified in "
            f"place. Pre-staging starts {settings.UNLOCK_PRESTAGE_LEAD_HOURS} h before."
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        version, artifacts = data.get("version"), data.get("artifacts")
        if version is not None and artifacts:
            strays = [a.name for a in artifacts if a.version_id != version.pk]
            if strays:
                self.add_error(
                    "artifacts", f"not part of version {version.name}: {', '.join(strays)}"
                )
        return data


class ApproveForm(forms.Form):
    comment = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional; kept in the audit log.",
    )


class ReasonForm(forms.Form):
    # Not required here: the service decides, and says why (the browser still asks first).
    reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "required": True}),
        help_text="Required. Kept in the audit log.",
    )


class RescheduleForm(forms.Form):
    not_before = forms.DateTimeField(label="New time (not before)", widget=DateTimeLocalInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["not_before"].help_text = _time_help(
            "Approvals given for the old time are cleared: it needs approving again."
        )


class WithdrawForm(ReasonForm):
    confirm = forms.BooleanField(
        label="I understand: it stops being served at once, its unlocks are cancelled and the "
        "model's grants are suspended; a withdrawn artifact cannot come back"
    )


class DownloadsFilterForm(forms.Form):
    version = forms.ChoiceField(required=False)
    days = forms.TypedChoiceField(
        label="Period", choices=DOWNLOAD_RANGES, coerce=int, required=False, empty_value=None
    )

    def __init__(self, *args: Any, versions: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version_field = self.fields["version"]
        assert isinstance(version_field, forms.ChoiceField)
        version_field.choices = [("", "All versions"), *((v, v) for v in versions)]


# --- What the pages show ------------------------------------------------------------------------


@dataclass(frozen=True)
class UnlockRow:
    unlock: Unlock
    approval: UnlockApprovalStatus
    progress: UnlockProgress | None
    running: bool
    actions: list[tuple[str, str]]  # (action, label)


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    text: str
    kind: str  # version, phase, unlock, due: a CSS hook
    actor: str = ""
    url: str = ""


def _unlock_actions(unlock: Unlock) -> list[tuple[str, str]]:
    actions = []
    if unlock.state == Unlock.State.AWAITING_APPROVAL:
        actions += [("approve", "Approve"), ("reject", "Reject")]
    if unlock.state in LIVE_STATES:
        actions += [("reschedule", "Reschedule"), ("cancel", "Cancel")]
    return actions


def _unlock_rows(unlocks: list[Unlock], now: datetime) -> list[UnlockRow]:
    rows = []
    for unlock in unlocks:
        with_files = unlock.state in (*LIVE_STATES, Unlock.State.FAILED, Unlock.State.DONE)
        rows.append(
            UnlockRow(
                unlock=unlock,
                approval=unlock_approval_status(unlock=unlock),
                progress=unlock_progress(unlock=unlock) if with_files else None,
                running=unlock_is_running(unlock, now),
                actions=_unlock_actions(unlock),
            )
        )
    return rows


def _describe(event: AuditEvent, names: dict[tuple[str, str], str]) -> tuple[str, str]:
    """(text, kind) for an audit event about this model's versions, artifacts or unlocks."""
    data, subject = event.data, names.get((event.subject_type, event.subject_id), "")
    reason = data.get("reason") or data.get("comment") or ""
    why = f": {reason}" if reason else ""
    match event.action:
        case "model.created":
            return "model registered", "version"
        case "version.created":
            return f"version {subject} opened", "version"
        case "version.sealed":
            return f"version {subject} sealed as commit {str(data.get('commit'))[:12]}", "version"
        case "artifact.created":
            return f"artifact {subject} added", "version"
        case "artifact.phase_changed":
            return f"{subject}: {data.get('from')} → {data.get('to')}{why}", "phase"
        case "unlock.scheduled":
            return (
                f"{subject} scheduled: {', '.join(data.get('artifacts', []))} → "
                f"{data.get('target_phase')}",
                "unlock",
            )
        case "unlock.rescheduled":
            to = datetime.fromisoformat(data["to"]) if data.get("to") else None
            when = timezone.localtime(to).strftime("%Y-%m-%d %H:%M %Z") if to else "?"
            return f"{subject} rescheduled to {when}", "unlock"
        case "grant.suspended" | "grant.resumed":
            verb = event.action.split(".")[1]
            return f"{data.get('grants')} grant(s) {verb}{why}", "phase"
    verb = event.action.split(".", 1)[-1].replace("_", " ")
    return f"{subject or event.subject_type + ' ' + event.subject_id} {verb}{why}", "unlock"


def model_timeline(
    *, model: Model, versions: list[Version], unlocks: list[Unlock], now: datetime
) -> tuple[list[TimelineEntry], list[TimelineEntry]]:
    """(coming up, oldest first; history, newest first). History is the audit log of the
    model, its versions, artifacts and unlocks, so it shows every phase change with who made it
    and why; what is coming is each live unlock's pre-staging start and due time."""
    names: dict[tuple[str, str], str] = {("model", str(model.pk)): str(model)}
    for version in versions:
        names[("version", str(version.pk))] = version.name
        for artifact in version.artifacts.all():
            names[("artifact", str(artifact.pk))] = f"{version.name}:{artifact.name}"
    for unlock in unlocks:
        names[("unlock", str(unlock.pk))] = f"unlock #{unlock.pk}"
    subjects = Q()
    for kind in ("model", "version", "artifact", "unlock"):
        ids = [subject_id for (k, subject_id) in names if k == kind]
        subjects |= Q(subject_type=kind, subject_id__in=ids)
    events = AuditEvent.objects.filter(subjects).order_by("-id")[:TIMELINE_HISTORY_LIMIT]
    history = []
    for event in events:
        text, kind = _describe(event, names)
        url = ""
        if event.subject_type == "unlock":
            url = reverse("admin:release_unlock_change", args=[event.subject_id])
        history.append(TimelineEntry(event.created_at, text, kind, event.actor or "system", url))
    coming = []
    lead = _prestage_lead()
    for unlock in unlocks:
        if unlock.state not in LIVE_STATES:
            continue
        label = f"unlock #{unlock.pk} ({', '.join(a.name for a in unlock.artifacts.all())})"
        url = reverse("admin:release_unlock_change", args=[unlock.pk])
        if unlock.state in (Unlock.State.AWAITING_APPROVAL, Unlock.State.SCHEDULED):
            start = unlock.not_before - lead
            if start > now:
                coming.append(TimelineEntry(start, f"{label}: pre-staging starts", "due", url=url))
        if unlock.not_before > now:
            text = f"{label}: flips to {unlock.target_phase}"
            if unlock.state == Unlock.State.AWAITING_APPROVAL:
                text += " if approved by then"
            coming.append(TimelineEntry(unlock.not_before, text, "due", url=url))
        else:
            coming.append(
                TimelineEntry(
                    unlock.not_before,
                    f"{label}: due since then; flips to {unlock.target_phase} once "
                    + ("approved and " if unlock.state == Unlock.State.AWAITING_APPROVAL else "")
                    + "every file is verified in place",
                    "due",
                    url=url,
                )
            )
    coming.sort(key=lambda entry: entry.at)
    return coming, history


def _model_unlocks(model: Model) -> QuerySet[Unlock]:
    return (
        Unlock.objects.filter(version__model=model)
        .select_related("version", "created_by")
        .prefetch_related("artifacts", "approvals__approver")
        .defer("version__manifest", "version__signature")
    )


def _model_versions(model: Model) -> list[Version]:
    artifacts = (
        Artifact.objects.annotate(file_count=Count("files"), byte_total=Sum("files__size"))
        .defer("signature")
        .order_by("name")
    )
    return list(
        Version.objects.filter(model=model)
        .defer("manifest", "signature")
        .order_by("-created_at")
        .prefetch_related(Prefetch("artifacts", queryset=artifacts))
    )


# --- Views --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnlockAction:
    title: str
    done: str
    form: type[forms.Form]
    call: Callable[[User, Unlock, dict[str, Any]], object]
    warning: str = ""
    button: str = ""


UNLOCK_ACTIONS: dict[str, UnlockAction] = {
    "approve": UnlockAction(
        title="Approve",
        done="approved",
        form=ApproveForm,
        call=lambda user, unlock, data: services.unlock_approve(
            unlock=unlock, approver=user, comment=data["comment"]
        ),
        warning="Once every required approval is in, the unlock is scheduled: its files are "
        "pushed ahead of time and its artifacts flip at the time shown.",
    ),
    "reject": UnlockAction(
        title="Reject",
        done="rejected",
        form=ReasonForm,
        call=lambda user, unlock, data: services.unlock_reject(
            unlock=unlock, approver=user, comment=data["reason"]
        ),
        warning="One rejection cancels the unlock. The reason is kept in the audit log.",
    ),
    "cancel": UnlockAction(
        title="Cancel",
        done="cancelled",
        form=ReasonForm,
        call=lambda user, unlock, data: services.unlock_cancel(
            unlock=unlock, actor=user, reason=data["reason"]
        ),
        warning="Files already pushed stay unreachable; nothing is published.",
        button="Cancel the unlock",
    ),
    "reschedule": UnlockAction(
        title="Reschedule",
        done="rescheduled",
        form=RescheduleForm,
        call=lambda user, unlock, data: services.unlock_reschedule(
            unlock=unlock, actor=user, not_before=data["not_before"]
        ),
        warning="Approvals given for the old time are cleared: the unlock waits for approval "
        "again.",
    ),
}


class ReleaseConsole:
    """The console's views, bound to the Model admin they are mounted under."""

    def __init__(self, model_admin: admin.ModelAdmin[Model]) -> None:
        self.model_admin = model_admin
        self.admin_site = model_admin.admin_site

    def get_urls(self) -> list[URLPattern]:
        def wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
            """Staff only (others go to the admin login), CSRF-protected, and, like the Model
            admin itself, only for staff who may view models; the services then decide each
            change."""

            def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if not self.model_admin.has_view_or_change_permission(request):
                    raise PermissionDenied
                return view(request, *args, **kwargs)

            return self.admin_site.admin_view(checked)

        return [
            path("<int:model_id>/console/", wrap(self.console), name="release_model_console"),
            path(
                "<int:model_id>/console/progress/",
                wrap(self.progress),
                name="release_model_console_progress",
            ),
            path(
                "<int:model_id>/console/schedule/",
                wrap(self.schedule),
                name="release_model_console_schedule",
            ),
            path(
                "<int:model_id>/console/unlocks/<int:unlock_id>/<slug:action>/",
                wrap(self.unlock_action),
                name="release_model_console_unlock",
            ),
            path(
                "<int:model_id>/console/artifacts/<int:artifact_id>/withdraw/",
                wrap(self.withdraw),
                name="release_model_console_withdraw",
            ),
            path(
                "<int:model_id>/console/downloads/",
                wrap(self.downloads),
                name="release_model_console_downloads",
            ),
        ]

    def _context(self, request: HttpRequest, model: Model, title: str, **extra: Any) -> Any:
        return {
            **self.admin_site.each_context(request),
            "opts": Model._meta,
            "model": model,
            "title": title,
            "time_zone": timezone.get_current_timezone_name(),
            "prestage_hours": settings.UNLOCK_PRESTAGE_LEAD_HOURS,
            **extra,
        }

    def _console_url(self, model: Model) -> str:
        return reverse("admin:release_model_console", args=[model.pk])

    def console(self, request: HttpRequest, model_id: int) -> HttpResponse:
        model = get_object_or_404(Model, pk=model_id)
        now = timezone.now()
        versions = _model_versions(model)
        unlocks = list(_model_unlocks(model).order_by("not_before", "pk"))
        rows = _unlock_rows(unlocks, now)
        coming, history = model_timeline(model=model, versions=versions, unlocks=unlocks, now=now)
        since = now.astimezone(UTC).date() - timedelta(days=29)
        downloads_30d = (
            DownloadDaily.objects.filter(model=model, day__gte=since).aggregate(n=Sum("count"))["n"]
            or 0
        )
        return render(
            request,
            "admin/release/console/console.html",
            self._context(
                request,
                model,
                f"Release console: {model}",
                versions=versions,
                live=[row for row in rows if row.unlock.state in LIVE_STATES],
                finished=sorted(
                    (row for row in rows if row.unlock.state not in LIVE_STATES),
                    key=lambda row: row.unlock.not_before,
                    reverse=True,
                ),
                running=any(row.running for row in rows),
                refresh_seconds=REFRESH_SECONDS,
                coming=coming,
                history=history,
                downloads_30d=downloads_30d,
                now=now,
            ),
        )

    def progress(self, request: HttpRequest, model_id: int) -> JsonResponse:
        """What the console's script polls while an unlock runs: each live unlock's state and
        bytes. The page reloads itself when a state changes."""
        model = get_object_or_404(Model, pk=model_id)
        now = timezone.now()
        unlocks = []
        running = False
        for unlock in Unlock.objects.filter(version__model=model, state__in=LIVE_STATES):
            progress = unlock_progress(unlock=unlock)
            running = running or unlock_is_running(unlock, now)
            unlocks.append(
                {
                    "id": unlock.pk,
                    "state": unlock.state,
                    "state_label": unlock.get_state_display(),
                    "files_done": progress.files_done,
                    "files_total": progress.files_total,
                    "bytes_done": progress.bytes_done,
                    "bytes_total": progress.bytes_total,
                    "text": _progress_text(progress),
                }
            )
        return JsonResponse({"running": running, "unlocks": unlocks})

    def schedule(self, request: HttpRequest, model_id: int) -> HttpResponse:
        model = get_object_or_404(Model, pk=model_id)
        initial = {"version": request.GET.get("version"), "target_phase": Phase.GATED.value}
        form = ScheduleForm(
            request.POST if request.method == "POST" else None, model=model, initial=initial
        )
        status = 200
        if request.method == "POST":
            if form.is_valid():
                data = form.cleaned_data
                try:
                    unlock = services.unlock_schedule(
                        actor=_staff_user(request),
                        version=data["version"],
                        artifacts=[a.name for a in data["artifacts"]],
                        target_phase=data["target_phase"],
                        not_before=data["not_before"],
                    )
                except DomainError as error:
                    messages.error(request, f"Not scheduled: {error.message}")
                    status = error.status
                else:
                    messages.success(
                        request,
                        f"{unlock} scheduled; it needs {unlock.required_approvals} approval(s) "
                        "from someone else.",
                    )
                    return redirect(self._console_url(model))
            else:
                status = 400
        return render(
            request,
            "admin/release/console/action.html",
            self._context(
                request,
                model,
                f"Schedule an unlock of {model}",
                crumb="Schedule",
                form=form,
                button="Schedule",
                has_sealed_version=Version.objects.filter(
                    model=model, sealed_at__isnull=False
                ).exists(),
            ),
            status=status,
        )

    def unlock_action(
        self, request: HttpRequest, model_id: int, unlock_id: int, action: str
    ) -> HttpResponse:
        spec = UNLOCK_ACTIONS.get(action)
        if spec is None:
            raise Http404("no such action")
        model = get_object_or_404(Model, pk=model_id)
        unlock = get_object_or_404(_model_unlocks(model), pk=unlock_id)
        initial = {"not_before": unlock.not_before} if action == "reschedule" else None
        form = spec.form(request.POST if request.method == "POST" else None, initial=initial)
        status = 200
        if request.method == "POST":
            if form.is_valid():
                try:
                    spec.call(_staff_user(request), unlock, form.cleaned_data)
                except DomainError as error:
                    messages.error(request, f"{unlock} was not {spec.done}: {error.message}")
                    status = error.status
                else:
                    messages.success(request, f"{unlock} {spec.done}.")
                    return redirect(self._console_url(model))
            else:
                status = 400
        row = _unlock_rows([unlock], timezone.now())[0]  # as it is now, after any change
        return render(
            request,
            "admin/release/console/action.html",
            self._context(
                request,
                model,
                f"{spec.title} unlock #{unlock.pk}",
                crumb=f"{spec.title} unlock #{unlock.pk}",
                form=form,
                rows=[row],
                warning=spec.warning,
                button=spec.button or spec.title,
            ),
            status=status,
        )

    def withdraw(self, request: HttpRequest, model_id: int, artifact_id: int) -> HttpResponse:
        model = get_object_or_404(Model, pk=model_id)
        artifact = get_object_or_404(
            Artifact.objects.select_related("version__model"),
            pk=artifact_id,
            version__model=model,
        )
        form = WithdrawForm(request.POST if request.method == "POST" else None)
        status = 200
        if request.method == "POST":
            if form.is_valid():
                try:
                    services.artifact_withdraw(
                        actor=_staff_user(request),
                        artifact=artifact,
                        reason=form.cleaned_data["reason"],
                    )
                except DomainError as error:
                    messages.error(request, f"{artifact} was not withdrawn: {error.message}")
                    status = error.status
                else:
                    messages.success(request, f"{artifact} is withdrawn.")
                    return redirect(self._console_url(model))
            else:
                status = 400
        live = Unlock.objects.filter(state__in=LIVE_STATES, artifacts=artifact)
        return render(
            request,
            "admin/release/console/action.html",
            self._context(
                request,
                model,
                f"Withdraw {artifact}",
                crumb=f"Withdraw {artifact.version.name}:{artifact.name}",
                form=form,
                artifact=artifact,
                warning=(
                    f"{artifact} is {artifact.phase}. Withdrawing stops serving it to everyone "
                    f"at once, cancels {live.count()} live unlock(s) covering it and suspends "
                    f"every grant of {model} until staff lift the suspension."
                ),
                button="Withdraw",
                danger=True,
            ),
            status=status,
        )

    def downloads(self, request: HttpRequest, model_id: int) -> HttpResponse:
        model = get_object_or_404(Model, pk=model_id)
        names = set(Version.objects.filter(model=model).values_list("name", flat=True))
        names |= set(
            DownloadDaily.objects.filter(model=model).values_list("version", flat=True).distinct()
        )
        form = DownloadsFilterForm(
            request.GET or None, versions=sorted(names), initial={"days": 30}
        )
        version, days = "", 30
        if form.is_valid():
            version, days = form.cleaned_data["version"], form.cleaned_data["days"] or 30
        # Counts are per UTC day.
        end = timezone.now().astimezone(UTC).date()
        start = end - timedelta(days=days - 1)
        rows = DownloadDaily.objects.filter(model=model, day__gte=start, day__lte=end)
        per_version = list(
            rows.values("version").annotate(total=Sum("count")).order_by("-total", "version")
        )
        if version:
            rows = rows.filter(version=version)
        counts: dict[date, int] = {
            row["day"]: row["total"]
            for row in rows.values("day").annotate(total=Sum("count")).order_by("day")
        }
        chart = daily_bar_chart(counts=counts, start=start, end=end)
        return render(
            request,
            "admin/release/console/downloads.html",
            self._context(
                request,
                model,
                f"Downloads of {model}",
                crumb="Downloads",
                form=form,
                chart=chart,
                version=version,
                start=start,
                end=end,
                per_version=per_version,
            ),
        )
