"""LoRA versions of one base share its weights (models_registry.engine.ml.load_policy).

A tiny random Llama with two LoRA adapters of different random non-zero weights. Replies
through the shared base are compared, as exact text, with replies from a separate copy
that has the adapter merged in (``merge_and_unload``), the way versions loaded before.
"""

from __future__ import annotations

import gc
import json
import shutil
import threading
import weakref
from pathlib import Path

import pytest
import torch

from models_registry.engine import ml
from models_registry.engine.ml import GenerationParams, generate_replies, load_policy

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three."}],
]
GREEDY = GenerationParams(max_new_tokens=10, do_sample=False)


def _save_varied_llama(folder: Path, tokenizer_dir: Path, *, hidden_size: int = 32) -> Path:
    """A tiny Llama with large random weights (std 0.5), so greedy replies are varied
    words rather than the run of newlines the default initialisation gives."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tokenizer_dir)
    config.initializer_range = 0.5
    config.hidden_size = hidden_size
    config.intermediate_size = 2 * hidden_size
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
    for path in tokenizer_dir.iterdir():
        if path.name not in ("config.json", "model.safetensors"):
            shutil.copy(path, folder / path.name)  # tokenizer, chat template, generation config
    return folder


def _save_random_lora(base_dir: Path, folder: Path, *, seed: int, **lora: object) -> Path:
    """A LoRA adapter on every projection of ``base_dir`` with random non-zero A and B
    (peft's ``init_lora_weights=False``), so it changes the replies."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
        init_lora_weights=False,
        **lora,
    )
    torch.manual_seed(seed)
    get_peft_model(model, config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def base_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return _save_varied_llama(tmp_path_factory.mktemp("shared-base"), tiny_model_dir)


@pytest.fixture(scope="module")
def adapters(base_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shared-base-adapters")
    return (
        _save_random_lora(base_dir, root / "first", seed=1),
        _save_random_lora(base_dir, root / "second", seed=2),
    )


@pytest.fixture(autouse=True)
def empty_cache():
    load_policy.cache_clear()
    yield
    load_policy.cache_clear()


def _texts(model, tokenizer) -> list[str]:
    return [r.text for r in generate_replies(model, tokenizer, CONVERSATIONS, GREEDY)]


def _separate_copy(base_dir: Path, adapter_dir: Path | None):
    """The base loaded on its own, with ``adapter_dir`` merged in: the old way."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return model.to(ml.pick_device()).eval()


def _q_proj_weight(view) -> torch.Tensor:
    q_proj = view.model.layers[0].self_attn.q_proj
    return getattr(q_proj, "base_layer", q_proj).weight


def test_two_lora_versions_share_one_copy_of_their_base(base_dir, adapters):
    # when
    first, _ = load_policy(base_dir, adapters[0])
    second, _ = load_policy(base_dir, adapters[1])
    base, _ = load_policy(base_dir)

    # then: one base loaded, both adapters attached to it, the same weight storage seen by all
    assert ml.loaded_bases() == {(str(base_dir), None): [str(adapters[0]), str(adapters[1])]}
    assert _q_proj_weight(first).data_ptr() == _q_proj_weight(second).data_ptr()
    assert _q_proj_weight(first).data_ptr() == _q_proj_weight(base).data_ptr()
    assert first.get_input_embeddings().weight.data_ptr() == (
        second.get_input_embeddings().weight.data_ptr()
    )
    assert load_policy(str(base_dir), str(adapters[0]))[0] is first
    assert not first.training


def test_shared_base_replies_equal_a_merged_copy_for_each_adapter_and_the_base(base_dir, adapters):
    # given: the replies of separate copies, each adapter merged into its own base
    tokenizer = load_policy(base_dir)[1]
    expected = {
        name: _texts(_separate_copy(base_dir, adapter), tokenizer)
        for name, adapter in (("base", None), ("first", adapters[0]), ("second", adapters[1]))
    }
    assert len({tuple(texts) for texts in expected.values()}) == 3  # the adapters matter
    assert all(text for texts in expected.values() for text in texts)

    # when: the versions take turns on the one shared base
    views = {
        "first": load_policy(base_dir, adapters[0]),
        "second": load_policy(base_dir, adapters[1]),
        "base": load_policy(base_dir),
    }
    got = {name: _texts(*views[name]) for name in ("first", "base", "second")}
    again = _texts(*views["first"])

    # then
    assert got == expected
    assert again == expected["first"]


def test_concurrent_generation_with_different_adapters_matches_sequential(base_dir, adapters):
    # given
    versions = [load_policy(base_dir, adapters[0]), load_policy(base_dir, adapters[1])]
    versions.append(load_policy(base_dir))
    sequential = [_texts(*version) for version in versions]
    rounds = 3
    results: dict[int, list[list[str]]] = {i: [] for i in range(len(versions))}
    errors: list[BaseException] = []
    start = threading.Barrier(len(versions))

    def work(index: int) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                results[index].append(_texts(*versions[index]))
        except BaseException as error:  # reported below, in the test's own thread
            errors.append(error)

    # when: one thread per version, all on the same base at once
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(versions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # then
    assert errors == []
    assert results == {i: [sequential[i]] * rounds for i in range(len(versions))}


def test_an_evicted_adapter_is_deleted_from_its_base_and_reloads_when_used(
    base_dir, adapters, monkeypatch
):
    # given: room for one adapter per base
    monkeypatch.setattr(ml, "MAX_ADAPTERS_PER_BASE", 1)
    first, tokenizer = load_policy(base_dir, adapters[0])
    expected = _texts(first, tokenizer)
    first_lora = weakref.ref(first.model.layers[0].self_attn.q_proj.lora_A["version_0"].weight)

    # when
    load_policy(base_dir, adapters[1])
    gc.collect()

    # then: the first adapter is gone from the base and its weights are freed
    assert ml.loaded_bases() == {(str(base_dir), None): [str(adapters[1])]}
    lora_names = {n for n, _ in first.named_parameters() if "lora_" in n}
    assert lora_names and not any(".version_0." in n for n in lora_names)
    assert first_lora() is None
    # ... and the view still held on it loads it again, with the same replies
    assert _texts(first, tokenizer) == expected
    assert ml.loaded_bases() == {(str(base_dir), None): [str(adapters[0])]}


def test_an_evicted_base_is_freed_and_reloads_when_used(base_dir, adapters, tmp_path, monkeypatch):
    # given: room for one base, a LoRA version on it
    monkeypatch.setattr(ml, "MAX_LOADED_BASES", 1)
    first, tokenizer = load_policy(base_dir, adapters[0])
    expected = _texts(first, tokenizer)
    old_weight = weakref.ref(_q_proj_weight(first))
    other_base = shutil.copytree(base_dir, tmp_path / "other-base")

    # when
    load_policy(other_base)
    gc.collect()

    # then
    assert ml.loaded_bases() == {(str(other_base), None): []}
    assert old_weight() is None
    assert _texts(first, tokenizer) == expected


def test_the_last_adapter_evicted_leaves_the_plain_base(base_dir, adapters):
    # given
    base, tokenizer = load_policy(base_dir)
    expected = _texts(base, tokenizer)
    load_policy(base_dir, adapters[0])
    [loaded] = ml._loaded_bases.values()

    # when
    with loaded.lock:
        loaded.detach(str(adapters[0]))

    # then: no LoRA layer is left in the model, and the base replies as before
    assert not any("lora_" in name for name, _ in base.named_parameters())
    assert _texts(base, tokenizer) == expected


def test_an_adapter_for_another_base_fails_and_leaves_the_shared_base_as_it_was(
    base_dir, adapters, tiny_model_dir, tmp_path
):
    # given: a version in use, and an adapter trained on a wider model
    first, tokenizer = load_policy(base_dir, adapters[0])
    base, _ = load_policy(base_dir)
    expected = (_texts(first, tokenizer), _texts(base, tokenizer))
    wider = _save_varied_llama(tmp_path / "wider", tiny_model_dir, hidden_size=64)
    wrong = _save_random_lora(wider, tmp_path / "wrong", seed=3)

    # when
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_policy(base_dir, wrong)

    # then
    assert ml.loaded_bases() == {(str(base_dir), None): [str(adapters[0])]}
    assert (_texts(first, tokenizer), _texts(base, tokenizer)) == expected


def test_a_first_adapter_that_fails_to_load_leaves_no_trace_on_the_base(
    base_dir, tiny_model_dir, tmp_path
):
    # given
    base, tokenizer = load_policy(base_dir)
    expected = _texts(base, tokenizer)
    wider = _save_varied_llama(tmp_path / "wider", tiny_model_dir, hidden_size=64)
    wrong = _save_random_lora(wider, tmp_path / "wrong", seed=3)

    # when
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_policy(base_dir, wrong)

    # then: the base is loaded afresh for whoever uses it next
    assert _texts(base, tokenizer) == expected
    assert not any("lora_" in name for name, _ in base.named_parameters())


def test_a_lora_that_trains_the_base_biases_gets_a_merged_copy_of_its_own(
    base_dir, adapters, tmp_path
):
    # given: LoRA with bias="all" writes the base's biases, so it cannot share the base
    biased = _save_random_lora(base_dir, tmp_path / "biased", seed=4, bias="all")
    config = json.loads((biased / "adapter_config.json").read_text())
    assert config["bias"] == "all"

    # when
    model, tokenizer = load_policy(base_dir, biased)
    load_policy(base_dir, adapters[0])

    # then
    assert ml.loaded_bases() == {
        (str(base_dir), str(biased)): [],
        (str(base_dir), None): [str(adapters[0])],
    }
    assert _texts(model, tokenizer) == _texts(_separate_copy(base_dir, biased), tokenizer)


def test_forward_passes_and_logprobs_run_with_the_views_adapter(base_dir, adapters):
    # given: a reply of the second version, and the merged copies' figures for it
    first, tokenizer = load_policy(base_dir, adapters[0])
    second, _ = load_policy(base_dir, adapters[1])
    messages = CONVERSATIONS[1]
    [reply] = generate_replies(second, tokenizer, [messages], GREEDY)
    encoded = tokenizer("Hello there", return_tensors="pt").to(ml.pick_device())
    merged = {
        view: _separate_copy(base_dir, adapter)
        for view, adapter in ((first, adapters[0]), (second, adapters[1]))
    }

    for view in (first, second, first):
        # when
        with torch.inference_mode():
            logits = view(**encoded).logits
            expected_logits = merged[view](**encoded).logits
        logprobs = ml.reply_logprobs(view, tokenizer, messages, reply.token_ids, top=2)
        expected = ml.reply_logprobs(merged[view], tokenizer, messages, reply.token_ids, top=2)

        # then: the same up to the rounding that merging changes
        torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
        assert [e["token"] for e in logprobs] == [e["token"] for e in expected]
        assert [e["logprob"] for e in logprobs] == pytest.approx(
            [e["logprob"] for e in expected], abs=1e-4
        )
