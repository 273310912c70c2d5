"""The HTML report of a run names the judge that graded it."""

from tunery_common.records import EvalRecord, EvalRunRecord
from tunery_evaljudge.eval_report import render_report

EVAL = EvalRecord(
    id="eval_1", org="acme", name="facts", data_source_config={"type": "custom"}, testing_criteria=[]
)


def run_with(aggregates: dict) -> EvalRunRecord:
    return EvalRunRecord(
        id="evalrun_1",
        org="acme",
        eval_id=EVAL.id,
        name="r",
        data_source={},
        status="completed",
        aggregates=aggregates,
    )


def test_report_names_the_judge_model_and_endpoint_escaped():
    judge = {"base_url": "http://judge.example/v1", "models": ["<judge>-1"]}
    html = render_report(EVAL, run_with({"criteria": {}, "judge": judge}))
    assert "Judge: <code>&lt;judge&gt;-1</code> at <code>http://judge.example/v1</code>." in html


def test_report_without_a_judge_says_nothing_of_one():
    assert "Judge:" not in render_report(EVAL, run_with({"criteria": {}, "judge": None}))
