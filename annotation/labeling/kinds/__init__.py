"""Task kinds: each module here describes one kind of labeling work (its form fields, how
a submission is checked, how it is compared with a gold answer) as a module-level SPEC.
Modules are found automatically; adding a kind means adding a module."""

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from config.errors import ServiceError


@dataclass(frozen=True)
class KindSpec:
    kind: str
    # Partial rendered inside the label page's #task section, with `assignment` in context.
    template: str
    # Judgment fields from the submitted data, or ServiceError with a clear message.
    parse: Callable[..., dict]
    # Whether a stored judgment agrees with a gold task's known answer.
    matches_gold: Callable[..., bool]
    min_responses: int = 0
    max_responses: int = 0
    # Admin action: create this kind's tasks for a project from its prompts and responses.
    # Called as create_tasks(project=..., options={...}) -> TaskBatch; raises ServiceError
    # on bad options. None when tasks of this kind are made some other way.
    create_tasks: Callable[..., "TaskBatch"] | None = None
    # Short help for the admin's task-creation form.
    create_help: str = ""

    def check_responses(self, count: int) -> None:
        if not self.min_responses <= count <= self.max_responses:
            raise ServiceError(
                f"A {self.kind} task takes {self.min_responses} to {self.max_responses} "
                f"responses, not {count}."
            )


@dataclass(frozen=True)
class TaskBatch:
    """What one batch of task creation did: how many tasks of ``kind`` are new and, when
    some prompts or answers got none, why: phrases counted by the creation itself
    ("12 prompts already have a ranking task ..."), shown to the admin as they are."""

    kind: str
    created: int
    reasons: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        tasks = f"{self.kind} task{'' if self.created == 1 else 's'}"
        reasons = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"Created {self.created} {tasks}{reasons}."


def counted(number: int, singular: str, plural: str) -> str:
    """``"1 prompt has"``, ``"12 prompts have"``: a count with its noun (and verb)."""
    return f"{number} {singular if number == 1 else plural}"


NO_PROMPTS = "no prompts in the project; import some on Prompts"


def value(data: Mapping, name: str, default=None):
    """One field from form data (a QueryDict) or a JSON body (a dict)."""
    return data.get(name, default)


def values(data: Mapping, name: str) -> list:
    """A list field: repeated form fields, or a JSON array."""
    if hasattr(data, "getlist"):
        return data.getlist(name)
    found = data.get(name, [])
    return found if isinstance(found, list) else [found]


def _discover() -> dict[str, KindSpec]:
    specs = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, KindSpec):
            specs[spec.kind] = spec
    return specs


KINDS: dict[str, KindSpec] = _discover()
