from django import forms

from models_registry.models import ModelVersion
from models_registry.selectors import MAX_SAMPLES_PER_PROMPT


class GenerationPreviewForm(forms.Form):
    """The choices that decide what a generation job writes and pairs."""

    model_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY)
    )
    samples_per_prompt = forms.IntegerField(
        min_value=1,
        max_value=MAX_SAMPLES_PER_PROMPT,
        required=False,
        help_text=(
            "Leave empty for as many as each prompt's comparisons need: 2 where no one has "
            "answered it yet, 1 where another answer is there to compare with."
        ),
    )


class GenerationForm(GenerationPreviewForm):
    best_of = forms.IntegerField(
        min_value=1,
        max_value=16,
        initial=1,
        help_text="Sample this many replies per candidate and keep the reward model's best.",
    )
    reward_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD),
        required=False,
        help_text="Picks the best reply when best of is more than 1.",
    )
    max_new_tokens = forms.IntegerField(min_value=1, max_value=1024, initial=128)
    temperature = forms.FloatField(min_value=0.0, max_value=2.0, initial=0.7)

    def generation_params(self) -> dict:
        temperature = self.cleaned_data["temperature"]
        return {
            "max_new_tokens": self.cleaned_data["max_new_tokens"],
            "temperature": temperature,
            "do_sample": temperature > 0,
        }


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
