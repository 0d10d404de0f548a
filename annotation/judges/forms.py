"""The judges pages' forms: a job's options as one field per option (by job kind), and a
constitution's principles as a formset (one row per principle; add, remove, reorder).
They only parse what was typed; jobs.py and principles.py check it again for the API."""

from django import forms

from annotation.judges import pairwise, revision, self_instruct
from annotation.judges.jobs import DEFAULT_PAIRWISE_LIMIT, MAX_LIMIT
from annotation.judges.principles import (
    MAX_NAME_CHARS,
    MAX_PRINCIPLES,
    MAX_TEXT_CHARS,
    PRINCIPLE_FIELDS,
)
from annotation.models import JudgeJob

YES_NO = [("", "default"), ("yes", "yes"), ("no", "no")]


def _whole(label, *, low, high, default, help_text=""):
    return forms.IntegerField(
        label=label,
        min_value=low,
        max_value=high,
        required=False,
        help_text=f"{low} to {high}, default {default}. {help_text}".strip(),
        widget=forms.NumberInput(attrs={"placeholder": default}),
    )


def _number(label, *, low, high, default, step="0.05"):
    return forms.FloatField(
        label=label,
        min_value=low,
        max_value=high,
        required=False,
        help_text=f"{low} to {high}, default {default}.",
        widget=forms.NumberInput(attrs={"placeholder": default, "step": step}),
    )


def _ids(label, help_text):
    return forms.CharField(
        label=label, required=False, help_text=help_text, widget=forms.TextInput()
    )


class JobOptionsForm(forms.Form):
    """Blank fields are left out of the options, so the job's own defaults apply."""

    id_fields: tuple[str, ...] = ()

    def _clean_ids(self, name):
        raw = self.cleaned_data.get(name, "")
        parts = [part for part in raw.replace(",", " ").split() if part]
        if not all(part.isdigit() for part in parts):
            raise forms.ValidationError("List ids as whole numbers, separated by commas.")
        return [int(part) for part in parts] or None

    def clean(self):
        cleaned = super().clean()
        for name in self.id_fields:
            if name in cleaned:
                try:
                    cleaned[name] = self._clean_ids(name)
                except forms.ValidationError as error:
                    self.add_error(name, error)
        return cleaned

    def options(self) -> dict:
        chosen = {}
        for name, value in self.cleaned_data.items():
            if value in (None, "", []):
                continue
            chosen[name] = (value == "yes") if value in ("yes", "no") else value
        return chosen


class PairwiseOptionsForm(JobOptionsForm):
    id_fields = ("task_ids",)
    limit = _whole("Most pairs", low=1, high=MAX_LIMIT, default=DEFAULT_PAIRWISE_LIMIT)
    task_ids = _ids("Only these tasks", "Comparison task ids, e.g. 12, 15; blank for any.")
    unsure_threshold = _number(
        "Unsure below", low=0, high=0.5, default=pairwise.DEFAULT_UNSURE_THRESHOLD
    )
    critique_max_tokens = _whole(
        "Critique tokens", low=1, high=1024, default=pairwise.CRITIQUE_MAX_TOKENS
    )


class RevisionOptionsForm(JobOptionsForm):
    id_fields = ("response_ids",)
    limit = _whole("Most responses", low=1, high=revision.MAX_LIMIT, default=revision.DEFAULT_LIMIT)
    rounds = _whole("Rounds", low=1, high=revision.MAX_ROUNDS, default=1)
    max_tokens = _whole("Tokens per reply", low=16, high=2048, default=256)
    temperature = _number("Temperature", low=0, high=2, default=0.0)
    only_model_responses = forms.ChoiceField(
        label="Only model responses",
        choices=YES_NO,
        required=False,
        help_text="Default yes: imported human replies are left alone.",
    )
    response_ids = _ids("Only these responses", "Response ids, e.g. 3, 8; blank for any.")


