"""Example sketches: datasketch-compatible MinHash, similarity estimates, answer forms, volatile facts."""

import sys
import tracemalloc

import numpy as np
import pytest
from datasketch import MinHash
from tunery_dataprep.quality import ExampleText, example_texts, sketch_example, sketch_examples
from tunery_dataprep.quality.facts import KIND_BITS, volatile_facts
from tunery_dataprep.quality.minhash import MAX_SHINGLES, NUM_PERM, signatures
from tunery_dataprep.quality.sketch import ANSWER_SIG, PROMPT_SIG, signature_matrix
from tunery_dataprep.quality.words import normalise, split_words


def sketch(prompt: str, answer: str = "ok", system: str | None = None, **tokens):
    counts = {"n_tokens": 50, "n_system_tokens": 0, "n_assistant_tokens": 5} | tokens
    return sketch_example(
        line=1, system_text=system, prompt_text=prompt, answer_text=answer, context_length=100, **counts
    )


def similarity(a, b, part=PROMPT_SIG) -> float:
    sig = signature_matrix([a, b])
    return float(np.mean(sig[0, part] == sig[1, part]))


def test_signatures_equal_datasketch_minhash_of_the_same_shingles():
    words = split_words([normalise("the invoice for order 1234 is wrong, please fix it"), normalise("hello")])
    hashes = words.shingle_hashes()
    ours = signatures(hashes, words.window_text, 2)
    for text in range(2):
        reference = MinHash(num_perm=NUM_PERM, seed=1, scheme="affine32", hashfunc=int)
        reference.update_batch(hashes[words.window_text == text].tolist())
        assert ours[text].tolist() == reference.hashvalues.tolist()


PARCEL = (
    "My parcel from last week never arrived and the tracking page shows no update since Monday, "
    "so I would like to know whether it was lost or is still on its way to the pick-up point"
)


def test_near_identical_texts_score_high_and_different_ones_low():
    base = sketch(PARCEL)
    same_but_case = sketch(PARCEL.upper().replace(",", " ; "))
    one_word = sketch(PARCEL.replace("Monday", "Tuesday"))
    other = sketch("How do I change the email address on my account and keep my order history")
    assert similarity(base, same_but_case) == 1.0
    assert base.prompt_hash == same_but_case.prompt_hash  # case, punctuation and spacing ignored
    assert 0.8 <= similarity(base, one_word) < 1.0  # 2 of 32 shingles differ: J = 30/34
    assert similarity(base, other) < 0.2


def test_text_without_spaces_is_compared_on_its_whole_length():
    a = sketch("请问我的包裹什么时候能到达上海的仓库呢")
    b = sketch("请问我的发票为什么还没有开出来呢谢谢你")  # the same first 8 bytes, then different
    assert similarity(a, a) == 1.0 and similarity(a, b) < 0.5


def test_the_answer_has_its_own_signature():
    a = sketch("Where is my order 1234?", "It left our warehouse yesterday and arrives on Friday.")
    b = sketch("Where is my order 1234?", "We could not find an order with that number, please check it.")
    c = sketch("Where is my order 1234?", "It left our warehouse yesterday, and arrives on Friday!")
    assert similarity(a, b, PROMPT_SIG) == 1.0
    assert similarity(a, b, ANSWER_SIG) < 0.2
    assert similarity(a, c, ANSWER_SIG) == 1.0


def test_long_texts_are_sampled_consistently():
    words = [f"w{i}" for i in range(4 * MAX_SHINGLES)]
    a = sketch(" ".join(words))
    b = sketch(" ".join(words[:-3] + ["x", "y", "z"]))
    assert similarity(a, b) > 0.9


def test_batch_and_single_sketches_agree():
    texts = [
        ExampleText(i, None, f"prompt number {i} about invoices", "billing", 10, 0, 2) for i in range(1, 4)
    ]
    batch = sketch_examples(texts, context_length=100)
    single = [
        sketch_example(
            line=t.line,
            system_text=None,
            prompt_text=t.prompt_text,
            answer_text=t.answer_text,
            n_tokens=10,
            n_system_tokens=0,
            n_assistant_tokens=2,
            context_length=100,
        )
        for t in texts
    ]
    assert batch == single


@pytest.mark.parametrize(
    ("answer", "kind", "label"),
    [
        ("Billing.", "label", "billing"),
        ("  Technical Support ", "label", "technical support"),
        ('{"category": "billing", "priority": "high"}', "json", None),
        ("Steps:\n1. Open settings\n2. Tap Account\n3. Choose Reset", "structured", None),
        ("Thanks for reaching out, we will look into your refund request right away.", "text", None),
    ],
)
def test_answer_forms(answer, kind, label):
    s = sketch("question", answer)
    assert (s.kind, s.label) == (kind, label)


def test_json_fields_keep_short_scalars_and_mark_the_rest():
    s = sketch("q", '{"category": "Billing", "urgent": true, "amount": 12.5, "note": "' + "x" * 60 + '"}')
    assert s.fields == (("category", "billing"), ("urgent", "true"), ("amount", None), ("note", None))


def test_word_counts_copy_share_and_truncation():
    s = sketch("the quick brown fox jumps", "the brown dog", n_tokens=150)
    assert (s.prompt_words, s.answer_words) == (5, 3)
    assert s.copy_pct == 66  # 'the' and 'brown' of {the, brown, dog}
    assert s.truncated  # 150 tokens > context_length 100
    assert not sketch("x", n_tokens=100).truncated


def test_volatile_facts_count_only_what_the_prompt_does_not_say():
    count, kinds = volatile_facts(
        "the pro plan is $49 a month until march 31, 2025; we open at 9am monday to friday.",
        "how much is the pro plan?",
    )
    assert count == 5  # "$49", "march 31, 2025", "9am", "monday", "friday"
    assert kinds == KIND_BITS["money"] | KIND_BITS["date"] | KIND_BITS["time"]
    assert volatile_facts("refund requested on 2024-03-01", "i asked for a refund on 2024-03-01") == (0, 0)
    assert volatile_facts("we have 12 units in stock", "is it available?") == (1, KIND_BITS["quantity"])
    assert volatile_facts("you may want to restart the router", "wifi is down") == (0, 0)


def test_example_texts_from_chat_messages():
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3 degrees"},
        {"role": "assistant", "content": "Draft", "weight": 0},
        {"role": "assistant", "content": "It is 3 degrees."},
    ]
    assert example_texts(messages) == (
        "Be brief.",
        "Weather in Oslo?\n3 degrees\nDraft",
        'weather {"city": "Oslo"}\nIt is 3 degrees.',
    )


def test_a_sketch_takes_a_few_hundred_bytes():
    texts = [
        ExampleText(i, "You are a support agent.", f"prompt {i} " * 30, f"answer {i} " * 40, 400, 20, 80)
        for i in range(1000)
    ]
    kept = sketch_examples(texts[:500], context_length=4096)  # first calls fill caches: not counted
    tracemalloc.start()
    kept += sketch_examples(texts[500:], context_length=4096)
    size = tracemalloc.get_traced_memory()[0] / 500
    tracemalloc.stop()
    assert size < 550, size
    assert len(kept[0].signature) == 2 * (64 + 32)
    assert sys.getsizeof(kept[0]) < 250
