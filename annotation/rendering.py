"""Moved to annotation/labeling/rendering.py. This re-export stays only while
annotation/arena/api.py, held by unfinished work in the shared tree, still imports it in
HEAD; it goes in the follow-up."""

from annotation.labeling.rendering import render_markdown  # noqa: F401
