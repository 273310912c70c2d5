"""A fine-tuning job's promotion gate at creation: inline testing criteria become an eval.

eval-judge owns the graders, so it checks the criteria (an error names them as
`eval.testing_criteria[...]`); the trainer then receives the gate with that eval's id and checks
the rest (the eval, the thresholds, the file) like for a gate naming an existing eval.
"""

import json

import grpc
from tunery.evaljudge.v1 import evaljudge_pb2, evaljudge_pb2_grpc
from tunery_common.promotion import GateError, parse_gate

from tunery_gateway.errors import from_rpc_error, raise_openai_error
from tunery_gateway.schemas.fine_tuning import FineTuningJobCreate


async def create_gate_eval(
    body: FineTuningJobCreate, org: str, evaljudge: evaljudge_pb2_grpc.EvalJudgeStub, timeout_s: float
) -> str | None:
    """The id of the eval made of the gate's inline criteria (the body then names it), or None."""
    if body.eval is None:
        return None
    try:
        gate = parse_gate(body.eval)
    except GateError as exc:
        raise_openai_error(400, exc.message, param=exc.param)
    if gate.testing_criteria is None:
        return None
    request = evaljudge_pb2.CreateEvalRequest(
        org=org,
        name=f"promotion gate of {body.suffix or body.model}",
        data_source_config_json=json.dumps({"type": "custom"}),
        testing_criteria_json=json.dumps(gate.testing_criteria),
        metadata_json=json.dumps({"purpose": "promotion_gate"}),
    )
    try:
        created = await evaljudge.CreateEval(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc, "eval-judge")
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and error.param:
            error.param = f"eval.{error.param}"
        raise error from exc
    body.eval = {k: v for k, v in body.eval.items() if k != "testing_criteria"} | {"eval_id": created.id}
    return created.id
