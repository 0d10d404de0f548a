"""Registry selectors that pick one version for other apps."""

from models_registry.models import ModelVersion
from models_registry.selectors import latest_reward_model
from tests.factories import make_version


def test_latest_reward_model_is_the_newest_neither_retired_nor_intermediate(project):
    assert latest_reward_model(project=project) is None
    reward = {"kind": ModelVersion.Kind.REWARD, "method": ModelVersion.Method.REWARD}
    older = make_version("older-reward", **reward)
    make_version("newer-policy")
    make_version("run-stage", intermediate=True, **reward)
    make_version("retired-reward", state=ModelVersion.State.RETIRED, **reward)

    assert latest_reward_model(project=project) == older
