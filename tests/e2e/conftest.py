"""The whole stack started through the launcher (`tunery up --random-ports`) in a temporary home."""

from collections.abc import Iterator

import pytest
from stack_keys import KEYS
from stack_launch import RunningStack, launched_stack

# The LLM judge is the stack's own gateway (with the internal key `tunery up` makes) serving the
# tiny model: quick, and constrained decoding holds even a random model's verdicts to their schema.
JUDGE_ENV = {"TUNERY_EVALJUDGE_JUDGE_MODEL": "tiny-random-llama"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[RunningStack]:
    with launched_stack(tmp_path_factory.mktemp("tunery-home"), KEYS, JUDGE_ENV) as running:
        yield running
