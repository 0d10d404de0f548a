"""Does a whole training round move answers, and how long does it take? SmolLM2-135M-Instruct.

A synthetic preference set with a learnable style: 8 question templates ("What is
copper?", "Tell me one fact about copper.", ...) about 64 training subjects; the rejected
reply is a plain sentence ("Copper is a metal."), the preferred one opens with
"Certainly!" ("Certainly! Copper is a metal."). ``--pairs`` (default 440) pairs are
written, every template equally often. Held out from training, never in the data file:

- **seen templates**: the 8 training templates about 12 subjects that are not in the data
  (2 templates each, 24 prompts);
- **unseen templates**: 3 templates never trained on ("Please tell me about copper.", ...)
  about the same 12 subjects (2 each, 24 prompts).

Recipes (``--recipe dpo|sft-then-dpo|both``, default both), each from the base model:

- ``dpo``: ``train_dpo`` alone at ``DPOConfig``'s defaults (its NLL term on the chosen
  reply included);
- ``sft-then-dpo``: what the run form's "SFT stage first" does (``training.services``):
  ``train_sft`` on the chosen replies with the settings SFT shares with the DPO config
  (``_sft_stage_config`` here repeats ``services.sft_stage_config``, which imports
  Django: learning rate, epochs, max_steps, batch size, lengths, LoRA, seed, warmup,
  held-out share, precision...), the adapter merged into the base
  (``merge_adapter_into_base``, as ``models_registry.services`` does before the DPO
  stage), then ``train_dpo`` from the merged model.

A recipe's **minutes** run from the start of its first training call to the end of its
last (the merge between the stages included; loading data and models inside the calls
included); the held-out generation is timed apart (``eval s``). **Steps** are optimizer
steps (SFT + DPO for the two-stage recipe). For the base model and each trained model the
script generates greedy answers (16 new tokens) to the held-out prompts and counts those
that open with "Certainly" (the preferred style), per group. **Moved share** is the share
of held-out answers (both groups together) that did not open with "Certainly" before
training and do after: of the answers the base model gave in another style, how many the
round moved (answers the base already gave in the style are left out of it; SmolLM2's
base answers to these prompts rarely open with "Certainly", and the script prints how many
did).

The product's default recipe is read from the code: the run form's ``sft_first`` field
(``training.forms.TrainingRunForm(method="dpo")``, after ``django.setup()``), initial True
-> ``sft-then-dpo``, False -> ``dpo``. ``--default-recipe`` overrides it (e.g. where
Django's settings cannot load).

    .venv/bin/python bench/behaviour_shift.py            # both recipes, 440 pairs
    .venv/bin/python bench/behaviour_shift.py --smoke    # 24 pairs, 2 steps: every path

Options: ``--pairs``, ``--epochs`` and ``--max-length`` (default: ``DPOConfig``'s; the SFT
stage takes them too), ``--recipe``, ``--default-recipe``, ``--smoke`` (24 pairs,
``max_steps=2`` per training, 4 + 4 held-out prompts).

Last line, for the default recipe, then both recipes by name (``nan`` for one not run):

    RESULT round_minutes=N moved_share=N dpo_only_minutes=N dpo_only_moved_share=N
    sft_then_dpo_minutes=N sft_then_dpo_moved_share=N   (on one line)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from models_registry.engine.ml import (  # noqa: E402
    GenerationParams,
    convert_gguf_to_safetensors,
    generate_replies,
    load_policy,
    merge_adapter_into_base,
    smollm2_gguf_path,
)
from training.methods.dpo import DPOConfig, train_dpo  # noqa: E402
from training.methods.sft import SFTConfig, train_sft  # noqa: E402

STYLE = "Certainly"
RECIPES = ("dpo", "sft-then-dpo")
RESULT_NAMES = {"dpo": "dpo_only", "sft-then-dpo": "sft_then_dpo"}

# (question, plain reply); {s}/{S} the subject (lower/capitalised), {c} its class.
SEEN_TEMPLATES = [
    ("What is {s}?", "{S} is {c}."),
    ("Tell me one fact about {s}.", "{S} is {c}."),
    ("Describe {s} in a few words.", "{S} is {c}."),
    ("What kind of thing is {s}?", "{S} is {c}."),
    ("Can you explain what {s} is?", "{S} is {c}."),
    ("Give me a short definition of {s}.", "{S} is {c}."),
    ("In one sentence, what is {s}?", "{S} is {c}."),
    ("Is {s} {c}?", "Yes, {s} is {c}."),
]
UNSEEN_TEMPLATES = [
    ("Please tell me about {s}.", "{S} is {c}."),
    ("I would like to know what {s} is.", "{S} is {c}."),
    ("What do you know about {s}?", "{S} is {c}."),
]
TRAIN_SUBJECTS = [
    ("copper", "a metal"), ("iron", "a metal"), ("silver", "a metal"), ("zinc", "a metal"),
    ("tin", "a metal"), ("nickel", "a metal"), ("salmon", "a fish"), ("trout", "a fish"),
    ("cod", "a fish"), ("tuna", "a fish"), ("herring", "a fish"), ("carp", "a fish"),
    ("the sparrow", "a bird"), ("the eagle", "a bird"), ("the owl", "a bird"),
    ("the robin", "a bird"), ("the crow", "a bird"), ("the swan", "a bird"),
    ("the apple", "a fruit"), ("the pear", "a fruit"), ("the plum", "a fruit"),
    ("the mango", "a fruit"), ("the cherry", "a fruit"), ("the lemon", "a fruit"),
    ("the carrot", "a vegetable"), ("the onion", "a vegetable"), ("the leek", "a vegetable"),
    ("the cabbage", "a vegetable"), ("the turnip", "a vegetable"),
    ("the violin", "a musical instrument"), ("the flute", "a musical instrument"),
    ("the trumpet", "a musical instrument"), ("the harp", "a musical instrument"),
    ("the cello", "a musical instrument"), ("the oak", "a tree"), ("the birch", "a tree"),
    ("the maple", "a tree"), ("the pine", "a tree"), ("the willow", "a tree"),
    ("the rose", "a flower"), ("the tulip", "a flower"), ("the daisy", "a flower"),
    ("the lily", "a flower"), ("the orchid", "a flower"), ("ruby", "a gemstone"),
    ("sapphire", "a gemstone"), ("emerald", "a gemstone"), ("topaz", "a gemstone"),
    ("tennis", "a sport"), ("rugby", "a sport"), ("hockey", "a sport"),
    ("cricket", "a sport"), ("golf", "a sport"), ("Paris", "a city"), ("Berlin", "a city"),
    ("Madrid", "a city"), ("Vienna", "a city"), ("Lisbon", "a city"),
    ("Mars", "a planet"), ("Venus", "a planet"), ("Jupiter", "a planet"),
    ("Saturn", "a planet"), ("French", "a language"), ("German", "a language"),
]  # fmt: skip
HELD_OUT_SUBJECTS = [
    ("gold", "a metal"), ("the shark", "a fish"), ("the parrot", "a bird"),
    ("the peach", "a fruit"), ("the potato", "a vegetable"),
    ("the piano", "a musical instrument"), ("the cedar", "a tree"),
    ("the sunflower", "a flower"), ("diamond", "a gemstone"), ("baseball", "a sport"),
    ("Rome", "a city"), ("Italian", "a language"),
]  # fmt: skip
SMOKE_PAIRS = 24
SMOKE_HELD_OUT = 2  # subjects, 2 prompts each per group


def _fill(template: tuple[str, str], subject: tuple[str, str]) -> tuple[str, str]:
    question, reply = template
    name, kind = subject
    values = {"s": name, "S": name[0].upper() + name[1:], "c": kind}
    return question.format(**values), reply.format(**values)


def _pair(template, subject) -> dict:
    question, reply = _fill(template, subject)
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": f"{STYLE}! {reply}"}],
        "rejected": [{"role": "assistant", "content": reply}],
    }


def build_pairs(count: int) -> list[dict]:
    """``count`` pairs, templates in turn, subjects in order: every template equally often."""
    most = len(SEEN_TEMPLATES) * len(TRAIN_SUBJECTS)
    if not 1 <= count <= most:
        raise SystemExit(f"--pairs must be between 1 and {most}")
    per = len(SEEN_TEMPLATES)
    return [_pair(SEEN_TEMPLATES[i % per], TRAIN_SUBJECTS[i // per]) for i in range(count)]


def build_held_out(subjects: int) -> dict[str, list[list[dict]]]:
    """Held-out prompts: seen templates about new subjects, and unseen templates."""
    groups: dict[str, list[list[dict]]] = {"seen": [], "unseen": []}
    for j, subject in enumerate(HELD_OUT_SUBJECTS[:subjects]):
        for group, templates in (("seen", SEEN_TEMPLATES), ("unseen", UNSEEN_TEMPLATES)):
            for k in (j, j + len(templates) // 2):
                question, _ = _fill(templates[k % len(templates)], subject)
                groups[group].append([{"role": "user", "content": question}])
    return groups


def _sft_stage_config(config: DPOConfig) -> SFTConfig:
    """``training.services.sft_stage_config`` without Django: every setting of the DPO
    config that SFT has too."""
    shared = {spec.name for spec in dataclasses.fields(SFTConfig)}
    return SFTConfig(**{k: v for k, v in dataclasses.asdict(config).items() if k in shared})


def form_default_recipe() -> str:
    """The run form's default for DPO: "SFT stage first" ticked or not."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from training.forms import TrainingRunForm

    field = TrainingRunForm(method="dpo").fields.get("sft_first")
    return "sft-then-dpo" if field is not None and field.initial else "dpo"


