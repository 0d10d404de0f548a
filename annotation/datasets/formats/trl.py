"""TRL's dataset types (https://huggingface.co/docs/trl/dataset_formats), standard (texts) or
conversational (lists of ``{"role", "content"}`` messages). The row's keys pick the type:

- preference, ``{"prompt", "chosen", "rejected"}``: two responses (chosen index 0, rejected
  index 1) and a ``comparison`` judgment (key "pair-0-1", choice "a"). A conversational
  prompt must end with the user's turn: it is the prompt, the turns before it the context.
  A chosen/rejected list of several messages gives a response whose text is their contents
  joined by a blank line, with the messages kept in the response's metadata.
- implicit-prompt preference, ``{"chosen", "rejected"}`` without ``prompt``: for
  conversations, the shared leading turns up to the last user turn among them are the
  context and prompt, the rest of each conversation the responses; for texts, the common
  prefix is the prompt, cut where TRL's ``extract_prompt`` cuts it (before a trailing
  space). Identical conversations, or no shared user turn, are errors.
- unpaired preference, ``{"prompt", "completion", "label": bool}`` (KTO): one response and a
  ``label`` judgment (key "label").
- prompt-completion, ``{"prompt", "completion"}``: one response and a ``demonstration``
  (key "demonstration").
- conversational language modeling, ``{"messages"}``: the last turn must be the
  assistant's and is the demonstration; the turn before it must be the user's and is the
  prompt; the turns before that are the context.
- prompt-only, ``{"prompt"}``: just the prompt.

Ids come from ``id`` or ``prompt_id``; every field not used above goes to the metadata (so
UltraFeedback-binarized's ``score_chosen`` and ``messages`` are kept there). TRL's
language-modeling ``{"text"}`` rows and stepwise-supervision rows are not taken: import texts
as prompts with ``--format prompts``.
"""

from __future__ import annotations

from .fields import (
    Row,
    boolean,
    external_id,
    field_text,
    messages,
    rest,
    row_by_row,
    split_prompt,
    text,
)
from .records import ImportedJudgment, ImportedRecord, ImportedResponse, ImportFormatError

ID_FIELDS = ("id", "prompt_id")


def record(row: Row, line: int) -> ImportedRecord:
    if "chosen" in row or "rejected" in row:
        if "prompt" in row:
            return _preference(row, line)
        return _implicit_preference(row, line)
    if "messages" in row:
        return _messages(row, line)
    if "completion" in row:
        return _completion(row, line)
    if "prompt" in row:
        return _prompt_only(row, line)
    raise ImportFormatError(
        "not a TRL row: expected prompt/chosen/rejected, chosen/rejected, prompt/completion"
        f"(/label), messages or prompt; found {', '.join(map(str, row)) or 'no fields'}",
        line=line,
    )


def _record(row: Row, line: int, used, **fields) -> ImportedRecord:
    record_id, id_field = external_id(row, ID_FIELDS)
    return ImportedRecord(
        line=line, external_id=record_id, metadata=rest(row, [*used, id_field]), **fields
    )


def _prompt(row: Row, line: int) -> tuple[list[dict[str, str]], str]:
    """(context, prompt) of a standard or conversational ``prompt`` field."""
    value = row.get("prompt")
    if isinstance(value, list):
        return split_prompt(messages(value, "prompt", line), "prompt", line)
    return [], field_text(row, "prompt", line)


def _response(row: Row, name: str, line: int) -> ImportedResponse:
    value = row.get(name)
    if not isinstance(value, list):
        return ImportedResponse(text=field_text(row, name, line))
    turns = messages(value, name, line)
    return _turns_response(turns, name, line)


def _turns_response(turns: list[dict[str, str]], name: str, line: int) -> ImportedResponse:
    if len(turns) == 1:
        return ImportedResponse(text=turns[0]["content"])
    joined = text("\n\n".join(turn["content"] for turn in turns), name, line)
    return ImportedResponse(text=joined, metadata={"messages": turns})


