"""Forms of the data pages: a dataset file to import, its confirmation, and a version's
recipe. They check the shape of the input; the services say what is wrong with its content."""

from django import forms

from annotation.datasets.formats.readers import FORMATS
from annotation.datasets.versions import AI_CHOICES, DEDUPE_CHOICES, KINDS, PII_CHOICES
from annotation.models import Project, PromptImport


def _choices(values) -> list[tuple[str, str]]:
    return [(value, value) for value in values]


class DataImportForm(forms.Form):
    file = forms.FileField(
        help_text="JSON Lines (.jsonl, .json, .ndjson), CSV or Parquet: TRL, HH-RLHF, "
        "UltraFeedback, OASST, Stack Exchange, SFT or prompt records."
    )
    format = forms.ChoiceField(choices=_choices(FORMATS), initial="auto")
    source = forms.CharField(
        max_length=100,
        required=False,
        help_text="The dataset's name, which versions select it by (default: the file's name).",
    )


class DataImportConfirmForm(forms.Form):
    token = forms.RegexField(regex=r"^[0-9a-f]{32}$", max_length=32)
    format = forms.ChoiceField(choices=_choices(FORMATS))
    source = forms.CharField(max_length=100, required=False)


def source_choices(project: Project) -> list[tuple[str, str]]:
    imported = (
        PromptImport.objects.filter(project=project)
        .exclude(source="")
        .order_by("source")
        .values_list("source", flat=True)
        .distinct()
    )
    return [
        ("labelers", "labelers (this project's people)"),
        ("ai", "ai (AI judges)"),
        *_choices(imported),
    ]


class VersionForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Lower-case letters, digits, '-' or '_'.")
    kind = forms.ChoiceField(choices=_choices(KINDS))
    sources = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every source.",
    )
    ai = forms.ChoiceField(
        label="AI labels",
        choices=[("", "the project's setting"), *_choices(AI_CHOICES)],
        required=False,
    )
    pii = forms.ChoiceField(
        label="Personal data",
        choices=_choices(PII_CHOICES),
        initial="scrub",
        help_text="scrub: typed placeholders; drop: remove the row; keep: admins only.",
    )
    dedupe = forms.ChoiceField(choices=_choices(DEDUPE_CHOICES), initial="exact")
    languages = forms.CharField(
        required=False, max_length=200, help_text="Language codes to keep, e.g. en,de."
    )
    quality = forms.CharField(
        required=False,
        max_length=300,
        help_text="e.g. min_chars=10,max_chars=4000,max_repetition=0.3,top=0.5",
    )
    mix = forms.CharField(
        required=False, max_length=300, help_text="Other versions: NAME@N:WEIGHT,... e.g. hh@2:0.5"
    )
    licence = forms.CharField(required=False, max_length=100)

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["sources"].choices = source_choices(project)

    def recipe_fields(self) -> dict:
        """The cleaned fields as ``parse_recipe`` takes them."""
        data = self.cleaned_data
        return {
            "kind": data["kind"],
            "sources": data["sources"],
            "ai": data["ai"] or None,
            "pii": data["pii"],
            "dedupe": data["dedupe"],
            "languages": data["languages"],
            "quality": data["quality"],
            "mix": data["mix"],
            "licence": data["licence"],
        }