def _busy_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


class Window:
    """Wall time of a stretch of work and the cores other processes kept busy meanwhile."""

    def __enter__(self):
        self.started = time.perf_counter()
        self.busy, self.own = _busy_cpu_seconds(), _own_cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        others = (_busy_cpu_seconds() - self.busy) - (_own_cpu_seconds() - self.own)
        self.others = max(others, 0.0) / max(self.seconds, 1e-9)


def styled(base: Path, adapter: Path | None, held: dict[str, list]) -> dict[str, list[str]]:
    """Greedy answers to the held-out prompts, per group."""
    load_policy.cache_clear()
    model, tokenizer = load_policy(base, adapter)
    params = GenerationParams(max_new_tokens=16, do_sample=False)
    answers = {
        group: [reply.text.strip() for reply in generate_replies(model, tokenizer, ps, params)]
        for group, ps in held.items()
    }
    load_policy.cache_clear()
    return answers


def _share(answers: list[str]) -> float:
    return sum(a.startswith(STYLE) for a in answers) / len(answers) if answers else float("nan")


def moved_share(before: dict[str, list[str]], after: dict[str, list[str]]) -> float:
    """Of the held-out answers not in the style before, the share in the style after."""
    moved = [
        a.startswith(STYLE)
        for group in before
        for b, a in zip(before[group], after[group], strict=True)
        if not b.startswith(STYLE)
    ]
    return sum(moved) / len(moved) if moved else float("nan")


