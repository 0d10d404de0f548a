"""The import page and API read server paths under MODEL_IMPORT_ROOT only, with one refusal
for a path outside it whether or not that path exists (so the refusal tells nothing of
what is on the server); ``..`` and symlinks are resolved first. The operator's
import_model command still reads anywhere (tests/models_registry/test_import.py)."""

import shutil

import pytest

from models_registry.models import ModelVersion


@pytest.fixture
def root(settings, tmp_path):
    folder = tmp_path / "imports"
    folder.mkdir()
    settings.MODEL_IMPORT_ROOT = folder
    return folder


@pytest.fixture
def outside(tmp_path, tiny_model_dir):
    """A real model folder next to the root, not under it."""
    return shutil.copytree(tiny_model_dir, tmp_path / "outside-model")


def _import(client, project, source, **extra):
    return client.post(
        f"/api/projects/{project.slug}/model-versions/import/",
        {"name": "imported", "source": str(source), **extra},
    )


def _refusal(root) -> str:
    return (
        f"Import from a folder or .gguf file under the import root {root} (a relative path "
        "is read from there), or give a Hugging Face hub id."
    )


def test_a_path_outside_the_root_is_refused_the_same_whether_it_exists_or_not(
    login, admin_member, project, root, outside
):
    client = login(admin_member)

    existing = _import(client, project, outside)
    missing = _import(client, project, outside.parent / "no-such-model")
    system = _import(client, project, "/etc")

    assert existing.status_code == missing.status_code == system.status_code == 400
    assert existing.json() == missing.json() == system.json() == {"detail": _refusal(root)}
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_a_dot_dot_escape_is_refused(login, admin_member, project, root, outside, form):
    source = f"{root}/../{outside.name}" if form == "absolute" else f"../{outside.name}"

    answer = _import(login(admin_member), project, source)

    assert (answer.status_code, answer.json()) == (400, {"detail": _refusal(root)})
    assert not ModelVersion.objects.exists()


def test_a_symlink_out_of_the_root_is_refused(login, admin_member, project, root, outside):
    (root / "link").symlink_to(outside, target_is_directory=True)

    answer = _import(login(admin_member), project, root / "link")

    assert (answer.status_code, answer.json()) == (400, {"detail": _refusal(root)})
    assert not ModelVersion.objects.exists()


def test_a_folder_under_the_root_imports_for_the_projects_workspace(
    login, admin_member, project, root, tiny_model_dir
):
    inside = shutil.copytree(tiny_model_dir, root / "tiny")
    client = login(admin_member)

    by_path = _import(client, project, inside)
    relative = client.post(
        f"/api/projects/{project.slug}/model-versions/import/",
        {"name": "relative", "source": "tiny"},
    )

    assert by_path.status_code == 201, by_path.json()
    assert relative.status_code == 201, relative.json()
    version = ModelVersion.objects.get(name="imported")
    assert version.workspace == project.workspace
    assert version.base_path == str(inside)
    assert ModelVersion.objects.get(name="relative").base_path == str(inside)


def test_a_symlink_inside_the_root_to_a_folder_inside_it_imports(
    login, admin_member, project, root, tiny_model_dir
):
    inside = shutil.copytree(tiny_model_dir, root / "models" / "tiny")
    (root / "alias").symlink_to(inside, target_is_directory=True)

    answer = _import(login(admin_member), project, root / "alias")

    assert answer.status_code == 201, answer.json()
    assert ModelVersion.objects.get().base_path == str(inside)


def test_an_adapter_under_the_root_on_a_base_outside_it_is_refused(
    login, admin_member, project, root, tiny_reward_dir
):
    adapter = shutil.copytree(tiny_reward_dir, root / "reward")

    answer = _import(login(admin_member), project, adapter, kind="reward")

    assert answer.status_code == 400
    assert "not under the import root" in answer.json()["detail"]
    assert not ModelVersion.objects.exists()


def test_the_import_page_refuses_a_path_outside_the_root(
    login, admin_member, project, root, outside
):
    client = login(admin_member)

    existing = client.post(
        f"/p/{project.slug}/models/import/", {"name": "m", "source": str(outside)}
    )
    missing = client.post(
        f"/p/{project.slug}/models/import/", {"name": "m", "source": "/no/such/folder"}
    )

    assert existing.status_code == missing.status_code == 400
    assert existing.context["form"].non_field_errors() == [_refusal(root)]
    assert missing.context["form"].non_field_errors() == [_refusal(root)]
    assert not ModelVersion.objects.exists()


def test_a_non_admin_cannot_import(login, project, labeler, root, tiny_model_dir):
    inside = shutil.copytree(tiny_model_dir, root / "tiny")

    answer = _import(login(labeler), project, inside)

    assert answer.status_code == 403
    assert not ModelVersion.objects.exists()


def test_a_hub_id_is_still_a_hub_id_under_a_root(login, admin_member, project, root, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    answer = _import(login(admin_member), project, "HuggingFaceTB/SmolLM2-135M-Instruct")

    assert answer.status_code == 400
    assert "hub could not be reached: offline mode" in answer.json()["detail"]
    assert not ModelVersion.objects.exists()
