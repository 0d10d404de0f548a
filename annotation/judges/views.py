"""Pages and API of the AI judges: thin callers of annotation/judges/services.py, jobs.py,
selectors.py, agreement.py (each judge against the people) and send_to_review.py (AI labels
to the human review queue; the Review page's own form for it is annotation/review/views.py's
review_ai_fill). Seeing needs VIEW_DATA, changing needs MANAGE. A judge's API key is accepted
on create and never rendered or returned."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.judges import agreement, jobs, selectors, send_to_review, services
from annotation.judges.forms import (
    formset_error,
    option_forms,
    principle_formset,
    unknown_options,
)
from annotation.judges.principles import DEFAULT_CONSTITUTION
from annotation.judges.trust import ai_label_plan
from annotation.models import Judge, JudgeJob
from annotation.projects.permissions import (
    MANAGE,
    VIEW_DATA,
    can,
    page_capabilities,
    project_for,
)
from annotation.review.views import parse_ai_fill
from config.api_schema import OBJECT, OBJECT_LIST
from config.celery import QueueUnavailable
from config.errors import ServiceError
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion

# Form fields shown again after a refused submission; the API key never is.
_JUDGE_FORM_FIELDS = ("name", "backend", "model_version", "endpoint_url", "endpoint_model")
_FORM_FIELDS = (
    *_JUDGE_FORM_FIELDS,
    "constitution",
    "chain_of_thought",
    "constitution_name",
    "note",
    "judge",
    "kind",
    "max_requests",
)


def _wants_row(request) -> bool:
    return request.POST.get("action") == "add_row"


def _checked(raw) -> bool:
    return raw in ("on", "true", "1", True)


def _policy_versions(workspace):
    return (
        registry_selectors.visible_to(workspace)
        .filter(kind=ModelVersion.Kind.POLICY)
        .exclude(state=ModelVersion.State.RETIRED)
        .order_by("-created_at", "-id")
    )


def _render_judges(request, project, *, error=None, form=None, status=200, **forms_):
    form = form or {}
    constitutions = selectors.constitutions_latest(workspace=project.workspace)
    context = {
        "project": project,
        "constitutions": constitutions,
        "has_default_constitution": any(
            c.name == DEFAULT_CONSTITUTION["name"] for c in constitutions
        ),
        "judges": selectors.judges_usable(workspace=project.workspace),
        "policy_versions": _policy_versions(project.workspace),
        "kinds": JudgeJob.Kind.choices,
        "backends": Judge.Backend.choices,
        "principle_formset": forms_.get("principle_formset")
        or principle_formset(initial=DEFAULT_CONSTITUTION["principles"]),
        "option_forms": forms_.get("option_forms") or option_forms(),
        "form": {key: form.get(key, "") for key in _FORM_FIELDS},
        "error": error,
        "ai_plan": ai_label_plan(project=project),
        **_jobs_context(request, project),
    }
    return render(request, "annotation/judges/judges.html", context, status=status)


def _jobs_context(request, project) -> dict:
    """What the jobs table needs: the jobs with their place in line and time left."""
    job_list = selectors.with_outlook(selectors.judge_jobs_for(project=project))
    return {
        "project": project,
        "jobs": job_list,
        "any_active": any(job.is_active for job in job_list),
        **page_capabilities(user=request.user, project=project),
    }


@login_required
@require_GET
def judges_page(request, slug):
    """Constitutions, judges and this project's judge jobs; forms for admins."""
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    jobs.judge_jobs_fail_stale(project=project)
    if request.htmx and request.htmx.target == "judge-jobs-table":  # the table's polling
        return render(
            request, "annotation/judges/judges.html#jobs-table", _jobs_context(request, project)
        )
    return _render_judges(request, project)


