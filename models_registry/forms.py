from django import forms

from models_registry import selectors
from models_registry.models import ModelVersion


class ModelImportForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="Unique name of the new model version.")
    source = forms.CharField(
        max_length=500,
        help_text=(
            "A model folder on the server (config.json and safetensors weights), a .gguf "
            "file on the server, or a Hugging Face hub id such as HuggingFaceTB/SmolLM2-135M "
            "(needs the network)."
        ),
    )
    kind = forms.ChoiceField(
        choices=ModelVersion.Kind.choices, initial=ModelVersion.Kind.POLICY, required=False
    )

    def clean_kind(self) -> str:
        return self.cleaned_data["kind"] or ModelVersion.Kind.POLICY


class StateChangeForm(forms.Form):
    note = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )


class ServingEndpointForm(forms.Form):
    url = forms.CharField(
        max_length=500,
        label="Server URL",
        help_text="The OpenAI-compatible API root, e.g. http://gpu-host:8000/v1.",
    )
    served_model_name = forms.CharField(
        max_length=200,
        label="Served model name",
        help_text="What the server calls this version (vllm serve --served-model-name, or the "
        "LoRA module's name).",
    )
    api_key = forms.CharField(
        max_length=500,
        required=False,
        label="API key",
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the key already set.",
    )


def offer_only_versions_of(form, project):
    """Limit every model version field of ``form`` (a Django form, or a DRF serializer's
    related fields) to the versions ``project``'s workspace may use: another workspace's
    id reads as one that does not exist, and its name stays off the page (the services
    refuse it anyway)."""
    for field in form.fields.values():
        queryset = getattr(field, "queryset", None)
        if queryset is not None and queryset.model is ModelVersion:
            field.queryset = selectors.visible_to(project.workspace, queryset)
    return form
