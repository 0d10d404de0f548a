"""The demo data that `make run` loads."""

from annotation.management.demo import demo_load
from annotation.models import Constitution, Judgment, Project


def test_the_demo_loads_once_and_holds_the_default_constitution(db):
    demo_load(password="pw-for-tests", seed=0)
    counts = (Project.objects.count(), Judgment.objects.count())

    demo_load(password="pw-for-tests", seed=0)

    assert (Project.objects.count(), Judgment.objects.count()) == counts
    assert list(Constitution.objects.values_list("name", "version")) == [("loop-default", 1)]
