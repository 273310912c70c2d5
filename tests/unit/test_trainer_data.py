"""Chat examples → token ids and labels, with the real SmolLM2 tokenizer and chat template."""

import json

import pytest
from transformers import AutoTokenizer
from tunery_common.basemodels import ensure_base_model
from tunery_trainer.data import (
    IGNORE_INDEX,
    load_jsonl_examples,
    method_of,
    prepare_training_data,
    tokenize_example,
)
from tunery_trainer.hyperparams import DpoHyperparameters, Hyperparameters, resolve

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def model_dir(model_cache):
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


def jsonl(*rows) -> bytes:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows).encode()


def chat(question: str, answer: str, weight: int = 1) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer, "weight": weight},
        ]
    }


PAIR = {
    "input": {"messages": [{"role": "user", "content": "Hi"}]},
    "preferred_output": [{"role": "assistant", "content": "Hello!"}],
    "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
}


def labelled_spans(tokenizer, example) -> list[str]:
    """The decoded text of each run of consecutive trained tokens."""
    spans, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(span) for span in spans]


def test_labels_cover_exactly_the_assistant_answers_and_their_end_of_turn(tokenizer):
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "Six, of course!"},
    ]
    example = tokenize_example(tokenizer, messages, max_seq_len=1024)

    assert labelled_spans(tokenizer, example) == ["It is 4.<|im_end|>", "Six, of course!<|im_end|>"]
    assert not example.truncated
    text = tokenizer.decode(example.input_ids)
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>")  # the template's default
    assert text.endswith("Six, of course!<|im_end|>")  # nothing trained follows: the newline is dropped


def test_assistant_messages_with_weight_zero_are_context_only(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help you today?", "weight": 0},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.", "weight": 1},
    ]
    example = tokenize_example(tokenizer, messages, max_seq_len=1024)

    assert labelled_spans(tokenizer, example) == ["Hello.<|im_end|>"]
    assert "Hello, how can I help you today?" in tokenizer.decode(example.input_ids)


def test_messages_after_the_last_trained_answer_are_dropped(tokenizer):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye!", "weight": 0},
    ]
    example = tokenize_example(tokenizer, messages, max_seq_len=1024)

    assert tokenizer.decode(example.input_ids).endswith("Hello.<|im_end|>")
    assert labelled_spans(tokenizer, example) == ["Hello.<|im_end|>"]


def test_long_examples_lose_their_oldest_tokens_and_keep_the_last_answer(tokenizer):
    messages = [
        {"role": "user", "content": "Tell me a story. " + "Once upon a time " * 50},
        {"role": "assistant", "content": "An early answer."},
        {"role": "user", "content": "Now say bye."},
        {"role": "assistant", "content": "Bye!"},
    ]
    full = tokenize_example(tokenizer, messages, max_seq_len=4096)
    example = tokenize_example(tokenizer, messages, max_seq_len=40)

    assert example.truncated
    assert len(example.input_ids) == 40
    assert example.input_ids == full.input_ids[-40:]
    assert labelled_spans(tokenizer, example)[-1] == "Bye!<|im_end|>"
    assert example.labels[0] == IGNORE_INDEX


def test_examples_without_anything_to_train_on_are_none(tokenizer):
    only_prompt = [{"role": "user", "content": "Hi"}]
    only_context = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "weight": 0}]

    assert tokenize_example(tokenizer, only_prompt, max_seq_len=1024) is None
    assert tokenize_example(tokenizer, only_context, max_seq_len=1024) is None


def test_answers_that_merge_with_the_template_still_get_their_tokens(tokenizer):
    # "assistant\n" + "\n\n  Hello" tokenizes across the boundary, so the prompt alone is not a
    # token prefix of the conversation; the answer must still be labelled up to <|im_end|>.
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\n\n  Hello there"}]
    example = tokenize_example(tokenizer, messages, max_seq_len=1024)

    [span] = labelled_spans(tokenizer, example)
    assert span.endswith("\n\n  Hello there<|im_end|>")
    prompt = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label == IGNORE_INDEX]
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant")


