"""The run form: its config fields come from the selected method's config dataclass, so a
new hyperparameter appears on the page without touching this file."""

import dataclasses

from django import forms

from annotation.datasets.selectors import AI_LABELS, DEFAULT_RATING_THRESHOLD
from annotation.models import DatasetVersion
from models_registry.models import ModelVersion
from training.methods.common import CURRICULA, PRECISIONS
from training.methods.launch import STRATEGIES
from training.services import SFT_FIRST_METHODS, sft_stage_settings, version_kinds
from training.specs import METHODS, RUNTIME_DEFAULTS, method_spec

# Shown up front; every other config field sits under "Advanced".
PRIMARY_FIELDS = {
    "learning_rate",
    "epochs",
    "max_steps",
    "seed",
    "curriculum",
    "beta",
    "loss_type",
    "nll_weight",
    "lora_r",
    "use_margin",
    "samples_per_prompt",
    "iterations",
    "init_kl_coef",
    "weight",
    "desirable_weight",
    "undesirable_weight",
}
CHOICES = {
    "curriculum": [("", "none (shuffle)")] + [(c, c) for c in CURRICULA],
    "mixed_precision": [
        ("auto", "auto (bf16 where the hardware has it, else fp16 on GPUs, else fp32)")
    ]
    + [(p, p) for p in PRECISIONS if p != "auto"],
    "loss_type": [("sigmoid", "sigmoid (DPO)"), ("ipo", "IPO")],
}
SLIDERS = {"weight": {"min": "0", "max": "1", "step": "0.05"}}
HELP = {
    "lora_r": "LoRA rank; 0 trains every weight (full fine-tuning, SFT only).",
    "nll_weight": "Weight of the likelihood term on chosen replies: it makes answers move.",
    "curriculum": "Order rows from easy to hard by margin, agreement or length.",
    "weight": "Share of the base version in the mix (1 = only the base version's adapter).",
    "max_steps": "Stop after this many optimizer steps (optional).",
    "gradient_checkpointing": "Recompute activations in the backward pass: less memory, "
    "about a third slower.",
    "qlora": "4-bit base weights under the LoRA adapter (bitsandbytes, CUDA only).",
}


def _policies():
    return ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY).order_by("-created_at")


def _config_field(spec: dataclasses.Field) -> forms.Field:
    kind = str(spec.type).removesuffix("| None").strip()
    common = {
        "required": False,  # left empty: the method's default
        "initial": spec.default,
        "help_text": HELP.get(spec.name, ""),
        "label": spec.name.replace("_", " "),
    }
    if spec.name in CHOICES:
        return forms.TypedChoiceField(
            choices=CHOICES[spec.name], empty_value=None, coerce=str, **common
        )
    if spec.name in SLIDERS:
        attrs = {"type": "range"}  # static/app.js shows the value in the <output> after it
        return forms.FloatField(
            widget=forms.NumberInput(attrs={**attrs, **SLIDERS[spec.name]}), **common
        )
    if kind == "float":
        return forms.FloatField(**common)
    if kind == "int":
        return forms.IntegerField(**common)
    if kind == "bool":
        return forms.BooleanField(**common)
    if kind == "list[str]":
        return forms.CharField(**{**common, "initial": ", ".join(spec.default or [])})
    return forms.CharField(**common)


class DatasetVersionField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.name} v{obj.number} ({obj.kind}, {obj.row_count} rows)"


