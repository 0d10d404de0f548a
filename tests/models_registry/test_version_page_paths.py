"""The version page marks a weights folder outside DATA_DIR (imported in place, stored as
an absolute path that only machines with that folder can load); folders under DATA_DIR,
stored relative, show as absolute paths under this server's DATA_DIR, unmarked."""

import shutil

from django.conf import settings

from tests.factories import make_version

MARK = "outside DATA_DIR"


def test_a_folder_outside_data_dir_is_marked_and_one_inside_is_not(
    login, admin_member, tiny_model_dir
):
    outside = make_version("in-place", path=str(tiny_model_dir))
    inside_folder = settings.MODELS_DIR / "tiny"
    shutil.copytree(tiny_model_dir, inside_folder)
    inside = make_version("copied", path=str(inside_folder))
    client = login(admin_member)

    outside_page = client.get(f"/p/alpha/models/{outside.pk}/").content.decode()
    inside_page = client.get(f"/p/alpha/models/{inside.pk}/").content.decode()

    assert f'{tiny_model_dir}</code> <span class="hint">({MARK}' in outside_page
    assert f"<code>{inside_folder}</code>" in inside_page
    assert MARK not in inside_page