def _preference(row: Row, line: int) -> ImportedRecord:
    context, prompt = _prompt(row, line)
    return _record(
        row,
        line,
        ["prompt", "chosen", "rejected"],
        prompt=prompt,
        context=context,
        responses=[_response(row, "chosen", line), _response(row, "rejected", line)],
        judgments=[_chosen_over_rejected()],
    )


def _chosen_over_rejected() -> ImportedJudgment:
    return ImportedJudgment(kind="comparison", key="pair-0-1", a=0, b=1, choice="a")


def _implicit_preference(row: Row, line: int) -> ImportedRecord:
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if isinstance(chosen, list) or isinstance(rejected, list):
        context, prompt, responses = _split_conversations(row, line)
    else:
        context, (prompt, responses) = [], _split_texts(row, line)
    return _record(
        row,
        line,
        ["chosen", "rejected"],
        prompt=prompt,
        context=context,
        responses=responses,
        judgments=[_chosen_over_rejected()],
    )


def _split_conversations(row: Row, line: int):
    chosen = messages(row.get("chosen"), "chosen", line)
    rejected = messages(row.get("rejected"), "rejected", line)
    if chosen == rejected:
        raise ImportFormatError("chosen and rejected are the same conversation", line=line)
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    user_turns = [index for index in range(shared) if chosen[index]["role"] == "user"]
    if not user_turns:
        raise ImportFormatError(
            "chosen and rejected share no leading user turn, so there is no prompt", line=line
        )
    prompt_at = user_turns[-1]
    if prompt_at + 1 in (len(chosen), len(rejected)):
        raise ImportFormatError("chosen or rejected has no turn after the shared prompt", line=line)
    responses = [
        _turns_response(chosen[prompt_at + 1 :], "chosen", line),
        _turns_response(rejected[prompt_at + 1 :], "rejected", line),
    ]
    return chosen[:prompt_at], chosen[prompt_at]["content"], responses


def _split_texts(row: Row, line: int):
    chosen = field_text(row, "chosen", line)
    rejected = field_text(row, "rejected", line)
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared and chosen[shared - 1] == " ":
        shared -= 1  # as TRL's extract_prompt: the space belongs to the completion
    prompt = text(chosen[:shared], "prompt (the common start of chosen and rejected)", line)
    return prompt, [
        ImportedResponse(text=text(chosen[shared:], "chosen", line)),
        ImportedResponse(text=text(rejected[shared:], "rejected", line)),
    ]


def _completion(row: Row, line: int) -> ImportedRecord:
    context, prompt = _prompt(row, line)
    if "label" in row:
        judgment = ImportedJudgment(
            kind="label", key="label", response=0, label=boolean(row["label"], "label", line)
        )
    else:
        judgment = ImportedJudgment(kind="demonstration", key="demonstration", response=0)
    return _record(
        row,
        line,
        ["prompt", "completion", "label"],
        prompt=prompt,
        context=context,
        responses=[_response(row, "completion", line)],
        judgments=[judgment],
    )


def _messages(row: Row, line: int) -> ImportedRecord:
    turns = messages(row.get("messages"), "messages", line)
    if turns[-1]["role"] != "assistant" or len(turns) < 2:
        raise ImportFormatError(
            "'messages' must end with a user turn and then the assistant's turn", line=line
        )
    context, prompt = split_prompt(turns[:-1], "messages", line)
    return _record(
        row,
        line,
        ["messages"],
        prompt=prompt,
        context=context,
        responses=[ImportedResponse(text=turns[-1]["content"])],
        judgments=[ImportedJudgment(kind="demonstration", key="demonstration", response=0)],
    )


def _prompt_only(row: Row, line: int) -> ImportedRecord:
    context, prompt = _prompt(row, line)
    return _record(row, line, ["prompt"], prompt=prompt, context=context)


records = row_by_row(record)
