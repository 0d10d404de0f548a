from django import forms

from models_registry.models import ModelVersion
from training.methods.dpo import DPOConfig

_DEFAULTS = DPOConfig()


class DPORunForm(forms.Form):
    base_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY),
        help_text="The policy to improve; it is also the frozen reference.",
    )
    beta = forms.FloatField(min_value=0.001, max_value=10, initial=_DEFAULTS.beta)
    learning_rate = forms.FloatField(
        min_value=1e-7, max_value=1e-2, initial=_DEFAULTS.learning_rate
    )
    epochs = forms.IntegerField(min_value=1, max_value=50, initial=_DEFAULTS.epochs)
    max_steps = forms.IntegerField(
        min_value=1, required=False, help_text="Stop after this many steps (optional)."
    )
    nll_weight = forms.FloatField(
        min_value=0,
        max_value=10,
        initial=_DEFAULTS.nll_weight,
        help_text="Weight of the likelihood term on chosen replies: it makes answers move.",
    )
    seed = forms.IntegerField(initial=0)

    def config(self) -> dict:
        data = {k: v for k, v in self.cleaned_data.items() if k != "base_version"}
        return {k: v for k, v in data.items() if v is not None}
