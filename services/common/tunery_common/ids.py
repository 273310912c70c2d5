"""Identifiers shaped like OpenAI's (`file-…`, `ftjob-…`, `chatcmpl-…`)."""

import secrets
import time


def new_id(prefix: str) -> str:
    """`<prefix>-` + the creation time in nanoseconds (16 hex digits) + 8 random hex digits: ids of
    one kind sort in creation order, so lists stay newest-first when two records share a second."""
    return f"{prefix}-{time.time_ns():016x}{secrets.token_hex(4)}"
