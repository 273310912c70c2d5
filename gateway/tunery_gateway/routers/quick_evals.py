"""`/v1/quick_evals`: a file's examples run through a model by eval-judge workers, graded."""

from typing import Annotated

from fastapi import APIRouter, Depends
from tunery.evaljudge.v1 import evaljudge_pb2

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import EvalJudgeDep, SettingsDep
from tunery_gateway.pagination import Page, page_query
from tunery_gateway.schemas.quick_evals import (
    QuickEval,
    QuickEvalCreate,
    QuickEvalEvent,
    QuickEvalEventList,
    QuickEvalList,
)

router = APIRouter(tags=["quick-evals"])


@router.post("/quick_evals")
async def create_quick_eval(
    body: QuickEvalCreate, org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep
) -> QuickEval:
    # The request timeout, not the control-plane one: creation validates the whole file first.
    quick_eval = await evaljudge.CreateQuickEval(body.to_proto(org), timeout=settings.request_timeout_s)
    return QuickEval.from_proto(quick_eval)


@router.get("/quick_evals")
async def list_quick_evals(
    org: Org,
    evaljudge: EvalJudgeDep,
    settings: SettingsDep,
    page: Annotated[Page, Depends(page_query(default=20, maximum=100))],
) -> QuickEvalList:
    reply = await evaljudge.ListQuickEvals(
        evaljudge_pb2.ListQuickEvalsRequest(org=org, page=page.to_proto()), timeout=settings.rpc_timeout_s
    )
    return QuickEvalList(data=[QuickEval.from_proto(e) for e in reply.quick_evals], has_more=reply.has_more)


@router.get("/quick_evals/{quick_eval_id}")
async def retrieve_quick_eval(
    quick_eval_id: str, org: Org, evaljudge: EvalJudgeDep, settings: SettingsDep
) -> QuickEval:
    quick_eval = await evaljudge.GetQuickEval(
        evaljudge_pb2.GetQuickEvalRequest(org=org, id=quick_eval_id), timeout=settings.rpc_timeout_s
    )
    return QuickEval.from_proto(quick_eval)


@router.get("/quick_evals/{quick_eval_id}/events")
async def list_quick_eval_events(
    quick_eval_id: str,
    org: Org,
    evaljudge: EvalJudgeDep,
    settings: SettingsDep,
    page: Annotated[Page, Depends(page_query(default=20, maximum=1000))],
) -> QuickEvalEventList:
    reply = await evaljudge.ListQuickEvalEvents(
        evaljudge_pb2.ListQuickEvalEventsRequest(org=org, id=quick_eval_id, page=page.to_proto()),
        timeout=settings.rpc_timeout_s,
    )
    return QuickEvalEventList(
        data=[QuickEvalEvent.from_proto(event) for event in reply.events], has_more=reply.has_more
    )
