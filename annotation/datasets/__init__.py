"""Datasets: the project's judgments as the rows training libraries read (exports, and the
selectors that training's snapshots freeze); imports, curation and versions grow here."""
