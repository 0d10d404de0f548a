"""Sources the API fuzz (tests/test_api_fuzz.py) sent to the model import that failed with
500 before: ``~someone`` for a user the server does not know (pathlib raises RuntimeError)
and a name longer than the file system allows (OSError ENAMETOOLONG). Both get the import
root's refusal and store nothing."""

import pytest

from models_registry.models import ModelVersion


@pytest.fixture
def root(settings, tmp_path):
    folder = tmp_path / "imports"
    folder.mkdir()
    settings.MODEL_IMPORT_ROOT = folder
    return folder


@pytest.mark.parametrize("source", ["~no-such-user-here/model", "~no-such-user", "./" + "a" * 300])
def test_an_odd_source_is_refused_not_a_server_error(client, admin_member, project, root, source):
    client.force_login(admin_member)

    answer = client.post(
        f"/api/projects/{project.slug}/model-versions/import/",
        {"name": "imported", "source": source},
    )

    assert answer.status_code == 400
    assert "import root" in answer.json()["detail"]
    assert not ModelVersion.objects.exists()
