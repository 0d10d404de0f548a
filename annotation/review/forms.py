"""The gold answer form of one task, with fields for its kind: comparison (A, B, tie or both
bad), ranking (a place per response, or all bad), rating (a score per criterion, flags),
demonstration (the ideal reply). Each builds the answer that services.check_gold_answer
checks and the kind's matches_gold scores against (annotation/labeling/kinds/)."""

from django import forms

from annotation.labeling.kinds.demonstration import (
    DEFAULT_GOLD_SIMILARITY,
    MAX_TEXT,
    normalised_newlines,
)
from annotation.labeling.kinds.rating import FLAGS, MAX_SCORE, MIN_SCORE
from annotation.models import Task, TaskKind


class GoldForm(forms.Form):
    def __init__(self, data=None, *, task: Task, responses: list):
        self.task, self.responses = task, responses
        super().__init__(data, initial=self.initial_from(task.gold_answer or {}))
        self.add_fields()

    def add_fields(self) -> None:
        pass

    def initial_from(self, answer: dict) -> dict:
        return dict(answer)

    def answer(self) -> dict:
        raise NotImplementedError


class ComparisonGoldForm(GoldForm):
    choice = forms.ChoiceField(
        choices=[
            ("a", "A is better"),
            ("b", "B is better"),
            ("tie", "Tie: equally good"),
            ("both_bad", "Both are bad"),
        ],
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose A, B, tie or both bad.",
            "invalid_choice": "Choose A, B, tie or both bad.",
        },
    )

    def answer(self) -> dict:
        return {"choice": self.cleaned_data["choice"]}


class RankingGoldForm(GoldForm):
    all_bad = forms.BooleanField(required=False, label="All are bad (no places needed)")

    def add_fields(self) -> None:
        places = [("", "—")] + [(str(n), str(n)) for n in range(1, len(self.responses) + 1)]
        for response in self.responses:
            self.fields[f"rank_{response.pk}"] = forms.TypedChoiceField(
                choices=places, coerce=int, required=False, label=f"Place of #{response.pk}"
            )

    def rows(self) -> list:
        """(response, its place field), in task order."""
        return [(response, self[f"rank_{response.pk}"]) for response in self.responses]

    def initial_from(self, answer: dict) -> dict:
        ranked = answer.get("ranking") or []
        return {
            "all_bad": bool(answer.get("all_bad")),
            **{f"rank_{pk}": place for place, pk in enumerate(ranked, start=1)},
        }

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("all_bad") or self.errors:
            return cleaned
        k = len(self.responses)
        places = [cleaned.get(f"rank_{response.pk}") for response in self.responses]
        if None in places or "" in places:
            raise forms.ValidationError(
                f"Give every response a place from 1 to {k}, or tick all are bad."
            )
        twice = sorted({place for place in places if places.count(place) > 1})
        if twice:
            raise forms.ValidationError(
                f"Each response needs its own place; place {twice[0]} is given twice."
            )
        return cleaned

    def answer(self) -> dict:
        if self.cleaned_data["all_bad"]:
            return {"all_bad": True}
        place = {r.pk: self.cleaned_data[f"rank_{r.pk}"] for r in self.responses}
        return {"ranking": sorted(place, key=place.__getitem__)}


class RatingGoldForm(GoldForm):
    flags = forms.MultipleChoiceField(
        choices=[(name, label) for name, (label, _) in FLAGS.items()],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Flags the labeler must raise",
    )

    def add_fields(self) -> None:
        for criterion in self.task.project.criteria:
            message = (
                f"The score for {criterion} must be a whole number from {MIN_SCORE} to {MAX_SCORE}."
            )
            self.fields[f"score_{criterion}"] = forms.IntegerField(
                label=criterion,
                required=False,
                min_value=MIN_SCORE,
                max_value=MAX_SCORE,
                error_messages={"min_value": message, "max_value": message, "invalid": message},
            )

    def initial_from(self, answer: dict) -> dict:
        scores = answer.get("scores") or {}
        return {"flags": answer.get("flags") or [], **{f"score_{c}": s for c, s in scores.items()}}

    def scores(self) -> dict:
        return {
            name.removeprefix("score_"): value
            for name, value in self.cleaned_data.items()
            if name.startswith("score_") and value is not None
        }

    def clean(self):
        cleaned = super().clean()
        if not self.errors and not self.scores():
            raise forms.ValidationError(
                "Give at least one score; a blank criterion is not checked."
            )
        return cleaned

    def answer(self) -> dict:
        answer = {"scores": self.scores()}
        if self.cleaned_data["flags"]:
            answer["flags"] = self.cleaned_data["flags"]
        return answer


class DemonstrationGoldForm(GoldForm):
    text = forms.CharField(
        label="The ideal reply",
        max_length=MAX_TEXT,
        widget=forms.Textarea(attrs={"rows": 8}),
        error_messages={"required": "Write the ideal reply."},
    )
    min_similarity = forms.FloatField(
        label="Least similarity to match",
        required=False,
        min_value=0.05,
        max_value=1,
        help_text=f"0.05 to 1, default {DEFAULT_GOLD_SIMILARITY}: how close (by words) a "
        "labeler's reply must be.",
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": DEFAULT_GOLD_SIMILARITY}),
    )

    def answer(self) -> dict:
        answer = {"text": normalised_newlines(self.cleaned_data["text"]).strip()}
        if self.cleaned_data["min_similarity"] is not None:
            answer["min_similarity"] = self.cleaned_data["min_similarity"]
        return answer


GOLD_FORMS = {
    TaskKind.COMPARISON: ComparisonGoldForm,
    TaskKind.RANKING: RankingGoldForm,
    TaskKind.RATING: RatingGoldForm,
    TaskKind.DEMONSTRATION: DemonstrationGoldForm,
}


def form_error(form: forms.Form) -> str:
    """The first problem, in one sentence for the page's error line."""
    for field, messages in form.errors.items():
        if field == "__all__":
            return messages[0]
        label = form.fields[field].label or field
        return f"{label}: {messages[0]}" if not messages[0].startswith("The ") else messages[0]
    return ""
