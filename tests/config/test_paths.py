"""config/paths.py: what a path under DATA_DIR is stored as and what a stored value resolves
to, including values that cannot be relative (outside DATA_DIR) and rows written before
paths were stored relative."""

from pathlib import Path

from config.paths import is_under_data_dir, resolve, to_stored


def test_a_path_under_data_dir_is_stored_relative_and_resolves_under_the_current_one(
    settings, tmp_path
):
    settings.DATA_DIR = tmp_path / "a"
    stored = to_stored(tmp_path / "a" / "models" / "tiny")

    assert stored == "models/tiny"
    settings.DATA_DIR = tmp_path / "b"
    assert resolve(stored) == str(tmp_path / "b" / "models" / "tiny")


def test_a_path_outside_data_dir_is_stored_absolute_and_resolves_unchanged(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    elsewhere = tmp_path / "imported" / "model"

    assert to_stored(elsewhere) == str(elsewhere)
    assert resolve(str(elsewhere)) == str(elsewhere)
    assert not is_under_data_dir(elsewhere)
    assert is_under_data_dir("models/tiny")


def test_an_old_absolute_value_and_an_empty_one_resolve_unchanged(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    old = str(tmp_path / "models" / "run-1-dpo")

    assert resolve(old) == old
    assert (to_stored(""), resolve("")) == ("", "")
    assert to_stored("models/x") == "models/x"  # already the stored form


def test_a_path_under_a_symlinked_data_dir_is_stored_relative(settings, tmp_path):
    real = tmp_path / "real"
    (real / "models").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    settings.DATA_DIR = link

    assert to_stored(Path(real) / "models") == "models"
