"""Form data as the judges pages post it: principle rows of the constitution formset."""

FIELDS = ("name", "critique_request", "revision_request", "comparison_question")


def principle_rows(principles, *, initial=0, prefix="principles") -> dict:
    """Posted rows for these principles (missing fields blank), in their order."""
    data = {f"{prefix}-TOTAL_FORMS": str(len(principles)), f"{prefix}-INITIAL_FORMS": str(initial)}
    for index, principle in enumerate(principles):
        for field in FIELDS:
            data[f"{prefix}-{index}-{field}"] = principle.get(field, "")
        if principle:  # a blank row, as the page adds it, has no order either
            data[f"{prefix}-{index}-ORDER"] = str(principle.get("ORDER", index + 1))
        if principle.get("DELETE"):
            data[f"{prefix}-{index}-DELETE"] = "on"
    return data