class SelfInstructOptionsForm(JobOptionsForm):
    count = _whole(
        "New prompts", low=1, high=self_instruct.MAX_COUNT, default=self_instruct.DEFAULT_COUNT
    )
    per_request = _whole("Prompts per request", low=1, high=20, default=4)
    examples = _whole("Examples shown", low=1, high=10, default=4)
    max_similarity = _number("Most similarity", low=0.01, high=1, default=0.7)
    temperature = _number("Temperature", low=0, high=2, default=0.7)
    max_tokens = _whole("Tokens per request", low=16, high=2048, default=384)
    seeds = forms.CharField(
        label="Seed prompts",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=f"One per line, at most {self_instruct.MAX_SEEDS}; blank: the project's prompts.",
    )

    def clean_seeds(self):
        lines = [line.strip() for line in self.cleaned_data["seeds"].splitlines()]
        return [line for line in lines if line] or None


OPTION_FORMS = {
    JudgeJob.Kind.PAIRWISE: PairwiseOptionsForm,
    JudgeJob.Kind.REVISION: RevisionOptionsForm,
    JudgeJob.Kind.SELF_INSTRUCT: SelfInstructOptionsForm,
}


def option_forms(data=None, *, kind: str = "") -> list[tuple[str, str, forms.Form]]:
    """(kind, label, form) for every job kind; only the posted kind's form is bound."""
    return [
        (value, label, OPTION_FORMS[value](data if value == kind else None, prefix=value))
        for value, label in JudgeJob.Kind.choices
    ]


def unknown_options(data, *, kind: str, form: forms.Form) -> list[str]:
    """Posted fields of the kind's options that the form does not know (a stale page or a
    script), and the old JSON ``options`` field, which the page no longer takes."""
    start = f"{kind}-"
    known = set(form.fields)
    names = [key[len(start) :] for key in data if key.startswith(start)]
    unknown = sorted(name for name in names if name not in known)
    return (["options"] if "options" in data else []) + unknown


# --- principles ------------------------------------------------------------------------


def _principle_text(label):
    return forms.CharField(
        label=label,
        max_length=MAX_TEXT_CHARS,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": f"Write the {label.lower()}."},
    )


class PrincipleForm(forms.Form):
    name = forms.CharField(
        max_length=MAX_NAME_CHARS, error_messages={"required": "Give the principle a name."}
    )
    critique_request = _principle_text("Critique request")
    revision_request = _principle_text("Revision request")
    comparison_question = _principle_text("Comparison question")


class BasePrincipleFormSet(forms.BaseFormSet):
    def clean(self):
        if any(self.errors):
            return
        names = [
            form.cleaned_data["name"]
            for form in self.forms
            if form.cleaned_data and not self._should_delete_form(form)
        ]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise forms.ValidationError(
                f"Each principle needs its own name; {twice[0]!r} is used twice."
            )
        if not names:
            raise forms.ValidationError("A constitution needs at least one principle.")

    def principles(self) -> list[dict]:
        """The kept rows in the order asked for, as the service takes them."""
        return [
            {field: form.cleaned_data[field] for field in PRINCIPLE_FIELDS}
            for form in self.ordered_forms
            if form.cleaned_data
        ]


PrincipleFormSet = forms.formset_factory(
    PrincipleForm,
    formset=BasePrincipleFormSet,
    extra=0,
    can_delete=True,
    can_order=True,
    max_num=MAX_PRINCIPLES,
    validate_max=True,
    absolute_max=MAX_PRINCIPLES,
)

PREFIX = "principles"


def principle_formset(data=None, *, initial=None, add_row=False):
    """The formset of posted rows (plus a blank one when the admin asked to add a row), or
    of ``initial`` principles for a first render."""
    if data is not None and add_row:
        data = data.copy()
        total = f"{PREFIX}-TOTAL_FORMS"
        data[total] = str(int(data.get(total) or 0) + 1)
    if data is None and initial is not None:
        initial = [{field: item.get(field, "") for field in PRINCIPLE_FIELDS} for item in initial]
    return PrincipleFormSet(data, initial=initial, prefix=PREFIX)


def formset_error(formset) -> str:
    """One clear sentence for the page's error line: the first problem, with its row."""
    if formset.management_form.errors:
        return "The principles form is incomplete; reload the page and try again."
    for number, errors in enumerate(formset.errors, start=1):
        for field, messages in errors.items():
            label = field.replace("_", " ") if field != "__all__" else ""
            return f"Principle {number}: {label + ': ' if label else ''}{messages[0]}"
    return " ".join(formset.non_form_errors())