@login_required
@require_POST
def constitution_create(request, slug):
    """Version 1 of a new constitution from the principle rows (or the rows again, with a
    blank one added, when the admin asked for another row)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    formset = principle_formset(request.POST, add_row=_wants_row(request))
    if _wants_row(request):
        return _render_judges(request, project, form=request.POST, principle_formset=formset)
    try:
        if not formset.is_valid():
            raise ServiceError(formset_error(formset))
        constitution = services.constitution_create(
            workspace=project.workspace,
            name=request.POST.get("constitution_name", ""),
            principles=formset.principles(),
            note=request.POST.get("note", ""),
            user=request.user,
        )
    except ServiceError as refused:
        return _render_judges(
            request,
            project,
            error=refused.message,
            form=request.POST,
            status=refused.status_code,
            principle_formset=formset,
        )
    return redirect("ai_constitution", slug=project.slug, constitution_id=constitution.pk)


@login_required
@require_POST
def constitution_default(request, slug):
    """Add the shipped default constitution (version 1) if it is missing."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    constitution = services.ensure_default_constitution()
    return redirect("ai_constitution", slug=project.slug, constitution_id=constitution.pk)


@login_required
@require_http_methods(["GET", "POST"])
def constitution_page(request, slug, constitution_id):
    """One version's principles, the other versions of its name, and (admins) an edit form
    that saves a new version."""
    capability = MANAGE if request.method == "POST" else VIEW_DATA
    project = project_for(user=request.user, slug=slug, capability=capability)
    try:
        constitution = selectors.constitution_for(
            workspace=project.workspace, constitution_id=constitution_id
        )
    except ServiceError as missing:
        return render(
            request,
            "annotation/judges/constitution.html",
            {
                "project": project,
                "missing": missing.message,
                **page_capabilities(user=request.user, project=project),
            },
            status=404,
        )
    error, status = None, 200
    formset = principle_formset(initial=constitution.principles)
    if request.method == "POST":
        formset = principle_formset(request.POST, add_row=_wants_row(request))
        try:
            if not _wants_row(request):
                new = _constitution_saved(request, project, constitution, formset)
                return redirect("ai_constitution", slug=project.slug, constitution_id=new.pk)
        except ServiceError as refused:
            error, status = refused.message, refused.status_code
    context = {
        "project": project,
        "constitution": constitution,
        "versions": selectors.constitution_versions(
            workspace=project.workspace, name=constitution.name
        ),
        "principle_formset": formset,
        "note": request.POST.get("note", "") if request.method == "POST" else "",
        "error": error,
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/judges/constitution.html", context, status=status)


def _constitution_saved(request, project, constitution, formset):
    """The new version the rows make, or ServiceError with the first problem."""
    if not formset.is_valid():
        raise ServiceError(formset_error(formset))
    return services.constitution_edit(
        workspace=project.workspace,
        constitution=constitution,
        principles=formset.principles(),
        note=request.POST.get("note", ""),
        user=request.user,
    )


@login_required
@require_POST
def judge_create(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    post = request.POST
    try:
        services.judge_create(
            workspace=project.workspace,
            name=post.get("name", ""),
            backend=post.get("backend", ""),
            constitution=post.get("constitution"),
            model_version=post.get("model_version") or None,
            endpoint_url=post.get("endpoint_url", ""),
            endpoint_model=post.get("endpoint_model", ""),
            api_key=post.get("api_key", ""),
            chain_of_thought=_checked(post.get("chain_of_thought")),
            user=request.user,
        )
    except ServiceError as refused:
        form = {key: post.get(key, "") for key in (*_JUDGE_FORM_FIELDS, "constitution")}
        return _render_judges(
            request, project, error=refused.message, form=form, status=refused.status_code
        )
    return redirect("ai_judges", slug=project.slug)


def _job_options(post, *, kind: str, forms_) -> dict:
    """The posted kind's options from its fields, or ServiceError naming the bad one."""
    form = next((form for value, _, form in forms_ if value == kind), None)
    if form is None:
        return {}  # an unknown kind: the service names the kinds
    unknown = unknown_options(post, kind=kind, form=form)
    if unknown:
        raise ServiceError(
            f"Unknown option {unknown[0]!r} for {kind}; use the fields {', '.join(form.fields)}."
        )
    if not form.is_valid():
        field, messages = next(iter(form.errors.items()))
        label = form.fields[field].label if field in form.fields else "Options"
        raise ServiceError(f"{label}: {messages[0]}")
    return form.options()


@login_required
@require_POST
def judge_job_start(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    post = request.POST
    kind = post.get("kind", "")
    forms_ = option_forms(post, kind=kind)
    try:
        job = jobs.judge_job_start(
            project=project,
            judge=selectors.judge_for(workspace=project.workspace, judge_id=post.get("judge")),
            kind=kind,
            options=_job_options(post, kind=kind, forms_=forms_),
            max_requests=post.get("max_requests", "200"),
            user=request.user,
        )
    except ServiceError as refused:
        form = {key: post.get(key, "") for key in ("judge", "kind", "max_requests")}
        return _render_judges(
            request,
            project,
            error=refused.message,
            form=form,
            status=refused.status_code,
            option_forms=forms_,
        )
    except QueueUnavailable as down:
        return _render_judges(request, project, error=str(down), status=503)
    return redirect("ai_judge_job", slug=project.slug, job_id=job.pk)


@login_required
@require_POST
def judge_share(request, slug, judge_id):
    """Share one of the workspace's judges with another workspace, or stop (``unshare``)."""
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    try:
        judge = selectors.judge_owned(workspace=project.workspace, judge_id=judge_id)
        services.judge_share(
            judge=judge,
            workspace_slug=request.POST.get("workspace", ""),
            share=request.POST.get("action") != "unshare",
        )
    except ServiceError as refused:
        return _render_judges(request, project, error=refused.message, status=refused.status_code)
    return redirect("ai_judges", slug=project.slug)


def _job_or_404(project, job_id) -> JudgeJob:
    try:
        return selectors.judge_job_for(project=project, job_id=job_id)
    except ServiceError as missing:
        raise Http404(missing.message) from None


def _render_job(request, project, job, *, error=None, status=200):
    template = "annotation/judges/job.html"
    if request.htmx:
        template += "#status"
    context = {
        "project": project,
        "job": job,
        "options_json": json.dumps(job.options),
        "log_lines": job.log.splitlines()[-40:],
        "judgments": selectors.judge_job_judgments(job=job),
        "outlook": selectors.judge_job_outlook(job),
        "error": error,
        **page_capabilities(user=request.user, project=project),
    }
    if not request.htmx:  # the polled status fragment leaves the agreement out
        context["ai_plan"] = ai_label_plan(project=project).of_judge(job.judge_id)
    return render(request, template, context, status=status)


@login_required
@require_GET
def judge_job_page(request, slug, job_id):
    """A job's progress (polled by htmx while it runs), log tail, error and latest items."""
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    jobs.judge_jobs_fail_stale(project=project)
    return _render_job(request, project, _job_or_404(project, job_id))


@login_required
@require_POST
def judge_job_cancel(request, slug, job_id):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    job = _job_or_404(project, job_id)
    try:
        job = jobs.judge_job_cancel(job=job)
    except ServiceError as refused:
        return _render_job(request, project, job, error=refused.message, status=refused.status_code)
    if request.htmx:
        return _render_job(request, project, _job_or_404(project, job.pk))
    return redirect("ai_judge_job", slug=project.slug, job_id=job.pk)


# --- API ------------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(operation_id="constitutions_list", responses={200: OBJECT_LIST}),
    post=extend_schema(
        operation_id="constitution_create",
        request=inline_serializer(
            "ConstitutionCreate",
            {
                "name": drf_serializers.CharField(max_length=100),
                "principles": drf_serializers.ListField(child=drf_serializers.DictField()),
                "note": drf_serializers.CharField(required=False, allow_blank=True),
            },
        ),
        responses={201: OBJECT},
    ),
)
class ConstitutionListApi(APIView):
    """GET the latest version of each constitution; POST ``{name, principles, note}``."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        return Response(
            [
                selectors.constitution_payload(c)
                for c in selectors.constitutions_latest(workspace=project.workspace)
            ]
        )

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = request.data
        constitution = services.constitution_create(
            workspace=project.workspace,
            name=data.get("name", ""),
            principles=data.get("principles"),
            note=data.get("note", ""),
            user=request.user,
        )
        return Response(selectors.constitution_payload(constitution), status=201)


@extend_schema_view(
    get=extend_schema(operation_id="constitution_detail", responses={200: OBJECT}),
    post=extend_schema(
        operation_id="constitution_edit",
        request=inline_serializer(
            "ConstitutionEdit",
            {
                "principles": drf_serializers.ListField(child=drf_serializers.DictField()),
                "note": drf_serializers.CharField(required=False, allow_blank=True),
            },
        ),
        responses={201: OBJECT},
    ),
)
class ConstitutionDetailApi(APIView):
    """GET one version; POST ``{principles, note}`` saves a new version of its name."""

    def get(self, request, slug, constitution_id):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        constitution = selectors.constitution_for(
            workspace=project.workspace, constitution_id=constitution_id
        )
        return Response(selectors.constitution_payload(constitution))

    def post(self, request, slug, constitution_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        constitution = selectors.constitution_for(
            workspace=project.workspace, constitution_id=constitution_id
        )
        new = services.constitution_edit(
            workspace=project.workspace,
            constitution=constitution,
            principles=request.data.get("principles"),
            note=request.data.get("note", ""),
            user=request.user,
        )
        return Response(selectors.constitution_payload(new), status=201)


@extend_schema_view(
    get=extend_schema(operation_id="judges_list", responses={200: OBJECT_LIST}),
    post=extend_schema(
        operation_id="judge_create",
        request=inline_serializer(
            "JudgeCreate",
            {
                "name": drf_serializers.CharField(),
                "backend": drf_serializers.CharField(),
                "constitution": drf_serializers.IntegerField(),
                "model_version": drf_serializers.IntegerField(required=False, allow_null=True),
                "endpoint_url": drf_serializers.CharField(required=False, allow_blank=True),
                "endpoint_model": drf_serializers.CharField(required=False, allow_blank=True),
                "api_key": drf_serializers.CharField(required=False, allow_blank=True),
                "chain_of_thought": drf_serializers.BooleanField(required=False),
            },
        ),
        responses={201: OBJECT},
    ),
)
class JudgeListApi(APIView):
    """GET the judges (never their keys); POST creates one."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        workspace = project.workspace
        return Response(
            [
                selectors.judge_payload(judge, workspace=workspace)
                for judge in selectors.judges_usable(workspace=workspace).prefetch_related(
                    "shared_with"
                )
            ]
        )

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = request.data
        judge = services.judge_create(
            workspace=project.workspace,
            name=data.get("name", ""),
            backend=data.get("backend", ""),
            constitution=data.get("constitution"),
            model_version=data.get("model_version"),
            endpoint_url=data.get("endpoint_url", ""),
            endpoint_model=data.get("endpoint_model", ""),
            api_key=data.get("api_key", ""),
            chain_of_thought=_checked(data.get("chain_of_thought", False)),
            user=request.user,
        )
        return Response(selectors.judge_payload(judge, workspace=project.workspace), status=201)


@extend_schema_view(
    post=extend_schema(
        operation_id="judge_share",
        request=inline_serializer(
            "JudgeShare",
            {
                "workspace": drf_serializers.SlugField(),
                "share": drf_serializers.BooleanField(required=False),
            },
        ),
        responses={200: OBJECT},
    ),
)
class JudgeShareApi(APIView):
    """POST ``{"workspace": slug, "share": true|false}``: let another workspace's projects
    run jobs with this judge (on this workspace's endpoint and key), or stop."""

    def post(self, request, slug, judge_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        judge = selectors.judge_owned(workspace=project.workspace, judge_id=judge_id)
        share = request.data.get("share", True)
        if not isinstance(share, bool):
            raise ServiceError("share must be true or false.")
        services.judge_share(
            judge=judge, workspace_slug=request.data.get("workspace", ""), share=share
        )
        return Response(selectors.judge_payload(judge, workspace=project.workspace))


@extend_schema_view(
    get=extend_schema(operation_id="judge_jobs_list", responses={200: OBJECT_LIST}),
    post=extend_schema(
        operation_id="judge_job_start",
        request=inline_serializer(
            "JudgeJobStart",
            {
                "judge": drf_serializers.IntegerField(),
                "kind": drf_serializers.CharField(),
                "options": drf_serializers.DictField(required=False),
                "max_requests": drf_serializers.IntegerField(required=False),
            },
        ),
        responses={202: OBJECT},
    ),
)
class JudgeJobListApi(APIView):
    """GET the project's judge jobs; POST ``{judge, kind, options, max_requests}`` starts one."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        jobs.judge_jobs_fail_stale(project=project)
        return Response(
            [selectors.judge_job_payload(j) for j in selectors.judge_jobs_for(project=project)]
        )

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        data = request.data
        job = jobs.judge_job_start(
            project=project,
            judge=selectors.judge_for(workspace=project.workspace, judge_id=data.get("judge")),
            kind=data.get("kind", ""),
            options=data.get("options") or {},
            max_requests=data.get("max_requests", 200),
            user=request.user,
        )
        return Response(selectors.judge_job_payload(job), status=202)


@extend_schema_view(
    get=extend_schema(operation_id="judge_job_detail", responses={200: OBJECT}),
)
class JudgeJobDetailApi(APIView):
    def get(self, request, slug, job_id):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        jobs.judge_jobs_fail_stale(project=project)
        job = selectors.judge_job_for(project=project, job_id=job_id)
        return Response(selectors.judge_job_payload(job))


@extend_schema_view(
    post=extend_schema(operation_id="judge_job_cancel", request=None, responses={202: OBJECT}),
)
class JudgeJobCancelApi(APIView):
    def post(self, request, slug, job_id):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        job = jobs.judge_job_cancel(job=selectors.judge_job_for(project=project, job_id=job_id))
        return Response(selectors.judge_job_payload(job), status=202)


@login_required
@require_GET
def judges_agreement_page(request, slug):
    """Researchers and admins: each judge and constitution version against the people."""
    project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
    context = {
        "project": project,
        "can_manage": can(user=request.user, project=project, capability=MANAGE),
        "can_view_data": True,
        "rows": agreement.judge_agreement(project=project),
    }
    return render(request, "annotation/judges/agreement.html", context)


@extend_schema_view(
    get=extend_schema(operation_id="judges_agreement", responses={200: OBJECT}),
)
class JudgesAgreementApi(APIView):
    """GET: one object per (judge, constitution version): judgments, compared, pairs,
    agreed, accuracy, kappa, position_bias_rate, mean_confidence, left_out."""

    def get(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=VIEW_DATA)
        return Response(
            {"project": project.slug, "judges": agreement.judge_agreement(project=project)}
        )


@extend_schema_view(
    post=extend_schema(
        operation_id="review_ai_fill",
        request=inline_serializer(
            "ReviewAiFill",
            {
                "mode": drf_serializers.ChoiceField(
                    choices=["all", "sample", "unsure", "disagree"]
                ),
                "rate": drf_serializers.FloatField(required=False),
                "threshold": drf_serializers.FloatField(required=False),
                "judge": drf_serializers.IntegerField(required=False, allow_null=True),
                "seed": drf_serializers.IntegerField(required=False),
            },
        ),
        responses={200: OBJECT},
    ),
)
class ReviewAiFillApi(APIView):
    """POST {mode: all|sample|unsure|disagree, rate, threshold, judge}: flag AI judgments
    for human review; answers how many were newly sent and how many now wait."""

    def post(self, request, slug):
        project = project_for(user=request.user, slug=slug, capability=MANAGE)
        fields = parse_ai_fill(request.data)
        flagged = send_to_review.ai_review_queue_fill(project=project, **fields)
        waiting = send_to_review.ai_review_waiting(project=project)
        return Response({"flagged": flagged, "waiting": waiting, **fields})
