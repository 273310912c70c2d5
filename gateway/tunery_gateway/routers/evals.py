"""`/v1/evals`: OpenAI's Evals API (evals, runs, output items) plus comparisons and HTML reports."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from tunery.evaljudge.v1 import evaljudge_pb2

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import EvalJudgeDep, SettingsDep
from tunery_gateway.errors import raise_openai_error
from tunery_gateway.pagination import Page, page_query
from tunery_gateway.schemas.evals import EvalCreate, EvalRunCreate, eval_object, page, record, run_object

router = APIRouter(tags=["evals"])
PageDep = Annotated[Page, Depends(page_query(default=20, maximum=100))]
Order = Annotated[Literal["asc", "desc"], Query()]


def _report_url(request: Request, eval_id: str, run_id: str) -> str:
    return str(request.url_for("eval_run_report", eval_id=eval_id, run_id=run_id))


@router.post("/evals")
async def create_eval(body: EvalCreate, org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep) -> dict:
    return eval_object(await evaljudge.CreateEval(body.to_proto(org), timeout=settings.rpc_timeout_s))


@router.get("/evals")
async def list_evals(
    org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep, page_: PageDep, order: Order = "asc"
) -> dict:
    reply = await evaljudge.ListEvals(
        evaljudge_pb2.ListEvalsRequest(org=org, page=page_.to_proto(), order=order),
        timeout=settings.rpc_timeout_s,
    )
    return page([eval_object(doc) for doc in reply.data], reply.has_more)


@router.get("/evals/{eval_id}")
async def retrieve_eval(eval_id: str, org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep) -> dict:
    request = evaljudge_pb2.GetEvalRequest(org=org, eval_id=eval_id)
    return eval_object(await evaljudge.GetEval(request, timeout=settings.rpc_timeout_s))


@router.delete("/evals/{eval_id}")
async def delete_eval(eval_id: str, org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep) -> dict:
    request = evaljudge_pb2.GetEvalRequest(org=org, eval_id=eval_id)
    await evaljudge.DeleteEval(request, timeout=settings.rpc_timeout_s)
    return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}


@router.post("/evals/{eval_id}/runs")
async def create_run(
    eval_id: str,
    body: EvalRunCreate,
    request: Request,
    org: Org,
    evaljudge: EvalJudgeDep,
    settings: SettingsDep,
) -> dict:
    # The request timeout: creation reads and checks every item first.
    doc = await evaljudge.CreateEvalRun(body.to_proto(org, eval_id), timeout=settings.request_timeout_s)
    return run_object(doc, _report_url(request, eval_id, doc.id))


@router.get("/evals/{eval_id}/runs")
async def list_runs(
    eval_id: str,
    request: Request,
    org: Org,
    evaljudge: EvalJudgeDep,
    settings: SettingsDep,
    page_: PageDep,
    order: Order = "asc",
    status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None,
) -> dict:
    reply = await evaljudge.ListEvalRuns(
        evaljudge_pb2.ListEvalRunsRequest(
            org=org, eval_id=eval_id, page=page_.to_proto(), order=order, status=status or ""
        ),
        timeout=settings.rpc_timeout_s,
    )
    return page(
        [run_object(doc, _report_url(request, eval_id, doc.id)) for doc in reply.data], reply.has_more
    )


@router.get("/evals/{eval_id}/runs/{run_id}")
async def retrieve_run(
    eval_id: str, run_id: str, request: Request, org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep
) -> dict:
    message = evaljudge_pb2.GetEvalRunRequest(org=org, eval_id=eval_id, run_id=run_id)
    doc = await evaljudge.GetEvalRun(message, timeout=settings.rpc_timeout_s)
    return run_object(doc, _report_url(request, eval_id, run_id))


@router.post("/evals/{eval_id}/runs/{run_id}/cancel")
async def cancel_run(
    eval_id: str, run_id: str, request: Request, org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep
) -> dict:
    message = evaljudge_pb2.GetEvalRunRequest(org=org, eval_id=eval_id, run_id=run_id)
    doc = await evaljudge.CancelEvalRun(message, timeout=settings.rpc_timeout_s)
    return run_object(doc, _report_url(request, eval_id, run_id))


@router.get("/evals/{eval_id}/runs/{run_id}/output_items")
async def list_output_items(
    eval_id: str,
    run_id: str,
    org: Org,
    evaljudge: EvalJudgeDep,
    settings: SettingsDep,
    page_: PageDep,
    order: Order = "asc",
    status: Literal["pass", "fail", "error"] | None = None,
) -> dict:
    reply = await evaljudge.ListEvalRunOutputItems(
        evaljudge_pb2.ListEvalRunOutputItemsRequest(
            org=org, eval_id=eval_id, run_id=run_id, page=page_.to_proto(), order=order, status=status or ""
        ),
        timeout=settings.rpc_timeout_s,
    )
    return page([record(doc) for doc in reply.data], reply.has_more)


@router.get("/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}")
async def retrieve_output_item(
    eval_id: str, run_id: str, output_item_id: str, org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep
) -> dict:
    reply = await evaljudge.ListEvalRunOutputItems(
        evaljudge_pb2.ListEvalRunOutputItemsRequest(org=org, eval_id=eval_id, run_id=run_id),
        timeout=settings.rpc_timeout_s,
    )
    # One page holds them all only up to its limit: walk the pages until the item turns up.
    while True:
        for doc in reply.data:
            if doc.id == output_item_id:
                return record(doc)
        if not reply.has_more:
            raise_openai_error(404, f"no output item {output_item_id!r}", param="output_item_id")
        reply = await evaljudge.ListEvalRunOutputItems(
            evaljudge_pb2.ListEvalRunOutputItemsRequest(
                org=org, eval_id=eval_id, run_id=run_id, page={"after": reply.data[-1].id, "limit": 100}
            ),
            timeout=settings.rpc_timeout_s,
        )


@router.get("/evals/{eval_id}/compare")
async def compare_runs(
    eval_id: str,
    org: Org,
    evaljudge: EvalJudgeDep,
    settings: SettingsDep,
    runs: Annotated[str, Query(description="BASELINE_RUN,CANDIDATE_RUN")],
    judge: Literal["pairwise"] | None = None,
) -> dict:
    ids = [part.strip() for part in runs.split(",") if part.strip()]
    if len(ids) != 2:
        raise_openai_error(400, "runs names two runs: BASELINE_RUN,CANDIDATE_RUN", param="runs")
    message = evaljudge_pb2.CompareEvalRunsRequest(
        org=org,
        eval_id=eval_id,
        baseline_run_id=ids[0],
        candidate_run_id=ids[1],
        pairwise=judge == "pairwise",
    )
    # The request timeout: a pairwise comparison asks the judge twice per item.
    return record(await evaljudge.CompareEvalRuns(message, timeout=settings.request_timeout_s))


@router.get("/evals/{eval_id}/runs/{run_id}/report.html", response_class=HTMLResponse, name="eval_run_report")
async def eval_run_report(
    eval_id: str,
    run_id: str,
    org: Org,
    evaljudge: EvalJudgeDep,
    settings: SettingsDep,
    compare_with: Annotated[str | None, Query(description="a baseline run of the same eval")] = None,
) -> HTMLResponse:
    message = evaljudge_pb2.GetEvalRunReportRequest(
        org=org, eval_id=eval_id, run_id=run_id, compare_with_run_id=compare_with or ""
    )
    report = await evaljudge.GetEvalRunReport(message, timeout=settings.request_timeout_s)
    return HTMLResponse(report.html)
