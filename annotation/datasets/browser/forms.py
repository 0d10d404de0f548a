"""The browser's filters, read from the query string (the page's GET form and the API)."""

from django import forms

from annotation.models import Judgment, TaskKind

TABS = ("judgments", "prompts", "responses")
AGREEMENTS = (("", "Any"), ("disputed", "Disputed"), ("agreed", "Agreed"))


class BrowseForm(forms.Form):
    tab = forms.ChoiceField(choices=[(tab, tab.title()) for tab in TABS], required=False)
    q = forms.CharField(label="Text contains", max_length=200, required=False)
    source = forms.ChoiceField(
        choices=[("", "Any"), *Judgment.Source.choices], required=False, label="Source"
    )
    import_name = forms.CharField(label="Import (source name)", max_length=100, required=False)
    labeler = forms.CharField(label="Labeler (username)", max_length=150, required=False)
    model_version = forms.CharField(label="Model version (name)", max_length=200, required=False)
    date_from = forms.DateField(label="From (YYYY-MM-DD)", required=False)
    date_to = forms.DateField(label="To (YYYY-MM-DD)", required=False)
    kind = forms.ChoiceField(choices=[("", "Any"), *TaskKind.choices], required=False)
    flagged = forms.BooleanField(label="Flagged only", required=False)
    agreement = forms.ChoiceField(choices=AGREEMENTS, required=False)
    deleted = forms.BooleanField(label="Show deleted", required=False)
    after = forms.IntegerField(
        min_value=1, max_value=2**63 - 1, required=False, widget=forms.HiddenInput
    )

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The date range ends before it starts.")
        cleaned["tab"] = cleaned.get("tab") or "judgments"
        return cleaned

    def problem(self) -> str:
        """The errors as one sentence, for a 400 answer."""
        parts = []
        for name, errors in self.errors.items():
            label = "Filters" if name == "__all__" else name
            parts.append(f"{label}: {' '.join(errors)}")
        return "Bad filter. " + " ".join(parts)


class DeleteForm(forms.Form):
    reason = forms.CharField(max_length=500, strip=True)
