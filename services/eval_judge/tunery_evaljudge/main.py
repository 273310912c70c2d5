"""eval-judge process: graders, the evals control plane, `TUNERY_EVALJUDGE_WORKERS` eval-run
workers and the promotion gate."""

import asyncio
from contextlib import AsyncExitStack

import grpc
from tunery.evaljudge.v1 import evaljudge_pb2, evaljudge_pb2_grpc
from tunery.inference.v1 import inference_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.service_main import service_main
from tunery_common.settings import CommonSettings, grpc_port

from tunery_evaljudge.eval_runs import EvalRunWorker
from tunery_evaljudge.evals_control import EvalsControl
from tunery_evaljudge.judge_endpoint import judge_client
from tunery_evaljudge.promotion import Promoter
from tunery_evaljudge.settings import EvalJudgeSettings


def main() -> None:
    common = CommonSettings()
    settings = EvalJudgeSettings()

    async def setup(bus: Bus, stack: AsyncExitStack):
        # Channels connect lazily: eval-judge starts before (or without) the services it calls.
        inference_channel = grpc.aio.insecure_channel(common.inference_addr)
        stack.push_async_callback(inference_channel.close)
        inference = inference_pb2_grpc.InferenceStub(inference_channel)
        judge = judge_client(settings, common)
        stack.push_async_callback(judge.close)
        control = EvalsControl(
            bus,
            inference,
            settings.validation_timeout_s,
            judge,
            settings.judge_model,
        )
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(EvalRunWorker(bus, inference, settings, judge).run(stop))
            for _ in range(settings.workers)
        ]
        tasks.append(asyncio.create_task(Promoter(control).run(stop)))

        async def stop_workers():
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

        stack.push_async_callback(stop_workers)
        name = evaljudge_pb2.DESCRIPTOR.services_by_name["EvalJudge"].full_name
        return [(evaljudge_pb2_grpc.add_EvalJudgeServicer_to_server, control, name)]

    service_main("eval-judge", common, grpc_port(common.evaljudge_addr), setup)


if __name__ == "__main__":
    main()
