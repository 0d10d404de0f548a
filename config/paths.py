"""Paths of files under ``DATA_DIR`` are stored relative to it (DESIGN.md: "Paths are stored
relative to DATA_DIR"), so a worker on another machine that mounts the same data at another
place finds a run's dataset and a version's weights.

``to_stored`` makes the stored form and ``resolve`` the absolute path under this process's
``DATA_DIR``. A path outside ``DATA_DIR`` (a model folder imported in place) cannot be made
relative: it is stored absolute, and such a row, like a row written before paths were stored
relative, resolves unchanged. ``DataDirPathField`` applies both at the database boundary, so
code reads and writes absolute paths and only the database holds relative ones; Django has
no such field, hence this one.
"""

from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import models


def _relative_to_data_dir(path: Path) -> PurePosixPath | None:
    data_dir = Path(settings.DATA_DIR)
    for candidate, root in ((path, data_dir), (path.resolve(), data_dir.resolve())):
        try:
            return PurePosixPath(candidate.relative_to(root).as_posix())
        except ValueError:
            continue
    return None


def to_stored(path) -> str:
    """The stored form of ``path``: relative to ``DATA_DIR`` (POSIX separators) when it lies
    under it; absolute when it lies elsewhere; already-relative values and "" unchanged."""
    if path is None or str(path) == "":
        return ""
    absolute = Path(path)
    if not absolute.is_absolute():
        return PurePosixPath(str(path).replace("\\", "/")).as_posix()
    relative = _relative_to_data_dir(absolute)
    return str(absolute) if relative is None else relative.as_posix()


def resolve(stored) -> str:
    """The absolute path for a stored value under this process's ``DATA_DIR``. An absolute
    value (outside ``DATA_DIR``, or written before paths were stored relative) is returned
    unchanged; "" stays ""."""
    if stored is None or str(stored) == "":
        return ""
    path = Path(stored)
    return str(path) if path.is_absolute() else str(Path(settings.DATA_DIR) / path)


def is_under_data_dir(path) -> bool:
    """True when ``path`` lies under ``DATA_DIR``: workers sharing the mount can read it."""
    return bool(path) and _relative_to_data_dir(Path(resolve(path))) is not None


class DataDirPathField(models.CharField):
    """A path column: the database holds ``to_stored(path)``, Python code sees
    ``resolve(stored)``, an absolute path under this process's ``DATA_DIR``."""

    def from_db_value(self, value, expression, connection):
        return None if value is None else resolve(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return None if value is None else to_stored(value)
