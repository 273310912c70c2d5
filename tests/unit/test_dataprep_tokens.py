"""Token counts are exact: the fast counter against the tokenizer itself, on any text and chat."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tunery_dataprep.tokens import example_counter, load_tokenizer
from tunery_trainer.data import IGNORE_INDEX, tokenize_example

MODEL = "smollm2-135m-instruct"
# The characters where tokenizers disagree with naive splitting: whitespace runs of every kind,
# apostrophes, digits, symbols, non-Latin letters, an added token, line ends.
PIECES = [
    "a", "bc", "Hello", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u3000", "é", "中文", "1", "234",
    "'s", "'", "!", "?!", ".", ",", "<|im_end|>", "<|im_start|>", "<", "|", " x", "world", "😀", "\x1c", "_",
]  # fmt: skip
texts = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
    st.text(max_size=40),
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tokenizer(model_cache):
    return load_tokenizer(MODEL, model_cache)


@pytest.fixture(scope="module")
def counter(model_cache):
    return example_counter(MODEL, model_cache)


def test_the_fast_path_is_on_for_the_default_model(counter):
    assert counter.counter.fast


@FAST
@given(text=texts)
def test_count_equals_encode(tokenizer, counter, text):
    assert counter.counter.count(text) == len(tokenizer.encode(text, add_special_tokens=False))


@FAST
@given(left=texts, right=texts)
def test_a_safe_seam_adds_up(tokenizer, counter, left, right):
    if counter.counter.safe_cut(left, right):
        assert counter.counter.count(left) + counter.counter.count(right) == len(
            tokenizer.encode(left + right, add_special_tokens=False)
        )


roles = st.sampled_from(["system", "user", "assistant", "tool"])
chats = st.lists(st.tuples(roles, texts), min_size=1, max_size=6).map(
    lambda turns: [{"role": r, "content": c} for r, c in turns] + [{"role": "assistant", "content": "ok"}]
)


@FAST
@given(chat=chats)
def test_chat_total_equals_apply_chat_template(tokenizer, counter, chat):
    tokens = counter.count({"messages": chat})
    assert tokens.total == len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False))


def test_trained_tokens_are_what_the_trainer_labels(tokenizer, counter):
    chat = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4", "weight": 0},
        {"role": "user", "content": "And 3 + 3?\nExplain."},
        {"role": "assistant", "content": "6, because 3 and 3 make 6.\n\nDone."},
    ]
    tokens = counter.count({"messages": chat})
    labelled = tokenize_example(tokenizer, chat, max_seq_len=4096)
    assert tokens.trained == sum(label != IGNORE_INDEX for label in labelled.labels)
    assert tokens.total == len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False))
    assert tokens.system == len(tokenizer.encode("You are terse.", add_special_tokens=False))


def test_a_preference_example_counts_both_sequences(tokenizer, counter):
    prompt = [{"role": "user", "content": "Say hi"}]
    good, bad = [{"role": "assistant", "content": "Hi there!"}], [{"role": "assistant", "content": "No."}]
    tokens = counter.count(
        {"input": {"messages": prompt}, "preferred_output": good, "non_preferred_output": bad}
    )
    lengths = [
        len(tokenizer.apply_chat_template(prompt + out, tokenize=True, return_dict=False))
        for out in (good, bad)
    ]
    answers = [len(tokenizer.encode(out[0]["content"], add_special_tokens=False)) + 1 for out in (good, bad)]
    assert (tokens.total, tokens.longest, tokens.trained) == (sum(lengths), max(lengths), sum(answers))


# A template that trims contents and shows names: plans must notice, and counts stay exact.
INSPECTING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}{% if m.name %} ({{ m.name }}){% endif %}\n"
    "{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
)


def test_a_template_that_changes_contents_is_rendered_by_jinja(model_cache):
    from transformers import AutoTokenizer
    from tunery_common.basemodels import tokenizer_dir
    from tunery_dataprep.tokens import ExampleCounter

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(MODEL, model_cache))
    tokenizer.chat_template = INSPECTING_TEMPLATE
    counter = ExampleCounter(tokenizer)
    assert counter.renderer.uses_names
    for chat in (
        [{"role": "user", "content": "  padded  ", "name": "ann"}, {"role": "assistant", "content": "ok \n"}],
        [{"role": "user", "content": "plain", "name": "bob"}, {"role": "assistant", "content": "fine"}],
    ):
        expected = len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False))
        assert counter.count({"messages": chat}).total == expected
