"""Pages of the prompt pool: thin callers of annotation/prompts/services.py and selectors.py."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotation.projects import selectors as project_selectors
from annotation.projects.permissions import MANAGE, page_capabilities, project_for
from annotation.prompts import selectors, services
from annotation.prompts.forms import PromptImportForm
from config.errors import ServiceError


def _import_message(batch) -> str:
    if batch.prompt_count == 0:
        return (
            f"Nothing new in {batch.file_name}: all {batch.existing_count} prompts were "
            "already in the project."
        )
    return (
        f"Imported {batch.prompt_count} new prompts from {batch.file_name}; "
        f"{batch.existing_count} were already in the project."
    )


@login_required
@require_http_methods(["GET", "POST"])
def prompts(request, slug):
    project = project_for(user=request.user, slug=slug, capability=MANAGE)
    form = PromptImportForm()
    status = 200
    if request.method == "POST":
        form = PromptImportForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                batch = services.prompts_import(
                    project=project, file_name=upload.name, content=upload.read(), user=request.user
                )
            except ServiceError as error:
                form.add_error("file", error.message)
            else:
                messages.success(request, _import_message(batch))
                return redirect("prompts", slug=project.slug)
        status = 400
    context = {
        "project": project,
        "form": form,
        "prompts": selectors.prompts_page(project=project),
        "imports": selectors.prompt_imports(project=project),
        "overview": project_selectors.project_overview(project=project),
        **page_capabilities(user=request.user, project=project),
    }
    return render(request, "annotation/prompts/prompts.html", context, status=status)
