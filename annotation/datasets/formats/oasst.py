"""OpenAssistant message trees (OASST1/OASST2), in either of their two shapes.

- flat messages, one row per message: ``message_id``, ``parent_id`` (none for the root),
  ``role`` ("prompter" or "assistant"), ``text``, ``rank``, ``lang``, ``message_tree_id``,
  ... (the ``oasst1`` Hugging Face files).
- nested trees, one row per tree: ``{"message_tree_id", "prompt": {"message_id", "role",
  "text", "replies": [...]}}`` (the ``*.trees.jsonl`` exports).

Grouping flat rows. Replies point at their parent by id, so a record needs the rows of its
tree. The reader keeps one tree at a time: rows of a tree must be contiguous, as they are in
the OASST exports; a tree is complete when a row of another tree (or the end of the file)
comes. Memory is one tree's messages plus the set of finished tree ids (tens of bytes per
tree), so a tree id that comes back after another tree started is an error, as is a parent
id not found in its tree. A file sorted otherwise must be sorted by ``message_tree_id``
first (e.g. with pyarrow or ``jq``).

Records. For every prompter message with at least one assistant reply, in file (or tree)
order:
- prompt = its text; context = the turns from the root down to its parent (prompter ->
  "user", assistant -> "assistant"); external_id = its ``message_id``;
- responses = its assistant replies in file order, each with its ``message_id`` as
  external_id and its other fields (``rank``, ``lang``, ...) as metadata;
- a ``ranking`` judgment (key "ranking") when at least two replies have a ``rank``:
  ``order`` lists the ranked replies' indices by rank, 0 (best) first; unranked replies are
  left out of it.
- the record's line is the prompter message's row (flat) or the tree's row (nested); its
  metadata holds the prompter message's other fields (``lang``, ``message_tree_id``, ...).
"""

from __future__ import annotations

from collections.abc import Iterator

from .fields import Row, Rows, external_id, number, rest, text
from .records import ImportedJudgment, ImportedRecord, ImportedResponse, ImportFormatError

ROLES = {"prompter": "user", "assistant": "assistant"}
MESSAGE_FIELDS = ("message_id", "text", "role", "parent_id", "replies")


class Message:
    """One message with its replies, whichever shape it came from."""

    def __init__(self, row: Row, line: int, name: str):
        self.row, self.line, self.name = row, line, name
        self.id, _ = external_id(row, ["message_id"])
        self.text = text(row.get("text"), f"{name}.text", line)
        role = row.get("role")
        if role not in ROLES:
            raise ImportFormatError(
                f"'{name}.role' must be 'prompter' or 'assistant', not {role!r}", line=line
            )
        self.role = ROLES[role]
        self.replies: list[Message] = []


def records(rows: Rows) -> Iterator[ImportedRecord]:
    tree: list[tuple[int, Row]] = []
    tree_id = None
    finished: set = set()
    for line, row in rows:
        if isinstance(row.get("prompt"), dict):
            yield from _tree_records(_nested_root(row, line), rest(row, ["prompt"]))
            continue
        row_tree = row.get("message_tree_id")
        if row_tree in (None, ""):
            raise ImportFormatError("missing field 'message_tree_id'", line=line)
        if row_tree != tree_id:
            if row_tree in finished:
                raise ImportFormatError(
                    f"message tree {row_tree} appears again after other trees; rows of one "
                    "tree must be contiguous (sort the file by message_tree_id)",
                    line=line,
                )
            yield from _flat_tree_records(tree)
            if tree_id is not None:
                finished.add(tree_id)
            tree, tree_id = [], row_tree
        tree.append((line, row))
    yield from _flat_tree_records(tree)


def _flat_tree_records(tree: list[tuple[int, Row]]) -> Iterator[ImportedRecord]:
    if not tree:
        return
    messages: dict[str, Message] = {}
    for line, row in tree:
        message = Message(row, line, "row")
        if not message.id:
            raise ImportFormatError("missing field 'message_id'", line=line)
        messages[message.id] = message
    roots = []
    for message in messages.values():
        parent_id = message.row.get("parent_id")
        if parent_id in (None, ""):
            roots.append(message)
        elif str(parent_id) in messages:
            messages[str(parent_id)].replies.append(message)
        else:
            raise ImportFormatError(
                f"parent message {parent_id} is not in tree {message.row['message_tree_id']}",
                line=message.line,
            )
    records = [record for root in roots for record in _tree_records(root, {})]
    yield from sorted(records, key=lambda record: record.line)


def _nested_root(row: Row, line: int) -> Message:
    """The tree's messages, parsed without recursion (trees can be deep)."""
    root = Message(row["prompt"], line, "prompt")
    pending = [root]
    while pending:
        message = pending.pop()
        replies = message.row.get("replies") or []
        if not isinstance(replies, list):
            raise ImportFormatError(f"'{message.name}.replies' must be a list", line=line)
        for index, reply in enumerate(replies):
            if not isinstance(reply, dict):
                raise ImportFormatError(
                    f"'{message.name}.replies[{index}]' must be an object", line=line
                )
            child = Message(reply, line, f"{message.name}.replies[{index}]")
            message.replies.append(child)
            pending.append(child)
    return root


def _tree_records(root: Message, tree_fields: dict) -> Iterator[ImportedRecord]:
    """A record for each prompter message with assistant replies, depth first."""
    pending: list[tuple[Message, list[dict[str, str]]]] = [(root, [])]
    while pending:
        message, context = pending.pop()
        answers = [reply for reply in message.replies if reply.role == "assistant"]
        if message.role == "user" and answers:
            yield _record(message, context, answers, tree_fields)
        turns = [*context, {"role": message.role, "content": message.text}]
        pending.extend((reply, turns) for reply in reversed(message.replies))


def _record(message: Message, context, answers: list[Message], tree_fields) -> ImportedRecord:
    metadata = rest(message.row, MESSAGE_FIELDS)
    metadata.update({key: value for key, value in tree_fields.items() if value is not None})
    return ImportedRecord(
        line=message.line,
        prompt=message.text,
        external_id=message.id,
        context=context,
        responses=[
            ImportedResponse(
                text=answer.text, external_id=answer.id, metadata=rest(answer.row, MESSAGE_FIELDS)
            )
            for answer in answers
        ],
        judgments=_ranking(answers),
        metadata=metadata,
    )


def _ranking(answers: list[Message]) -> list[ImportedJudgment]:
    ranked = [
        (number(answer.row["rank"], f"{answer.name}.rank", answer.line), index)
        for index, answer in enumerate(answers)
        if answer.row.get("rank") not in (None, "")
    ]
    if len(ranked) < 2:
        return []
    return [ImportedJudgment(kind="ranking", key="ranking", order=[i for _, i in sorted(ranked)])]
