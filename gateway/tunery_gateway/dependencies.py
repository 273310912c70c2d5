"""What routers take from `app.state` (set up once by the app's lifespan).

Async on purpose: FastAPI runs plain `def` dependencies in a thread pool.
"""

from typing import Annotated

from fastapi import Depends, Request
from tunery.dataprep.v1 import dataprep_pb2_grpc
from tunery.evaljudge.v1 import evaljudge_pb2_grpc
from tunery.inference.v1 import inference_pb2_grpc
from tunery.trainer.v1 import trainer_pb2_grpc
from tunery_common.bus import Bus

from tunery_gateway.settings import GatewaySettings


async def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def get_bus(request: Request) -> Bus:
    return request.app.state.bus


# The name recorded in request.state lets the error handler say which service failed.
async def get_trainer(request: Request) -> trainer_pb2_grpc.TrainerStub:
    request.state.service = "trainer"
    return request.app.state.trainer


async def get_evaljudge(request: Request) -> evaljudge_pb2_grpc.EvalJudgeStub:
    request.state.service = "eval-judge"
    return request.app.state.evaljudge


async def get_dataprep(request: Request) -> dataprep_pb2_grpc.DataPrepStub:
    request.state.service = "data-prep"
    return request.app.state.dataprep


async def get_inference(request: Request) -> inference_pb2_grpc.InferenceStub:
    request.state.service = "inference"
    return request.app.state.inference


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BusDep = Annotated[Bus, Depends(get_bus)]
TrainerDep = Annotated[trainer_pb2_grpc.TrainerStub, Depends(get_trainer)]
EvalJudgeDep = Annotated[evaljudge_pb2_grpc.EvalJudgeStub, Depends(get_evaljudge)]
InferenceDep = Annotated[inference_pb2_grpc.InferenceStub, Depends(get_inference)]
DataPrepDep = Annotated[dataprep_pb2_grpc.DataPrepStub, Depends(get_dataprep)]
