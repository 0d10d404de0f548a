"""Moved to annotation/labeling/inputs.py. This re-export stays only while
annotation/arena/services.py and annotation/chat/services.py, held by unfinished work in
the shared tree, still import it in HEAD; it goes in the follow-up."""

from annotation.labeling.inputs import (  # noqa: F401
    MAX_TIME_SPENT_MS,
    check_time_spent,
    parse_client_id,
    whole_number_or_none,
)
