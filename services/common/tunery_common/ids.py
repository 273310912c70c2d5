"""Identifiers shaped like OpenAI's (`file-…`, `ftjob-…`, `chatcmpl-…`)."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"