class TrainingRunForm(forms.Form):
    method = forms.ChoiceField(
        choices=[(m, s.label) for m, s in METHODS.items()], initial="dpo", required=False
    )
    base_version = forms.ModelChoiceField(
        queryset=_policies(), help_text="The policy to start from (DPO's frozen reference too)."
    )

    def __init__(
        self,
        data=None,
        *,
        method: str = "dpo",
        refresh_url: str = "",
        ai_default: str = "exclude",
        project=None,
        **kwargs,
    ):
        method = (data or {}).get("method") or method
        self.spec = method_spec(method if method in METHODS else "dpo")
        super().__init__(data, **kwargs)
        self.fields["method"].initial = self.spec.method
        if refresh_url:  # picking a method swaps in that method's settings (htmx)
            self.fields["method"].widget.attrs.update(
                {
                    "hx-get": refresh_url,
                    "hx-target": "#run-form",
                    "hx-swap": "outerHTML",
                    "hx-include": "this",
                }
            )
        self.fields["base_version"].queryset = _policies()
        if self.spec.needs_reward_model:
            self.fields["reward_version"] = forms.ModelChoiceField(
                queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by(
                    "-created_at"
                ),
                help_text="The reward model to optimise against.",
            )
        if self.spec.optional_reward_model:
            self.fields["reward_version"] = forms.ModelChoiceField(
                queryset=ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD).order_by(
                    "-created_at"
                ),
                required=False,
                label="Reward model",
                empty_label="left empty: people's scores",
                help_text="Scores every response of each prompt (all model versions' "
                "candidates, imported ones, demonstrations) instead of people; trains in one "
                "process.",
            )
        if self.spec.mixes_two_versions:
            self.fields["mix_with"] = forms.ModelChoiceField(
                queryset=_policies().exclude(adapter_path=""),
                help_text="The second run to mix in (trained from the same base).",
            )
        if self.spec.distributable:
            self.fields["processes"] = forms.IntegerField(
                required=False,
                min_value=1,
                help_text="One per GPU; left empty, every GPU of the training worker (else 1). "
                "More than 1 trains under accelerate launch.",
            )
            self.fields["strategy"] = forms.ChoiceField(
                choices=[(name, name) for name in STRATEGIES],
                initial="ddp",
                required=False,
                help_text="ddp: each process holds the model; fsdp and DeepSpeed ZeRO shard it "
                "across GPUs.",
            )
        if project is not None and self.spec.dataset is not None:
            self.fields["dataset_version"] = DatasetVersionField(
                queryset=DatasetVersion.objects.filter(
                    project=project, kind__in=version_kinds(self.spec.dataset)
                ).order_by("name", "-number"),
                required=False,
                label="Dataset version",
                empty_label="left empty: the project's current judgments",
                help_text="Train on a curated dataset version instead; the data filters below "
                "then do not apply.",
            )
        if self.spec.dataset == "sft":
            self.fields["include_chosen"] = forms.BooleanField(
                required=False, help_text="Also train on the chosen reply of every comparison."
            )
        if self.spec.method in SFT_FIRST_METHODS:
            own = [
                spec.name.replace("_", " ")
                for spec in dataclasses.fields(self.spec.config_class())
                if spec.name not in sft_stage_settings()
            ]
            self.fields["sft_first"] = forms.BooleanField(
                required=False,
                initial=False,  # bench/behaviour_shift.py: DPO alone moves answers as far, faster
                label="SFT stage first",
                help_text="Fine-tune on the chosen replies first, then run this from that model. "
                "On 440 pairs DPO alone (with its NLL term on chosen) moved every held-out "
                "answer in 7 minutes, SFT then DPO in 11 (bench/behaviour_shift.py); the stage "
                "can still help on few pairs or a weak NLL term. Both stages train with the "
                f"settings below ({', '.join(own)}: {self.spec.label} only).",
            )
        if self.spec.dataset == "preferences":
            self.fields["min_margin"] = forms.IntegerField(
                required=False, min_value=0, help_text="Leave out pairs with a weaker margin."
            )
        if self.spec.dataset == "unpaired":
            self.fields["rating_threshold"] = forms.FloatField(
                required=False,
                min_value=1,
                max_value=7,
                help_text="A rated reply is desirable when the mean of its scores (1-7) is at "
                f"least this; left empty, {DEFAULT_RATING_THRESHOLD:g}.",
            )
        if self.spec.dataset in ("sft", "preferences", "rankings", "unpaired"):
            self.fields["ai"] = forms.ChoiceField(
                choices=[
                    (value, f"{label} (project default)" if value == ai_default else label)
                    for value, label in AI_LABELS.items()
                ],
                required=False,  # left out: the project's setting
                initial=ai_default,
                label="AI labels",
                help_text="Leave AI judges' labels out, take those of trusted judges, take "
                "them all, or use only them.",
            )
        self.config_names = []
        for spec in dataclasses.fields(self.spec.config_class()):
            if spec.name in RUNTIME_DEFAULTS and spec.name not in self.spec.runtime_settings:
                continue  # the method's loop ignores it, so the service would refuse it
            self.fields[spec.name] = _config_field(spec)
            self.config_names.append(spec.name)

    def primary_config_fields(self):
        return [self[name] for name in self.config_names if name in PRIMARY_FIELDS]

    def advanced_config_fields(self):
        return [self[name] for name in self.config_names if name not in PRIMARY_FIELDS]

    def setup_fields(self):
        names = ("method", "base_version", "reward_version", "mix_with", "dataset_version")
        names += ("sft_first", "include_chosen", "min_margin", "rating_threshold", "ai")
        names += ("processes", "strategy")
        return [self[name] for name in names if name in self.fields]

    def config(self) -> dict:
        config = {}
        for name in self.config_names:
            value = self.cleaned_data.get(name)
            if isinstance(self.fields[name], forms.CharField) and name == "lora_target_modules":
                value = [part.strip() for part in (value or "").split(",") if part.strip()] or None
            if value is None or value == "":
                continue
            config[name] = value
        return config

    def layout(self) -> dict:
        """``processes`` and ``strategy`` for the service (defaults where left empty)."""
        return {
            "processes": self.cleaned_data.get("processes"),
            "strategy": self.cleaned_data.get("strategy") or "ddp",
        }

    def filters(self) -> dict:
        """The data filters; none with a dataset version (they choose among judgments)."""
        if self.cleaned_data.get("dataset_version") is not None:
            return {}
        return {
            name: self.cleaned_data[name]
            for name in ("include_chosen", "min_margin", "rating_threshold", "ai")
            if name in self.cleaned_data and self.cleaned_data[name] not in (None, False, "")
        }

    def add_config_error(self, message: str) -> None:
        """Put a config ValueError on the field it names, else on the form."""
        text = message.removeprefix("Bad training config: ")
        field = next((n for n in self.config_names if text.startswith(n + " ")), None)
        self.add_error(field, text)
