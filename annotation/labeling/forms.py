from django import forms

from annotation.models import AiLabelPolicy, CandidatePolicy, TaskKind
from annotation.projects.services import MAX_AI_MIN_COMPARED
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion


class ProjectSettingsForm(forms.Form):
    overlap_target = forms.IntegerField(min_value=1, max_value=100, help_text="Labelers per task.")
    pending_limit = forms.IntegerField(
        min_value=2, max_value=100, help_text="Unjudged tasks a labeler may hold (2+ to prefetch)."
    )
    gold_rate = forms.FloatField(min_value=0, max_value=1, help_text="Share of gold items.")
    skip_flag_threshold = forms.IntegerField(
        min_value=1, max_value=100, help_text="Skips before a task is flagged."
    )
    criteria = forms.CharField(help_text="Comma-separated, e.g. helpful, harmless, honest.")
    # Left out of a post (an older script), the kinds stay as they are.
    task_kinds = forms.MultipleChoiceField(
        choices=TaskKind.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Kinds of task",
        help_text="Only these are created; Chat and Arena need theirs. Tasks already made stay.",
    )
    candidate_policy = forms.ChoiceField(
        choices=CandidatePolicy.choices,
        help_text="Which model versions' replies are paired into comparison tasks after a "
        "generation job. Active learning needs a reward model (round-robin until then).",
    )

    # Left out of a post (an older script), the AI label settings keep their values.
    ai_labels = forms.ChoiceField(
        choices=AiLabelPolicy.choices,
        required=False,
        label="AI labels",
        help_text="What exports and training runs take of AI judges' labels when nobody "
        "chooses: none, only those of trusted judges (below), or all.",
    )
    ai_min_kappa = forms.FloatField(
        min_value=-1,
        max_value=1,
        required=False,
        label="Trusted judges: minimum kappa",
        help_text="Cohen's kappa of a judge against the human majority (Judges agreement).",
    )
    ai_min_compared = forms.IntegerField(
        min_value=1,
        max_value=MAX_AI_MIN_COMPARED,
        required=False,
        label="Trusted judges: minimum items",
        help_text="Items a judge must have compared with people before it can be trusted.",
    )

    def clean_criteria(self):
        return [name.strip() for name in self.cleaned_data["criteria"].split(",") if name.strip()]

    def settings(self) -> dict:
        """The fields to change: the AI label settings only when given."""
        optional = ("ai_labels", "ai_min_kappa", "ai_min_compared", "task_kinds")
        return {
            name: value
            for name, value in self.cleaned_data.items()
            if name not in optional or value not in (None, "", [])
        }


# The page says in its own fields what the kinds' API help says in JSON options.
PAGE_HELP = {
    "demonstration": "Demonstrations. Mode write: labelers write the ideal reply to every "
    'prompt (a prompt with "context" turns in its metadata becomes a multi-turn task). Mode '
    "edit: labelers edit each reply of the model version picked below into an ideal one.",
}


class VersionChoiceField(forms.ModelChoiceField):
    """A model version by its name and its state in the project, never its id."""

    def label_from_instance(self, obj) -> str:
        state = getattr(obj, "project_state", obj.state)
        return f"{obj.name} ({ModelVersion.State(state).label.lower()})"


class TaskCreateForm(forms.Form):
    kind = forms.ChoiceField(choices=[])
    priority = forms.IntegerField(min_value=-100, max_value=100, initial=0, required=False)
    k = forms.IntegerField(
        min_value=3, max_value=9, required=False, help_text="Ranking: responses per task."
    )
    mode = forms.ChoiceField(
        choices=[("write", "write a reply"), ("edit", "edit a model's reply")],
        required=False,
        help_text="Demonstration: write from scratch or edit a model's reply.",
    )
    model_version = VersionChoiceField(
        queryset=ModelVersion.objects.none(),
        required=False,
        empty_label="(pick a model version)",
        help_text="Demonstration edits: the model whose replies labelers improve.",
        error_messages={
            "invalid_choice": "That model version is not one this project's workspace may "
            "use: pick one from the list."
        },
    )

    def __init__(self, *args, kinds: dict, project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [
            (kind, kind) for kind, spec in sorted(kinds.items()) if spec.create_tasks
        ]
        self.kind_help = {kind: spec.create_help for kind, spec in kinds.items()}
        self.kind_help.update({kind: PAGE_HELP[kind] for kind in kinds if kind in PAGE_HELP})
        self.fields["model_version"].queryset = registry_selectors.usable_policies(project=project)

    def clean(self):
        data = super().clean()
        wants_edits = data.get("kind") == "demonstration" and data.get("mode") == "edit"
        if wants_edits and not data.get("model_version") and "model_version" not in self.errors:
            self.add_error("model_version", "Edit mode needs a model version: pick one.")
        return data

    def options(self) -> dict:
        extra = ("k", "mode")
        options = {name: self.cleaned_data[name] for name in extra if self.cleaned_data.get(name)}
        if self.cleaned_data.get("model_version"):
            options["model_version"] = self.cleaned_data["model_version"].pk
        return options
