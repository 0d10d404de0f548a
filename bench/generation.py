"""Generation throughput: batched serving against one request at a time.

SmolLM2-135M-Instruct on CPU (CUDA when present), 32 different chat prompts, greedy
decoding, at most 64 new tokens each. The same 32 requests are generated:

1. one at a time through ``GenerationService`` (each request submitted after the
   previous reply came back: what a lone labeler gets);
2. all at once through ``GenerationService``: 32 client threads submit together and the
   service batches them (its defaults: up to 16 per batch, 10 ms wait);
3. the same with ``stream=True`` (per-token incremental decoding for every row);
4. plain batched ``generate`` (``ml.generate_replies``, batch size 16), a reference for
   what batching gives without a service.

``--plain-one-at-a-time`` adds plain ``generate`` with batch size 1 (the service's
one-at-a-time mode minus its queueing; left out by default to stay within 10 minutes on a
busy machine).

Tokens are the generated tokens delivered in the replies (``completion_tokens``, EOS
included); a row that stops early at EOS is counted only up to there, although its batch
goes on computing for the other rows. Nothing forces 64 tokens: the prompts ask for long
answers and greedy decoding gives the same replies in every mode (up to floating-point
noise from padding), so every mode delivers the same tokens; the table shows the counts
and how many replies equal the one-at-a-time ones.

    .venv/bin/python bench/generation.py

Last line: RESULT batched_speedup=N, the tokens/s of mode 2 divided by mode 1's.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL_DIRS = (
    REPO / "var" / "test-models" / "SmolLM2-135M-Instruct",  # the test suite's cache
    REPO / "var" / "bench-models" / "SmolLM2-135M-Instruct",
)
# Other processes using more than this many cores on average make a run's figures noise.
NOISY_CORES = 0.3

TOPICS = (
    "photosynthesis", "compound interest", "the water cycle", "recursion", "plate tectonics",
    "vaccines", "binary search", "inflation", "black holes", "the French revolution",
    "supply and demand", "neural networks", "climate change", "the immune system",
    "public key cryptography", "evolution", "gravity", "the stock market", "volcanoes",
    "sleep", "democracy", "electric cars", "the internet", "tides", "rainbows",
    "memory in the brain", "bread baking", "composting", "the moon landing", "earthquakes",
    "bees", "coffee",
)  # fmt: skip
ASKS = (
    "Explain {} in detail, step by step.",
    "Write a long, thorough introduction to {} for a curious beginner.",
    "Describe how {} works and why it matters, with examples.",
    "Give me a detailed overview of {}, covering its history and main ideas.",
)


def conversations(count: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": ASKS[i % len(ASKS)].format(TOPICS[i % len(TOPICS)])}]
        for i in range(count)
    ]


def cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def model_path() -> Path:
    """The SmolLM2 safetensors folder, converted from the packaged GGUF file once."""
    from models_registry.engine import ml

    for folder in MODEL_DIRS:
        if (folder / "config.json").is_file():
            return folder
    return ml.convert_gguf_to_safetensors(ml.smollm2_gguf_path(), MODEL_DIRS[-1])


@dataclass
class Mode:
    name: str
    texts: list[str]
    tokens: int
    seconds: float
    batch_sizes: list[int]
    others_cores: float
    first_delta_s: list[float] | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def measured(name: str, run) -> Mode:
    """Time ``run() -> (replies, batch_sizes, first_delta_s)`` and the machine's other load."""
    busy, ours, wall = busy_cpu_seconds(), own_cpu_seconds(), time.monotonic()
    replies, batch_sizes, first_delta_s = run()
    seconds = time.monotonic() - wall
    others = busy_cpu_seconds() - busy - (own_cpu_seconds() - ours)
    mode = Mode(
        name=name,
        texts=[reply.text for reply in replies],
        tokens=sum(reply.completion_tokens for reply in replies),
        seconds=seconds,
        batch_sizes=batch_sizes,
        others_cores=max(0.0, others / seconds),
        first_delta_s=first_delta_s,
    )
    print(
        f"  {name:<34} {mode.tokens} tokens in {seconds:.1f} s: {mode.tokens_per_s:.1f} tok/s; "
        f"other processes used {mode.others_cores:.1f} cores meanwhile",
        flush=True,
    )
    return mode


def plain(model, tokenizer, convs, params, batch_size: int):
    from models_registry.engine import ml

    def run():
        replies = ml.generate_replies(model, tokenizer, convs, params, batch_size=batch_size)
        sizes = [min(batch_size, len(convs) - s) for s in range(0, len(convs), batch_size)]
        return replies, sizes, None

    return run


def service_one_at_a_time(service, served, convs, params):
    def run():
        replies, sizes = [], []
        for messages in convs:
            request = service.submit(served, messages, params)
            replies.append(request.result())
            sizes.append(request.batch_size)
        return replies, sizes, None

    return run


