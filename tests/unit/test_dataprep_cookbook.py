"""Our cookbook error classes count exactly as the OpenAI cookbook's chat data-prep loop does.

`cookbook_format_errors` is the cookbook's check loop as published ("Data preparation and analysis
for chat model fine-tuning"); a seeded generator writes a messy file without tools or function
calls (the cookbook predates them) and only of shapes the cookbook's loop survives.
"""

import json
import random
from collections import Counter, defaultdict

from tunery_dataprep.cookbook import COOKBOOK_CODES
from tunery_dataprep.validate import LineParser


def cookbook_format_errors(dataset: list) -> dict[str, int]:
    format_errors = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1
    return dict(format_errors)


def _message(rng: random.Random, role: str) -> dict:
    msg = {"role": role, "content": f"{role} says {rng.randint(0, 10**6)}"}
    mutation = rng.random()
    if mutation < 0.05:
        del msg["role"]
    elif mutation < 0.10:
        del msg["content"]
    elif mutation < 0.13:
        msg["content"] = ""
    elif mutation < 0.16:
        msg["content"] = None
    elif mutation < 0.18:
        msg["content"] = rng.choice([42, ["a"], {"text": "x"}])
    elif mutation < 0.22:
        msg["role"] = rng.choice(["bot", "customer", "", "Assistant", None, 3])
    elif mutation < 0.26:
        msg[rng.choice(["extra", "id", "metadata"])] = 1
        if rng.random() < 0.3:
            msg["another"] = 2  # two unknown keys still count once
    elif mutation < 0.28:
        msg = {}
    elif mutation < 0.30:
        msg["name"] = "alice"
    return msg


def messy_example(rng: random.Random) -> object:
    kind = rng.random()
    if kind < 0.03:
        return rng.choice([[1, 2], "text", 7, None, True])
    if kind < 0.06:
        return rng.choice([{}, {"messages": []}, {"messages": None}, {"prompt": "p", "completion": "c"}])
    roles = (["system"] if rng.random() < 0.5 else []) + ["user", "assistant"] * rng.randint(1, 3)
    if rng.random() < 0.08:
        roles = [r for r in roles if r != "assistant"]
    return {"messages": [_message(rng, role) for role in roles]}


def our_format_errors(lines: list[str]) -> dict[str, int]:
    parser = LineParser()
    counts = Counter(
        e.code for i, line in enumerate(lines, 1) if (p := parser.parse(line.encode(), i)) for e in p.errors
    )
    return {code: n for code, n in counts.items() if code in COOKBOOK_CODES}


def test_counts_equal_the_cookbooks_on_a_messy_file():
    rng = random.Random(7)
    dataset = [messy_example(rng) for _ in range(3000)]
    lines = [json.dumps(ex) for ex in dataset]

    expected = cookbook_format_errors([json.loads(line) for line in lines])
    assert set(expected) == set(COOKBOOK_CODES)  # the generator exercises every class
    assert our_format_errors(lines) == expected


def test_every_class_on_a_small_file():
    dataset = [
        [1],
        {"messages": []},
        {"messages": [{"role": "user"}, {"role": "bot", "content": "x", "x": 1, "y": 2}]},
        {"messages": [{"content": ""}, {"role": "assistant", "content": "ok"}]},
    ]
    expected = cookbook_format_errors(dataset)
    assert expected == {
        "data_type": 1,
        "missing_messages_list": 1,
        "message_missing_key": 2,
        "missing_content": 2,
        "unrecognized_role": 2,
        "message_unrecognized_key": 1,
        "example_missing_assistant_message": 1,
    }
    assert our_format_errors([json.dumps(ex) for ex in dataset]) == expected
