"""The generation form of the Models page and its preview's choices."""

from django import forms

from annotation.candidates.selectors import MAX_SAMPLES_PER_PROMPT
from annotation.candidates.services import MAX_BEST_OF
from models_registry.models import ModelVersion


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
        max_value=MAX_BEST_OF,
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