def service_concurrent(service, served, convs, params, *, stream: bool):
    def run():
        requests = [None] * len(convs)
        first_token = [None] * len(convs)
        start = threading.Barrier(len(convs) + 1)
        began = [0.0]

        def client(index: int) -> None:
            start.wait()
            request = service.submit(served, convs[index], params, stream=stream)
            requests[index] = request
            if stream:
                for _ in request.stream():
                    if first_token[index] is None:
                        first_token[index] = time.monotonic() - began[0]
            request.result()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(convs))]
        for thread in threads:
            thread.start()
        began[0] = time.monotonic()
        start.wait()
        for thread in threads:
            thread.join()
        replies = [request.result() for request in requests]
        # One entry per batch: a batch of n requests appears n times among the requests.
        sizes = sorted((r.batch_size for r in requests), reverse=True)
        batches = []
        while sizes:
            batches.append(sizes[0])
            sizes = sizes[sizes[0] :]
        return replies, batches, sorted(t for t in first_token if t is not None) or None

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=16, help="the service's")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="the service's")
    parser.add_argument(
        "--plain-one-at-a-time", action="store_true", help="add plain generate, batch size 1"
    )
    args = parser.parse_args()

    import torch

    from models_registry.engine import ml
    from models_registry.engine.serving import GenerationService, ServedModel

    torch.set_num_threads(cores())
    began = time.monotonic()
    path = model_path()
    device = ml.pick_device()
    convs = conversations(args.requests)
    params = ml.GenerationParams(max_new_tokens=args.max_new_tokens, do_sample=False)
    print(
        f"Generation throughput on {device} ({cores()} CPU cores, {torch.get_num_threads()} "
        f"torch threads): SmolLM2-135M-Instruct from {path.relative_to(REPO)}, "
        f"{args.requests} different prompts, greedy, at most {args.max_new_tokens} new tokens "
        f"each; service: up to {args.max_batch_size} per batch, {args.max_wait_ms:g} ms wait.\n"
        f"Load average at start: {os.getloadavg()[0]:.2f} (above {cores()}, other processes "
        "compete for the cores and the figures mean little).\n",
        flush=True,
    )

    model, tokenizer = ml.load_policy(path)
    # Warm-up: first calls allocate and pick kernels.
    ml.generate_replies(model, tokenizer, convs[:4], ml.GenerationParams(4, do_sample=False))
    served = ServedModel(key="smollm2", base_path=str(path))
    service = GenerationService(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms)
    try:
        service.submit(served, convs[0], ml.GenerationParams(4, do_sample=False)).result()
        modes = [
            measured(
                "service, one at a time", service_one_at_a_time(service, served, convs, params)
            ),
            measured(
                "service, concurrent",
                service_concurrent(service, served, convs, params, stream=False),
            ),
            measured(
                "service, concurrent, streaming",
                service_concurrent(service, served, convs, params, stream=True),
            ),
            measured(
                f"plain generate, batch {args.max_batch_size}",
                plain(model, tokenizer, convs, params, args.max_batch_size),
            ),
        ]
        if args.plain_one_at_a_time:
            modes.append(
                measured("plain generate, one at a time", plain(model, tokenizer, convs, params, 1))
            )
    finally:
        service.close()

    baseline = reference = modes[0]
    print()
    print(
        f"{'mode':<34}{'tokens':>8}{'seconds':>9}{'tok/s':>8}{'vs one':>8}{'batches':>12}"
        f"{'same text':>11}{'others':>8}"
    )
    for mode in modes:
        same = sum(a == b for a, b in zip(mode.texts, reference.texts, strict=True))
        batches = (
            "1 x " + str(len(mode.batch_sizes))
            if set(mode.batch_sizes) == {1}
            else "+".join(str(size) for size in mode.batch_sizes)
        )
        print(
            f"{mode.name:<34}{mode.tokens:>8}{mode.seconds:>9.1f}{mode.tokens_per_s:>8.1f}"
            f"{mode.tokens_per_s / baseline.tokens_per_s:>7.2f}x{batches:>12}"
            f"{f'{same}/{len(convs)}':>11}{mode.others_cores:>8.1f}"
        )
    streaming = modes[2]
    print(
        "\nvs one: tokens/s divided by the service's one-at-a-time figure. batches: the "
        "requests per generate call. same text: replies equal to the one-at-a-time ones "
        "(greedy; a difference is floating-point noise from left padding "
        "tipping a near tie). others: cores other processes kept busy meanwhile."
    )
    if streaming.first_delta_s:
        times = streaming.first_delta_s
        print(
            f"Streaming: time from submission to a client's first text delta: fastest "
            f"{times[0]:.2f} s, median {times[len(times) // 2]:.2f} s, slowest {times[-1]:.2f} s "
            f"(all {args.requests} submitted at once; a later batch waits for the one before)."
        )
    busiest = max(mode.others_cores for mode in modes)
    if busiest > NOISY_CORES:
        print(
            f"WARNING: other processes kept up to {busiest:.1f} cores busy during a mode; "
            "the figures partly measure that load. Rerun on a quiet machine."
        )
    print(
        f"\nLoad average at end: {os.getloadavg()[0]:.2f}; "
        f"{time.monotonic() - began:.0f} s in all.\n"
    )
    print(f"RESULT batched_speedup={modes[1].tokens_per_s / baseline.tokens_per_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
