"""The train/serve parity metric and the prompts it runs (tunery_common.parity)."""

import json

import pytest
from tunery_common.parity import END, PromptFileError, agreement, prompts_of, summary


def test_agreement_counts_the_common_prefix_of_token_bytes():
    same = agreement([b"{", b'"color', b'":', END], [b"{", b'"color', b'":', END])
    assert (same.exact, same.common_prefix, same.longest, same.prefix_fraction) == (True, 4, 4, 1.0)
    forked = agreement([b"{", b'"color', b'":', b' "red'], [b"{", b'"color', b'":', b' "blue', b'"}'])
    assert (forked.exact, forked.common_prefix, forked.longest) == (False, 3, 5)
    assert forked.prefix_fraction == 3 / 5
    # One stopped at an end-of-sequence token, the other went on: not the same completion.
    stopped = agreement([b"ok", END], [b"ok", b"ay"])
    assert (stopped.exact, stopped.common_prefix, stopped.prefix_fraction) == (False, 1, 0.5)
    assert agreement([], []).prefix_fraction == 1.0  # two empty completions agree
    assert agreement([b"a"], [b"b"]).prefix_fraction == 0.0


def test_summary_is_the_exact_match_rate_and_the_mean_prefix_fraction():
    agreements = [agreement([b"a", b"b"], [b"a", b"b"]), agreement([b"a", b"b"], [b"a", b"c"])]
    assert summary(agreements) == {"exact_match_rate": 0.5, "mean_common_prefix": 0.75}
    assert summary([]) == {"exact_match_rate": 0.0, "mean_common_prefix": 0.0}


def test_prompts_are_the_messages_before_the_reference_answer():
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ]
    }
    preference = {
        "input": {"messages": [{"role": "user", "content": "Pick"}]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": "b"}],
    }
    unanswered = {"messages": [{"role": "user", "content": "Open"}]}
    text = "\n".join(json.dumps(e) for e in (chat, preference, unanswered)) + "\n\n"
    assert prompts_of(text, "f.jsonl", 20) == [
        chat["messages"][:2],
        preference["input"]["messages"],
        unanswered["messages"],
    ]
    assert prompts_of(text, "f.jsonl", 1) == [chat["messages"][:2]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"messages": []}\n', "f.jsonl:1: not a chat example"),
        ('\n{"messages": [{"role": "user", "content": "x"}]}\nnot json\n', "f.jsonl:3: not a chat example"),
        (
            '{"messages": [{"role": "assistant", "content": "only an answer"}]}',
            "f.jsonl:1: not a chat example",
        ),
        ('{"messages": [{"role": "user", "content": [1]}]}', "f.jsonl:1: not a chat example"),
        ("\n\n", "f.jsonl holds no example"),
    ],
)
def test_a_file_without_prompts_is_refused_naming_the_line(text, message):
    with pytest.raises(PromptFileError, match=message):
        prompts_of(text, "f.jsonl", 20)
