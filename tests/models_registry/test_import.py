"""Importing outside models into the registry: folders, GGUF files, hub ids; refusals."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from config.errors import ServiceError
from models_registry.engine import ml
from models_registry.models import ModelVersion
from models_registry.services import model_version_import, reward_scorer
from tests.factories import make_version

# --- a tiny GGUF file ------------------------------------------------------------------


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: one printable character per byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def write_tiny_gguf(path: Path) -> Path:
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer and ChatML template, as
    float32 GGUF: what the real SmolLM2 file holds, small enough to convert in a second."""
    import gguf

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*specials, *_byte_level_alphabet(), "Ġt", "he"]
    hidden, feed_forward, heads, kv_heads, blocks = 32, 64, 2, 1, 2
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(blocks)
    writer.add_context_length(512)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rng = np.random.default_rng(0)

    def weights(name, *shape):
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    weights("token_embd.weight", len(tokens), hidden)
    for block in range(blocks):
        writer.add_tensor(f"blk.{block}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{block}.ffn_norm.weight", np.ones(hidden, np.float32))
        weights(f"blk.{block}.attn_q.weight", hidden, hidden)
        weights(f"blk.{block}.attn_k.weight", kv_heads * head_dim, hidden)
        weights(f"blk.{block}.attn_v.weight", kv_heads * head_dim, hidden)
        weights(f"blk.{block}.attn_output.weight", hidden, hidden)
        weights(f"blk.{block}.ffn_gate.weight", feed_forward, hidden)
        weights(f"blk.{block}.ffn_up.weight", feed_forward, hidden)
        weights(f"blk.{block}.ffn_down.weight", hidden, feed_forward)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def _nothing_stored(settings) -> bool:
    models_dir = Path(settings.MODELS_DIR)
    leftovers = list(models_dir.iterdir()) if models_dir.exists() else []
    return ModelVersion.objects.count() == 0 and leftovers == []


# --- folders -------------------------------------------------------------------------


def test_a_model_folder_imports_as_a_candidate_base_used_in_place(db, tiny_model_dir, settings):
    version = model_version_import(name="tiny imported", source=str(tiny_model_dir))

    assert (version.kind, version.method, version.state) == ("policy", "base", "candidate")
    assert version.imported_from == str(tiny_model_dir)
    assert version.base_path == str(tiny_model_dir)
    assert version.adapter_path == ""
    assert version.promoted_at is None
    assert set(version.library_versions) == {"torch", "transformers", "peft"}
    assert not Path(settings.MODELS_DIR).exists()  # nothing copied


def test_a_reward_adapter_folder_imports_on_its_local_base(db, tiny_reward_dir, tiny_model_dir):
    version = model_version_import(name="rm", source=str(tiny_reward_dir), kind="reward")

    assert (version.kind, version.state) == ("reward", "candidate")
    assert version.adapter_path == str(tiny_reward_dir)
    assert Path(version.base_path).resolve() == Path(tiny_model_dir).resolve()
    scores = reward_scorer(version)(
        [[{"role": "user", "content": "Question 1?"}]] * 2, ["yes", "no"]
    )
    assert len(scores) == 2


def test_reward_and_policy_folders_are_not_confused(db, tiny_model_dir, tiny_reward_dir, settings):
    with pytest.raises(ServiceError, match="is not a reward model: reward_normalization.json"):
        model_version_import(name="rm", source=str(tiny_model_dir), kind="reward")
    with pytest.raises(ServiceError, match="holds a reward model: import it with kind reward"):
        model_version_import(name="policy", source=str(tiny_reward_dir))

    assert _nothing_stored(settings)