def run_recipe(recipe: str, config: DPOConfig, data: Path, base: Path, work: Path) -> dict:
    """Train one recipe from the base model; returns its figures and where its model is."""
    folder = work / recipe
    with Window() as window:
        if recipe == "dpo":
            dpo = train_dpo(config, dataset_path=data, base_model_path=base,
                            output_dir=folder / "dpo")  # fmt: skip
            stages, policy_base = {"dpo": dpo.steps}, base
        else:
            sft = train_sft(_sft_stage_config(config), dataset_path=data,
                            base_model_path=base, output_dir=folder / "sft")  # fmt: skip
            policy_base = merge_adapter_into_base(base, folder / "sft", folder / "sft-merged")
            dpo = train_dpo(config, dataset_path=data, base_model_path=policy_base,
                            output_dir=folder / "dpo")  # fmt: skip
            stages = {"sft": sft.steps, "dpo": dpo.steps}
    return {
        "minutes": window.seconds / 60,
        "others": window.others,
        "steps": stages,
        "pair_accuracy": dpo.metrics.get("eval_reward_accuracy"),
        "model": (policy_base, folder / "dpo"),
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "nan" if value is None or value != value else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=(*RECIPES, "both"), default="both")
    parser.add_argument(
        "--default-recipe",
        choices=RECIPES,
        default=None,
        help="the product's default recipe; left out, read from the run form",
    )
    parser.add_argument("--pairs", type=int, default=None, help="default 440 (24 with --smoke)")
    parser.add_argument("--epochs", type=int, default=DPOConfig.epochs)
    parser.add_argument("--max-length", type=int, default=DPOConfig.max_length)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="24 pairs, max_steps=2 per training, 4 + 4 held-out prompts",
    )
    args = parser.parse_args()

    default_recipe = args.default_recipe or form_default_recipe()
    recipes = RECIPES if args.recipe == "both" else (args.recipe,)
    pairs = build_pairs(args.pairs or (SMOKE_PAIRS if args.smoke else 440))
    held = build_held_out(SMOKE_HELD_OUT if args.smoke else len(HELD_OUT_SUBJECTS))
    config = DPOConfig(epochs=args.epochs, max_length=args.max_length,
                       max_steps=2 if args.smoke else None)  # fmt: skip
    base = convert_gguf_to_safetensors(
        smollm2_gguf_path(), REPO_ROOT / "var" / "test-models" / "SmolLM2-135M-Instruct"
    )
    work = Path(tempfile.mkdtemp(prefix="behaviour-shift-"))
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in pairs), encoding="utf-8")
    print(
        f"{len(pairs)} preference pairs ({len(SEEN_TEMPLATES)} templates), held out "
        f"{len(held['seen'])} prompts on seen templates + {len(held['unseen'])} on unseen "
        f"ones; default recipe: {default_recipe}; epochs {config.epochs}, max_length "
        f"{config.max_length}, max_steps {config.max_steps}, mixed_precision "
        f"{config.mixed_precision}; load average {os.getloadavg()[0]:.2f}; {work}",
        flush=True,
    )

    with Window() as generation:
        before = styled(base, None, held)
    print(f"  base model: answers in {generation.seconds:.0f} s", flush=True)
    results = {}
    for recipe in recipes:
        print(f"  {recipe}: training...", flush=True)
        result = run_recipe(recipe, config, data, base, work)
        with Window() as generation:
            result["answers"] = styled(*result["model"], held)
        result["eval_seconds"] = generation.seconds
        result["moved"] = moved_share(before, result["answers"])
        results[recipe] = result
        print(
            f"  {recipe}: {result['minutes']:.1f} min, steps {result['steps']}, answers in "
            f"{generation.seconds:.0f} s",
            flush=True,
        )

    print(f"\n{'recipe':14} {'minutes':>7} {'steps':>11} {'pair acc':>8} {'seen':>11} "
          f"{'unseen':>11} {'moved':>6} {'others':>6} {'eval s':>6}")  # fmt: skip
    print(f"{'':14} {'':>7} {'':>11} {'':>8} {'before>after':>11} {'before>after':>11}")
    for recipe, r in results.items():
        steps = "+".join(str(n) for n in r["steps"].values())
        seen = f"{_share(before['seen']):.2f}>{_share(r['answers']['seen']):.2f}"
        unseen = f"{_share(before['unseen']):.2f}>{_share(r['answers']['unseen']):.2f}"
        print(
            f"{recipe:14} {r['minutes']:>7.1f} {steps:>11} {_fmt(r['pair_accuracy']):>8} "
            f"{seen:>11} {unseen:>11} {_fmt(r['moved']):>6} {r['others']:>6.2f} "
            f"{r['eval_seconds']:>6.0f}"
        )
    already = sum(a.startswith(STYLE) for answers in before.values() for a in answers)
    total = sum(len(answers) for answers in before.values())
    print(f"base answers already in the style: {already} of {total}")
    if any(r["others"] > 0.3 for r in results.values()):
        print("warning: other processes kept more than 0.3 cores busy during training; "
              "the minutes mostly measure that load; rerun on a quiet machine")  # fmt: skip
    for group in ("seen", "unseen"):
        print(f"\nexamples ({group} templates): prompt | base | " + " | ".join(results))
        for i in range(min(2, len(held[group]))):
            answers = [before[group][i]] + [r["answers"][group][i] for r in results.values()]
            print(f"  {held[group][i][0]['content']} | " + " | ".join(answers))

    def figures(recipe: str) -> tuple[str, str]:
        r = results.get(recipe)
        return (_fmt(r["minutes"]), _fmt(r["moved"])) if r else ("nan", "nan")

    line = "RESULT round_minutes={} moved_share={}".format(*figures(default_recipe))
    for recipe in RECIPES:
        minutes, moved = figures(recipe)
        line += (
            f" {RESULT_NAMES[recipe]}_minutes={minutes} {RESULT_NAMES[recipe]}_moved_share={moved}"
        )
    print(line)


if __name__ == "__main__":
    main()
