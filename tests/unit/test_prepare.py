"""Preparation helpers: convert to chat JSONL, split without leakage, mix in general examples."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from tunery_dataprep.prepare import convert_to_chat, mix_general, split_dataset
from tunery_dataprep.quality import CheckContext, ExampleText, example_texts, run_checks, sketch_examples


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_chat(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = [
        json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]})
        for p, a in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def chat(prompt: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {
        "messages": [*messages, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    }


def test_convert_csv_with_bom_quoted_newlines_and_a_system_prompt(tmp_path):
    src = tmp_path / "data.csv"
    src.write_bytes(
        '\ufeffprompt,completion\n"Hi, I need\na refund",refund\nWhere is my parcel?,shipping\n'.encode()
    )
    out = tmp_path / "chat.jsonl"
    assert convert_to_chat(src, out, system="Classify the ticket.") == 2
    assert read_jsonl(out) == [
        chat("Hi, I need\na refund", "refund", "Classify the ticket."),
        chat("Where is my parcel?", "shipping", "Classify the ticket."),
    ]


def test_convert_csv_with_named_columns(tmp_path):
    src = tmp_path / "faq.csv"
    src.write_text("id,question,answer\n1,What are your hours?,9 to 5.\n")
    out = tmp_path / "chat.jsonl"
    assert convert_to_chat(src, out, prompt_col="question", completion_col="answer") == 1
    assert read_jsonl(out) == [chat("What are your hours?", "9 to 5.")]


def test_convert_legacy_prompt_completion_jsonl_strips_separator_and_stop(tmp_path):
    src = tmp_path / "legacy.jsonl"
    rows = [
        {"prompt": f"Ticket {i}: late parcel\n\n###\n\n", "completion": " shipping END"} for i in range(3)
    ]
    src.write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    out = tmp_path / "chat.jsonl"
    assert convert_to_chat(src, out) == 3
    assert read_jsonl(out)[0] == chat("Ticket 0: late parcel", "shipping")


def test_convert_keeps_text_that_only_some_rows_end_with(tmp_path):
    src = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "Rate this ###", "completion": "5"}, {"prompt": "Rate that", "completion": "4"}]
    src.write_text("\n".join(map(json.dumps, rows)))
    convert_to_chat(src, tmp_path / "chat.jsonl")
    assert read_jsonl(tmp_path / "chat.jsonl")[0] == chat("Rate this ###", "5")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "a.csv",
            "question,completion\nhi,hello\n",
            "line 1: no column 'prompt' (columns: question, completion)",
        ),
        ("b.csv", "prompt,completion\nhi,hello\n\nbye,\n", "line 4: empty 'completion'"),
        (
            "c.csv",
            'prompt,completion\n"two\nlines",x\nhi,there,extra\n',
            "line 4: 3 cells where the header has 2",
        ),
        ("d.jsonl", '{"prompt": "hi", "completion": "x"}\n{"prompt": "hi"\n', "line 2: invalid JSON"),
        ("e.jsonl", '{"prompt": "hi", "completion": 3}\n', "line 1: 'completion' is not text"),
        ("f.jsonl", '{"prompt": "hi", "answer": "x"}\n', "line 1: no 'completion'"),
        ("g.csv", "", "line 1: g.csv holds no examples"),
    ],
)
def test_convert_errors_name_the_line_and_write_nothing(tmp_path, name, content, message):
    src = tmp_path / name
    src.write_text(content)
    out = tmp_path / "chat.jsonl"
    with pytest.raises(ValueError) as err:
        convert_to_chat(src, out)
    assert str(err.value).startswith(message)
    assert list(tmp_path.iterdir()) == [src]


def test_convert_rejects_bytes_that_are_not_utf8(tmp_path):
    src = tmp_path / "latin.csv"
    src.write_bytes(b"prompt,completion\nna\xefve,yes\n")
    with pytest.raises(ValueError, match="line 2: not valid UTF-8"):
        convert_to_chat(src, tmp_path / "chat.jsonl")


WORDS = (
    "order refund parcel invoice card login app price plan store hours screen cable bill bank claim".split()
)


def tickets(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) + f" (ticket {i})" for i in range(n)]


def classified(tmp_path: Path) -> Path:
    labels = ["billing"] * 120 + ["refund"] * 60 + ["other"] * 20
    rows = list(zip(tickets(200), labels, strict=True))
    rows += [rows[0], rows[1], (rows[2][0].upper() + "!", rows[2][1])]  # copies to keep on one side
    return write_chat(tmp_path / "all.jsonl", rows)


def sketches_of(path: Path):
    texts = [ExampleText(i, *example_texts(ex["messages"])) for i, ex in enumerate(read_jsonl(path), start=1)]
    return sketch_examples(texts, context_length=4096)


def test_split_is_stratified_and_keeps_copies_on_one_side(tmp_path):
    src = classified(tmp_path)
    n_train, n_valid = split_dataset(src, tmp_path / "split", validation_fraction=0.2, seed=7)
    train, valid = read_jsonl(tmp_path / "split/train.jsonl"), read_jsonl(tmp_path / "split/validation.jsonl")
    assert (n_train, n_valid) == (len(train), len(valid)) and n_train + n_valid == 203
    per_class = Counter(ex["messages"][1]["content"] for ex in valid)
    assert per_class == {"billing": 25, "refund": 12, "other": 4}  # 20% of each; billing: 120 + 3 copies
    ctx = CheckContext(task=None, n_epochs=3, training_usd_per_token=0.0, context_length=4096)
    warnings = run_checks(
        sketches_of(tmp_path / "split/train.jsonl"), sketches_of(tmp_path / "split/validation.jsonl"), ctx
    )
    assert "train_validation_overlap" not in {w.code for w in warnings}
    prompts = [{ex["messages"][0]["content"].lower().rstrip("!") for ex in side} for side in (train, valid)]
    assert not prompts[0] & prompts[1]
    assert sorted(map(json.dumps, train + valid)) == sorted(map(json.dumps, read_jsonl(src)))


def test_split_is_deterministic_for_a_seed(tmp_path):
    src = classified(tmp_path)
    split_dataset(src, tmp_path / "a", validation_fraction=0.1, seed=1)
    split_dataset(src, tmp_path / "b", validation_fraction=0.1, seed=1)
    split_dataset(src, tmp_path / "c", validation_fraction=0.1, seed=2)
    valid = {d: (tmp_path / d / "validation.jsonl").read_text() for d in "abc"}
    assert valid["a"] == valid["b"] != valid["c"]


def test_split_of_free_text_takes_the_fraction(tmp_path):
    src = write_chat(tmp_path / "chat.jsonl", list(zip(tickets(50), tickets(50, seed=1), strict=True)))
    assert split_dataset(src, tmp_path / "out", validation_fraction=0.3, seed=0) == (35, 15)


def test_split_refuses_bad_input(tmp_path):
    src = write_chat(tmp_path / "chat.jsonl", list(zip(tickets(5), tickets(5, seed=1), strict=True)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_dataset(src, tmp_path / "out", validation_fraction=1.0, seed=0)
    src.write_text(src.read_text() + '{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="line 6: expected an object with a 'messages' list"):
        split_dataset(src, tmp_path / "out", validation_fraction=0.2, seed=0)
    one = write_chat(tmp_path / "one.jsonl", [("hello there", "hi")] * 3)
    with pytest.raises(ValueError, match="near-identical"):
        split_dataset(one, tmp_path / "out", validation_fraction=0.2, seed=0)


def test_mix_general_examples_make_up_the_fraction(tmp_path):
    own = write_chat(tmp_path / "own.jsonl", [(t, "billing") for t in tickets(90)])
    general = write_chat(
        tmp_path / "general.jsonl", [(f"Tell me about topic {i}", "Sure.") for i in range(300)]
    )
    out = tmp_path / "mixed.jsonl"
    assert mix_general(own, general, fraction=0.1, out=out, seed=3) == 100
    mixed = out.read_text()
    assert sum("topic" in line for line in mixed.splitlines()) == 10
    assert mixed.splitlines()[:90] != own.read_text().splitlines()  # shuffled
    mix_general(own, general, fraction=0.1, out=tmp_path / "again.jsonl", seed=3)
    assert (tmp_path / "again.jsonl").read_text() == mixed


def test_mix_needs_enough_general_examples(tmp_path):
    own = write_chat(tmp_path / "own.jsonl", [(t, "billing") for t in tickets(90)])
    general = write_chat(tmp_path / "general.jsonl", [("hi", "hello")] * 5)
    with pytest.raises(ValueError, match="general.jsonl holds 5 examples; 20% of the output needs 22"):
        mix_general(own, general, fraction=0.2, out=tmp_path / "mixed.jsonl", seed=0)
    general.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1 of general.jsonl: invalid JSON"):
        mix_general(own, general, fraction=0.2, out=tmp_path / "mixed.jsonl", seed=0)
    assert not (tmp_path / "mixed.jsonl").exists()
