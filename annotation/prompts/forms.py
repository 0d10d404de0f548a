"""The prompt import form."""

from django import forms

MAX_IMPORT_BYTES = 20 * 1024 * 1024


class PromptImportForm(forms.Form):
    file = forms.FileField(
        help_text="JSONL (one object per line with a 'prompt' or 'text' field) or CSV with a "
        "'prompt' or 'text' column. Other fields are kept as metadata; 'id' as external id."
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise forms.ValidationError("The file is larger than 20 MB; split it.")
        return upload
