"""The dataset report's figures on small files: tokens, epochs, billing, trained tokens, costs."""

import io
import json

import pytest
from tunery_common.training_rules import auto_n_epochs
from tunery_dataprep.cost import load_prices
from tunery_dataprep.report import build_report
from tunery_dataprep.settings import DataPrepSettings
from tunery_dataprep.tokens import load_tokenizer

MODEL = "smollm2-135m-instruct"


def chat(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You answer in one sentence."},
            {"role": "user", "content": f"How do I reset password number {i}?"},
            {"role": "assistant", "content": f"Open settings, choose security and reset password {i}."},
        ]
    }


def jsonl(rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode() + b"\n"


@pytest.fixture(scope="module")
def settings(model_cache):
    return DataPrepSettings(model_cache=model_cache)


@pytest.fixture(scope="module")
def tokenizer(model_cache):
    return load_tokenizer(MODEL, model_cache)


def test_figures_of_a_valid_file(settings, tokenizer):
    rows = [chat(i) for i in range(12)]
    report = build_report(jsonl(rows), model=MODEL, settings=settings)

    lengths = [
        len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) for r in rows
    ]
    answers = [len(tokenizer.encode(r["messages"][2]["content"], add_special_tokens=False)) + 1 for r in rows]
    assert (report.n_examples, report.n_valid_examples, report.n_errors, report.format) == (12, 12, 0, "chat")
    assert report.tokens.total == report.tokens.billing == sum(lengths)
    assert report.tokens.assistant == sum(answers)
    assert (report.tokens.per_example.min, report.tokens.per_example.max) == (min(lengths), max(lengths))
    assert report.n_epochs == 9  # 12 examples: ceil(100 / 12)
    assert report.estimated_trained_tokens == 9 * sum(lengths)
    mini = next(c for c in report.cost_estimates if c.backend == "gpt-4o-mini")
    assert mini.usd == pytest.approx(report.estimated_trained_tokens * 3.00 / 1e6, abs=1e-4)
    assert json.loads(report.model_dump_json())["tokens"]["per_example"]["median"] > 0


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (3, 25),
        (4, 25),
        (10, 10),
        (12, 9),
        (33, 4),
        (34, 3),
        (8333, 3),
        (8334, 2),
        (25_000, 1),
        (10**6, 1),
    ],
)
def test_auto_epochs(n, epochs):
    assert auto_n_epochs(n) == epochs
    assert 1 <= epochs <= 25


def test_billing_caps_each_example(model_cache):
    capped = DataPrepSettings(model_cache=model_cache, billing_token_cap=20)
    report = build_report(jsonl([chat(i) for i in range(12)]), model=MODEL, settings=capped)
    assert report.tokens.billing == 12 * 20 < report.tokens.total
    assert report.estimated_trained_tokens == report.n_epochs * 12 * 20


def test_errors_are_counted_listed_and_capped(model_cache):
    few = DataPrepSettings(model_cache=model_cache, max_reported_errors=3)
    rows = [chat(i) for i in range(12)] + ["{oops"] * 5 + [{"messages": [{"role": "user", "content": "x"}]}]
    report = build_report(jsonl(rows), model=MODEL, settings=few)
    assert report.n_errors == 6
    assert report.format_errors == {"example_missing_assistant_message": 1, "invalid_json": 5}
    assert [(e.line, e.code) for e in report.errors] == [
        (13, "invalid_json"),
        (14, "invalid_json"),
        (15, "invalid_json"),
    ]
    assert (report.n_examples, report.n_valid_examples) == (18, 12)


def test_whole_file_errors(settings):
    empty = build_report(b"\n\n", model=MODEL, settings=settings)
    assert [(e.line, e.code) for e in empty.errors] == [(0, "empty_file")]
    few = build_report(jsonl([chat(i) for i in range(4)]), model=MODEL, settings=settings)
    assert [(e.line, e.code) for e in few.errors] == [(0, "not_enough_examples")]
    assert few.n_epochs == 25  # still estimated for what is there


def test_an_example_over_the_context_is_an_error(settings):
    long = chat(0)
    long["messages"][1]["content"] = "word " * 2500  # > 2048 tokens, tiny-random-llama's context
    report = build_report(
        jsonl([long] + [chat(i) for i in range(12)]), model="tiny-random-llama", settings=settings
    )
    assert [(e.line, e.code) for e in report.errors] == [(1, "example_too_long")]
    assert report.n_valid_examples == 12


def test_sources_path_bytes_and_stream_agree(settings, tmp_path):
    data = jsonl([chat(i) for i in range(15)] + ["[1]"])
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    seen = []
    by_path = build_report(path, model=MODEL, settings=settings, progress=seen.append)
    by_bytes = build_report(data, model=MODEL, settings=settings)
    by_stream = build_report(io.BytesIO(data), model=MODEL, settings=settings)
    assert by_path == by_bytes == by_stream
    assert seen[-1] == len(data)


def test_validation_file_gets_its_own_figures(settings):
    train, valid = [chat(i) for i in range(20)], [chat(i) for i in range(100, 105)] + ["nope"]
    report = build_report(jsonl(train), jsonl(valid), model=MODEL, settings=settings)
    assert report.validation.n_valid_examples == 5
    assert [e.code for e in report.validation.errors] == ["invalid_json"]  # no 10-example minimum there
    assert report.n_errors == 0


def test_preference_file(settings):
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"Greet customer {i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"Hello customer {i}, how can I help?"}],
            "non_preferred_output": [{"role": "assistant", "content": "What."}],
        }
        for i in range(10)
    ]
    report = build_report(jsonl(rows), model=MODEL, settings=settings)
    assert (report.format, report.n_valid_examples, report.n_errors) == ("preference", 10, 0)
    assert report.tokens.assistant > 0


def test_quality_warnings_come_with_lines(settings):
    rows = [chat(0)] * 15  # one example, fifteen times
    report = build_report(jsonl(rows), model=MODEL, task="tone", settings=settings)
    duplicates = next(w for w in report.warnings if w.code == "duplicate_examples")
    assert duplicates.lines[:3] == [2, 3, 4]
    assert report.task == "tone" and report.recommendations


def test_the_price_table(settings):
    prices = load_prices()
    assert prices.training == {"gpt-4o-mini": 3.00, "gpt-4o": 25.00, "gpt-3.5-turbo": 8.00}
    assert prices.inference["ft:gpt-4o-mini"] == (0.30, 1.20)
    assert prices.inference["ft:gpt-4o"] == (3.75, 15.00)
    assert prices.inference["gpt-4o"] == (2.50, 10.00)


def test_worker_processes_give_the_same_report(model_cache, tmp_path):
    rows = [chat(i) for i in range(300)] + ["{broken", {"messages": [{"role": "user", "content": "x"}]}] * 3
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(rows))
    serial = DataPrepSettings(model_cache=model_cache, workers=1, batch_lines=40)
    parallel = DataPrepSettings(model_cache=model_cache, workers=2, batch_lines=40, parallel_from_mb=0)
    one = build_report(path, model=MODEL, settings=serial)
    two = build_report(path, model=MODEL, settings=parallel)
    assert one == two
    assert (one.n_valid_examples, one.n_errors) == (300, 6)
