"""Exact match and JSON validity, the graders of the quick eval."""

import json


def _normalise_json(text: str):
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def json_valid(output: str) -> bool:
    return _normalise_json(output.strip())[0]


def exact_match(output: str, reference: str) -> bool:
    """Equal after trimming; two JSON documents match when they parse to the same value."""
    out, ref = output.strip(), reference.strip()
    if out == ref:
        return True
    ok_out, out_value = _normalise_json(out)
    ok_ref, ref_value = _normalise_json(ref)
    return ok_out and ok_ref and out_value == ref_value
