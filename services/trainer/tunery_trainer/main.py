"""trainer process: the job control plane plus `TUNERY_TRAINER_WORKERS` training workers."""

import asyncio
from contextlib import AsyncExitStack

import grpc
from tunery.dataprep.v1 import dataprep_pb2_grpc
from tunery.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.service_main import service_main
from tunery_common.settings import CommonSettings, grpc_port

from tunery_trainer.control import TrainerControl
from tunery_trainer.settings import TrainerSettings
from tunery_trainer.worker import TrainWorker


def main() -> None:
    common = CommonSettings()
    settings = TrainerSettings()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)

    async def setup(bus: Bus, stack: AsyncExitStack):
        channel = grpc.aio.insecure_channel(common.dataprep_addr)
        stack.push_async_callback(channel.close)
        control = TrainerControl(bus, dataprep_pb2_grpc.DataPrepStub(channel), settings.validation_timeout_s)
        await control.resume_pending()
        stop = asyncio.Event()
        work_dir = settings.work_dir or common.home / "trainer"
        tasks = [
            asyncio.create_task(TrainWorker(bus, settings, work_dir, common.model_cache).run(stop))
            for _ in range(settings.workers)
        ]

        async def stop_workers():
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

        stack.push_async_callback(stop_workers)
        name = trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name
        return [(trainer_pb2_grpc.add_TrainerServicer_to_server, control, name)]

    service_main("trainer", common, grpc_port(common.trainer_addr), setup)


if __name__ == "__main__":
    main()
