"""The two plainest formats: SFT demonstrations and bare prompts.

sft: one demonstration per row.
  - prompt: ``prompt`` or, Alpaca-style, ``instruction``; a non-empty ``input`` is appended
    after a blank line (``instruction + "\\n\\n" + input``), as Alpaca's template puts it
    below the instruction.
  - response: ``response``, ``output`` or ``completion`` (the first present).
  - gives one response and a ``demonstration`` judgment (key "demonstration").
  - id: ``id``; every other field goes to the record's metadata.

prompts: ``{"prompt" or "text", optional "id"}`` -> just the prompt; other fields are kept
as metadata.
"""

from __future__ import annotations

from .fields import Row, external_id, field_text, required_name, rest, row_by_row, text
from .records import ImportedJudgment, ImportedRecord, ImportedResponse

SFT_PROMPT = ("prompt", "instruction")
SFT_RESPONSE = ("response", "output", "completion")
PROMPT_TEXT = ("prompt", "text")


def sft_record(row: Row, line: int) -> ImportedRecord:
    prompt_field = required_name(row, SFT_PROMPT, line)
    response_field = required_name(row, SFT_RESPONSE, line)
    prompt = field_text(row, prompt_field, line)
    used = [prompt_field, response_field, "id"]
    if prompt_field == "instruction" and "input" in row:
        used.append("input")
        if row["input"] not in (None, ""):
            prompt = text(f"{prompt}\n\n{text(row['input'], 'input', line)}", "input", line)
    record_id, _ = external_id(row, ["id"])
    return ImportedRecord(
        line=line,
        prompt=prompt,
        external_id=record_id,
        responses=[ImportedResponse(text=field_text(row, response_field, line))],
        judgments=[ImportedJudgment(kind="demonstration", key="demonstration", response=0)],
        metadata=rest(row, used),
    )


def prompt_record(row: Row, line: int) -> ImportedRecord:
    name = required_name(row, PROMPT_TEXT, line)
    record_id, _ = external_id(row, ["id"])
    return ImportedRecord(
        line=line,
        prompt=field_text(row, name, line),
        external_id=record_id,
        metadata=rest(row, [name, "id"]),
    )


sft_records = row_by_row(sft_record)
prompt_records = row_by_row(prompt_record)
