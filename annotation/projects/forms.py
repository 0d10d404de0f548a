"""Forms of the project pages: the new-project wizard's steps and the members page."""

from django import forms

from annotation.models import Role, TaskKind, all_task_kinds, default_criteria
from annotation.projects.services import MAX_CRITERIA, MAX_GUIDELINES_CHARS, MAX_NAME_CHARS

CRITERION_FIELDS = [f"criterion_{number}" for number in range(1, MAX_CRITERIA + 1)]


class ProjectNameForm(forms.Form):
    """Step 1: what the project is called and where it lives."""

    name = forms.CharField(max_length=MAX_NAME_CHARS)
    slug = forms.SlugField(
        max_length=50,
        required=False,
        help_text="In the project's addresses (/p/<slug>/). Left empty, it is made from the name.",
    )
    workspace = forms.ChoiceField(required=False, help_text="It owns the project's models.")
    new_workspace = forms.CharField(
        max_length=MAX_NAME_CHARS,
        required=False,
        label="Or a new workspace",
        help_text="Its name (superusers only); the project is then its first.",
    )

    def __init__(self, *args, workspaces, may_create_workspace: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["workspace"].choices = [("", "—")] + [(w.slug, w.name) for w in workspaces]
        if not may_create_workspace:
            del self.fields["new_workspace"]

    def clean(self):
        data = super().clean()
        if not data.get("workspace") and not data.get("new_workspace"):
            self.add_error("workspace", "Choose the workspace the project belongs to.")
        return data


class ProjectCriteriaForm(forms.Form):
    """Step 2: the kinds of task the project uses and the criteria labelers rate and
    compare on, one per field."""

    task_kinds = forms.MultipleChoiceField(
        choices=TaskKind.choices,
        initial=all_task_kinds,
        widget=forms.CheckboxSelectMultiple,
        label="Kinds of task",
        error_messages={"required": "Choose at least one kind of task."},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        defaults = default_criteria()
        for index, field_name in enumerate(CRITERION_FIELDS):
            self.fields[field_name] = forms.CharField(
                max_length=30,
                required=False,
                label=f"Criterion {index + 1}",
                initial=defaults[index] if index < len(defaults) else "",
            )

    def criteria(self) -> list[str]:
        return [
            self.cleaned_data[name].strip()
            for name in CRITERION_FIELDS
            if self.cleaned_data[name].strip()
        ]

    def clean(self):
        data = super().clean()
        if not self.errors and not self.criteria():
            raise forms.ValidationError("Give at least one criterion.")
        return data


class ProjectGuidelinesForm(forms.Form):
    """Step 3: the labeling guidelines (markdown), optional."""

    guidelines = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12}),
        max_length=MAX_GUIDELINES_CHARS,
        required=False,
        help_text="Markdown. Labelers see them on the label page; you can edit them later.",
    )


class MemberAddForm(forms.Form):
    user = forms.CharField(max_length=254, label="Username or e-mail")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.LABELER)


class MemberRoleForm(forms.Form):
    member = forms.IntegerField()
    role = forms.ChoiceField(choices=Role.choices)


class MemberRemoveForm(forms.Form):
    member = forms.IntegerField()
