"""The data browser: every prompt, response and judgment of a project, searched and
filtered, paged newest first by id; a judgment as its labeler saw it; soft delete and
restore of prompts and responses."""
