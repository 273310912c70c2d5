"""Fine-tune, evaluate, promote, on the whole stack: two jobs with one suffix and a promotion gate
(`eval` on the job). The gate runs the eval on the base model and on each fine-tuned one; the
first meets its thresholds and is promoted, so `ft:<base>:<org>:<suffix>` answers with it; the
second misses its threshold and is rejected, and the alias stays on the first. The gate's runs
are then compared with significance figures and the pairwise judge (this stack's own gateway
serving the tiny model, its verdicts held to their schema by constrained decoding)."""

import json

import pytest
from openai import OpenAI
from record_wait import wait_for_record, wait_for_record_where
from stack_keys import KEYS
from tunery_evaljudge.compare import compare_pairwise, compare_pass_fail

pytestmark = pytest.mark.e2e

ORG = "org-a"
BASE = "tiny-random-llama"
SUFFIX = "gated"
ALIAS = f"ft:{BASE}:{ORG}:{SUFFIX}"
CATEGORIES = ("billing", "technical")
NEVER = "\u2603 no model writes this \u2603"
CRITERIA = [
    {"type": "json_valid", "name": "json"},
    {
        "type": "classification",
        "name": "category",
        "input": "{{sample.output_json.category}}",
        "reference": "{{item.category}}",
        "labels": list(CATEGORIES),
    },
]
PROMPT = [
    {"role": "system", "content": 'Route the ticket. Answer with {"category": ...}.'},
    {"role": "user", "content": "{{item.question}}"},
]


def jsonl(rows) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n"


def ticket(i: int) -> dict:
    return {"question": f"Ticket {i}: my card was charged twice", "category": CATEGORIES[i % 2]}


def chat(i: int) -> dict:
    item = ticket(i)
    return {
        "messages": [
            {"role": "system", "content": PROMPT[0]["content"]},
            {"role": "user", "content": item["question"]},
            {"role": "assistant", "content": json.dumps({"category": item["category"]})},
        ]
    }


def gate(eval_file: str, **fields) -> dict:
    """A gate over the eval file with the ticket prompt, greedy and short answers."""
    return {
        "file_id": eval_file,
        "input_messages": {"type": "template", "template": PROMPT},
        "sampling_params": {"max_completion_tokens": 8, "temperature": 0},
        **fields,
    }


def fine_tune(stack, client: OpenAI, train_id: str, eval_gate: dict) -> dict:
    """A two-step job with the gate; its model's record once the gate decided."""
    job = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=train_id,
        suffix=SUFFIX,
        seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 5}}},
        extra_body={"eval": eval_gate},
    )
    done = wait_for_record(stack, "jobs", ORG, job.id, ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done.get("error")
    return wait_for_record_where(
        stack, "models", ORG, job.id, lambda r: r.get("promotion") in ("promoted", "rejected")
    )


@pytest.fixture(scope="module")
def client(stack) -> OpenAI:
    return OpenAI(base_url=stack.base_url, api_key=KEYS[ORG], max_retries=0, timeout=900)


@pytest.fixture(scope="module")
def gated(stack, client):
    train = client.files.create(file=("train.jsonl", jsonl(chat(i) for i in range(10))), purpose="fine-tune")
    # Four items: too few for any difference to be significant, so `compare_to` never rejects.
    items = client.files.create(file=("tickets.jsonl", jsonl(ticket(i) for i in range(4))), purpose="evals")
    tickets = client.evals.create(
        name="ticket gate",
        data_source_config={
            "type": "custom",
            "item_schema": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "category": {"enum": list(CATEGORIES)}},
                "required": ["question", "category"],
            },
        },
        testing_criteria=CRITERIA,
    )
    passing = gate(items.id, eval_id=tickets.id, thresholds={"json": 0.0, "category": 0.0}, compare_to="base")
    first = fine_tune(stack, client, train.id, passing)
    # Inline criteria become an eval of their own; "never" passes no answer, so 0.5 is out of reach.
    never = {
        "type": "string_check",
        "name": "never",
        "input": "{{sample.output_text}}",
        "reference": NEVER,
        "operation": "eq",
    }
    failing = gate(items.id, testing_criteria=[never], thresholds={"never": 0.5})
    second = fine_tune(stack, client, train.id, failing)
    return {"eval": tickets, "first": first, "second": second}


def test_gate_promotes_one_version_and_rejects_the_other(client, gated):
    first, second = gated["first"], gated["second"]
    assert first["promotion"] == "promoted", first.get("promotion_reason")
    assert second["promotion"] == "rejected"
    assert "never 0.0 < 0.5" in second["promotion_reason"]
    assert first["id"] != second["id"] and {first["id"], second["id"]} <= {
        m.id for m in client.models.list().data
    }

    # The alias answers with the promoted version only, and serves chat.
    shown = client.models.retrieve(ALIAS)
    assert shown.id == first["id"]
    assert (
        shown.model_extra["promotion"] == "promoted"
        and shown.model_extra["eval_run_id"] == first["eval_run_id"]
    )
    reply = client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "Ticket 9: the app crashes"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None and reply.usage.completion_tokens > 0
    # The rejected version still answers by its own id, never through the alias.
    assert client.models.retrieve(second["id"]).model_extra["promotion"] == "rejected"


def test_base_and_fine_tuned_runs_compare_with_significance_and_the_judge(client, gated):
    eval_id, first = gated["eval"].id, gated["first"]
    baseline_id, candidate_id = first["baseline_run_id"], first["eval_run_id"]
    runs = {r.id: r for r in client.evals.runs.list(eval_id)}
    assert runs[baseline_id].model == BASE and runs[candidate_id].model == first["id"]
    assert runs[baseline_id].status == runs[candidate_id].status == "completed"

    comparison = client.get(
        f"/evals/{eval_id}/compare",
        cast_to=object,
        options={"params": {"runs": f"{baseline_id},{candidate_id}", "judge": "pairwise"}},
    )
    assert comparison["baseline_model"] == BASE and comparison["candidate_model"] == first["id"]
    assert comparison["n_items"] == 4

    # Every figure is compare.py's on the two runs' output items.
    outputs = {
        run_id: list(client.evals.runs.output_items.list(run_id, eval_id=eval_id))
        for run_id in (baseline_id, candidate_id)
    }
    assert [c["testing_criteria"] for c in comparison["testing_criteria"]] == ["json", "category"]
    for index, entry in enumerate(comparison["testing_criteria"]):
        expected = compare_pass_fail(
            *(
                [i.results[index].passed is True for i in outputs[run_id]]
                for run_id in (baseline_id, candidate_id)
            )
        )
        got = entry["pass_fail"]
        for field in (
            "n",
            "baseline_rate",
            "candidate_rate",
            "delta",
            "ci_low",
            "ci_high",
            "p_value",
            "verdict",
        ):
            assert got[field] == getattr(expected, field), (entry["testing_criteria"], field)
        assert got["ci_low"] <= got["delta"] <= got["ci_high"] and got["p_value"] > 0.05

    # The pairwise judge: both orders per item, every verdict parsed, a sign test on the counts.
    pairwise = comparison["pairwise"]
    assert pairwise["judge"]["model"] == BASE and pairwise["judge_failures"] == 0
    winners = [i["winner"] for i in pairwise["items"]]
    assert [i["datasource_item_id"] for i in pairwise["items"]] == [0, 1, 2, 3] and None not in winners
    expected = compare_pairwise(winners.count("b"), winners.count("tie"), winners.count("a"))
    for field in ("wins", "ties", "losses", "win_rate", "p_value", "verdict", "test"):
        assert pairwise[field] == getattr(expected, field), field