def test_only_role_content_and_name_reach_the_template(tokenizer):
    as_parts = [
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello.", "weight": 1, "name": "bot"},
    ]
    as_text = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello."}]

    assert tokenize_example(tokenizer, as_parts, 1024) == tokenize_example(tokenizer, as_text, 1024)


def test_jsonl_examples_skip_blank_lines():
    data = b'{"messages": [{"role": "user", "content": "a"}]}\n\n  \n{"messages": []}\n'

    assert load_jsonl_examples(data) == [{"messages": [{"role": "user", "content": "a"}]}, {"messages": []}]


@pytest.mark.parametrize("line", [b"{not json", b'{"prompt": "x"}', b"[1, 2]"])
def test_jsonl_errors_name_the_line(line):
    with pytest.raises(ValueError, match="line 2"):
        load_jsonl_examples(b'{"messages": []}\n' + line)


def test_training_data_counts_truncated_and_skipped_rows(model_dir):
    long = chat("Tell me a story. " + "Once upon a time " * 40, "The end.")
    train = jsonl(chat("Hi", "Hello."), long, chat("Hi", "Ignored.", weight=0), "", chat("Bye", "Bye."))
    valid = jsonl(long, chat("Hi", "Hello."))
    data = prepare_training_data(model_dir, train, valid, Hyperparameters(max_seq_len=64))

    assert (len(data.train), len(data.valid)) == (3, 2)
    assert data.n_truncated == 2 and data.n_skipped == 1
    assert [len(e.input_ids) for e in data.train if e.truncated] == [64]


def test_training_data_for_dpo_is_pairs(model_dir):
    data = prepare_training_data(model_dir, jsonl(PAIR, PAIR), jsonl(PAIR), resolve(DpoHyperparameters(), 2))

    assert len(data.train) == 2 and len(data.valid) == 1
    assert data.train[0].chosen.input_ids != data.train[0].rejected.input_ids


def test_nothing_to_train_on_is_a_clear_error(model_dir):
    with pytest.raises(
        ValueError, match="training file: no example has an assistant answer left to train on"
    ):
        prepare_training_data(model_dir, jsonl(chat("Hi", "Hello.", weight=0)), None, Hyperparameters())


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("{not json", "training file, line 2: invalid JSON"),
        ({"prompt": "x"}, "training file, line 2: expected 'messages' to be a non-empty list of messages"),
        (
            {"messages": [{"content": "x"}]},
            "training file, line 2: 'messages[0]' must be an object with a string 'role'",
        ),
        (
            {"messages": [{"role": "user", "content": 3}]},
            "line 2: 'messages[0].content' must be a string or a list",
        ),
    ],
)
def test_bad_chat_rows_name_the_file_and_line(model_dir, row, says):
    with pytest.raises(ValueError) as info:
        prepare_training_data(model_dir, jsonl(chat("Hi", "Hello."), row), None, Hyperparameters())

    assert says in str(info.value)


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({**PAIR, "input": []}, "expected 'input' to be an object with a 'messages' list"),
        (
            {k: v for k, v in PAIR.items() if k != "preferred_output"},
            "expected 'preferred_output' to be a non-empty",
        ),
        (
            {**PAIR, "non_preferred_output": [{"role": "user", "content": "x"}]},
            "'non_preferred_output' must hold assistant messages only",
        ),
        (chat("Hi", "Hello."), "expected 'input' to be an object"),
    ],
)
def test_bad_preference_rows_name_the_file_and_line(model_dir, row, says):
    with pytest.raises(ValueError) as info:
        prepare_training_data(model_dir, jsonl(PAIR), jsonl(PAIR, PAIR, row), DpoHyperparameters())

    assert str(info.value).startswith("validation file, line 3: ") and says in str(info.value)


def test_the_method_comes_from_the_hyperparameters_type():
    assert method_of(Hyperparameters()) == "supervised"
    assert method_of(DpoHyperparameters()) == "dpo"
    assert method_of(resolve(DpoHyperparameters(), 5)) == "dpo"