def test_an_adapter_whose_base_is_not_a_local_folder_is_refused(db, tmp_path, tiny_reward_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for file in tiny_reward_dir.iterdir():
        if file.is_file():
            (adapter / file.name).write_bytes(file.read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M"
    (adapter / "adapter_config.json").write_text(json.dumps(config))

    with pytest.raises(ServiceError, match="whose base model .HuggingFaceTB/SmolLM2-135M. is not"):
        model_version_import(name="rm", source=str(adapter), kind="reward")
    assert ModelVersion.objects.count() == 0


# --- GGUF ----------------------------------------------------------------------------


def test_a_gguf_file_is_converted_once_into_the_models_folder(db, tiny_gguf, settings):
    started = time.perf_counter()
    version = model_version_import(name="Tiny GGUF", source=str(tiny_gguf))
    seconds = time.perf_counter() - started

    target = Path(settings.MODELS_DIR) / "tiny-gguf"
    assert version.base_path == str(target)
    assert (version.method, version.state, version.imported_from) == (
        "base",
        "candidate",
        str(tiny_gguf),
    )
    ml.verify_artifact(target)
    config = json.loads((target / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 2)
    assert "quantization_config" not in config
    model, tokenizer = ml.load_policy(target)
    reply = ml.generate_replies(
        model,
        tokenizer,
        [[{"role": "user", "content": "the"}]],
        ml.GenerationParams(max_new_tokens=3),
    )[0]
    assert reply.completion_tokens >= 1
    assert seconds < 10, f"tiny GGUF import took {seconds:.1f}s"


@pytest.mark.smoke
def test_the_bundled_smollm2_gguf_imports(db, settings):
    source = ml.smollm2_gguf_path()

    version = model_version_import(name="SmolLM2 again", source=str(source))

    config = json.loads((Path(version.base_path) / "config.json").read_text())
    assert config["num_hidden_layers"] == 30
    assert version.imported_from == str(source)


def test_a_garbage_gguf_file_is_refused_and_leaves_no_folder(db, tmp_path, settings):
    garbage = tmp_path / "broken.gguf"
    garbage.write_bytes(b"GGUF" + bytes(range(256)) * 4)

    with pytest.raises(ServiceError, match="could not be converted from GGUF"):
        model_version_import(name="broken", source=str(garbage))

    assert _nothing_stored(settings)


def test_a_gguf_import_refuses_a_name_whose_folder_exists(db, tiny_gguf, settings):
    (Path(settings.MODELS_DIR) / "taken").mkdir(parents=True)

    with pytest.raises(ServiceError, match="already exists: choose another name"):
        model_version_import(name="Taken", source=str(tiny_gguf))
    assert ModelVersion.objects.count() == 0


# --- hub ids ---------------------------------------------------------------------------


def test_a_hub_id_in_offline_mode_fails_clearly(db, monkeypatch, settings):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(ServiceError, match="hub could not be reached: offline mode"):
        model_version_import(name="hub", source="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert _nothing_stored(settings)


def test_a_hub_id_without_a_network_fails_fast_and_clearly(db, monkeypatch, settings):
    import huggingface_hub.constants

    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once,
    # as with no network at all, whatever network the test machine has.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()

    with pytest.raises(ServiceError, match=r"hub could not be reached \(http://127.0.0.1:9\)"):
        model_version_import(name="hub", source="HuggingFaceTB/SmolLM2-135M-Instruct")

    assert time.perf_counter() - started < 5
    assert _nothing_stored(settings)


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "source", "kind", "message"),
    [
        ("", "/tmp", "policy", "Give the model a name"),
        ("x" * 201, "/tmp", "policy", "longer than 200 characters"),
        ("m", "", "policy", "Give a source"),
        ("m", "{folder}", "judge", "Unknown kind 'judge'"),
        ("m", "/no/such/model", "policy", "/no/such/model does not exist on the server"),
        ("m", "missing.gguf", "policy", "missing.gguf does not exist on the server"),
        ("m", "{folder}/notes.txt", "policy", "neither a model folder nor a .gguf file"),
        ("m", "{folder}", "policy", "holds neither a model .config.json. nor a LoRA adapter"),
        ("m", "not a hub id!", "policy", "nor a hub id"),
        ("m", "{folder}/weights.gguf", "reward", "A GGUF file imports as a policy"),
        ("m", "org/model", "reward", "A hub model imports as a policy"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error_and_stores_nothing(
    db, tmp_path, settings, name, source, kind, message
):
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")

    with pytest.raises(ServiceError, match=message):
        model_version_import(name=name, source=source.format(folder=tmp_path), kind=kind)

    assert _nothing_stored(settings)


def test_a_folder_with_a_broken_weights_file_is_refused(db, tmp_path, tiny_model_dir):
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")

    with pytest.raises(ServiceError, match="is not a readable safetensors file"):
        model_version_import(name="broken", source=str(tmp_path))
    assert ModelVersion.objects.count() == 0


def test_a_duplicate_name_is_refused_before_any_work(db, tiny_gguf, settings):
    make_version("taken")

    with pytest.raises(ServiceError, match="A model version named 'taken' already exists"):
        model_version_import(name=" taken ", source=str(tiny_gguf))

    assert ModelVersion.objects.count() == 1
    assert not Path(settings.MODELS_DIR).exists()


# --- command, page and API -------------------------------------------------------------


def test_the_command_imports_and_reports_refusals(db, tiny_model_dir, capsys):
    call_command("import_model", "from-shell", str(tiny_model_dir))

    version = ModelVersion.objects.get(name="from-shell")
    assert (
        f"Imported from-shell (version {version.pk}, policy, candidate)" in capsys.readouterr().out
    )
    with pytest.raises(CommandError, match="already exists"):
        call_command("import_model", "from-shell", str(tiny_model_dir))
    with pytest.raises(CommandError, match="is not a reward model"):
        call_command("import_model", "rm", str(tiny_model_dir), "--kind", "reward")
    assert ModelVersion.objects.count() == 1


def test_the_import_page_imports_and_shows_the_version(
    login, admin_member, project, tiny_model_dir, settings
):
    settings.MODEL_IMPORT_ROOT = tiny_model_dir.parent
    client = login(admin_member)

    answer = client.post(
        f"/p/{project.slug}/models/import/",
        {"name": "tiny-from-page", "source": str(tiny_model_dir), "kind": "policy"},
    )

    version = ModelVersion.objects.get(name="tiny-from-page")
    assert answer.status_code == 302
    assert answer["Location"] == f"/p/{project.slug}/models/{version.pk}/"
    page = client.get(answer["Location"]).content.decode()
    assert "Imported tiny-from-page as a candidate." in page
    assert "tiny-from-page" in page
    assert f'<code id="imported-from">{tiny_model_dir}</code>' in page
    assert "Artifacts: full weights" in page
    size = (tiny_model_dir / "model.safetensors").stat().st_size
    assert f'data-bytes="{size}"' in page


def test_the_import_page_shows_a_refusal_and_stores_nothing(login, admin_member, project):
    answer = login(admin_member).post(
        f"/p/{project.slug}/models/import/", {"name": "m", "source": "/no/such/folder"}
    )

    assert answer.status_code == 400
    assert "under the import root" in answer.content.decode()
    assert ModelVersion.objects.count() == 0


def test_the_import_api_answers_201_or_a_detail(
    login, admin_member, project, tiny_model_dir, settings
):
    settings.MODEL_IMPORT_ROOT = tiny_model_dir.parent
    client = login(admin_member)
    url = f"/api/projects/{project.slug}/model-versions/import/"

    created = client.post(url, {"name": "api-tiny", "source": str(tiny_model_dir)})
    refused = client.post(url, {"name": "api-tiny", "source": str(tiny_model_dir)})
    invalid = client.post(url, {"name": "x", "source": "/tmp", "kind": "judge"})

    assert created.status_code == 201
    assert created.json()["state"] == "candidate"
    assert created.json()["imported_from"] == str(tiny_model_dir)
    assert (refused.status_code, refused.json()) == (
        400,
        {"detail": "A model version named 'api-tiny' already exists."},
    )
    assert invalid.status_code == 400
    assert "kind" in invalid.json()
    assert ModelVersion.objects.count() == 1
