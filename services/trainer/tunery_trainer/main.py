"""trainer process: the job control plane plus one training worker per device."""

import asyncio
from contextlib import AsyncExitStack

import grpc
from tunery.dataprep.v1 import dataprep_pb2_grpc
from tunery.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.service_main import service_main
from tunery_common.settings import CommonSettings, grpc_port

from tunery_trainer.control import TrainerControl
from tunery_trainer.providers import ProviderConfigError, load_providers
from tunery_trainer.settings import TrainerSettings


def check_devices(devices: list[str]) -> None:
    """Fails at start-up on a device this machine does not have."""
    cuda = [device for device in devices if device.startswith("cuda")]
    if not cuda:
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device in cuda:
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise SystemExit(
                f"TUNERY_TRAINER_DEVICES names {device}, but this machine has {count} CUDA devices"
            )


def main() -> None:
    common = CommonSettings()
    settings = TrainerSettings()
    check_devices(settings.devices)
    try:
        providers = load_providers()
    except ProviderConfigError as exc:
        raise SystemExit(str(exc)) from None
    devices = settings.worker_devices()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)

    async def setup(bus: Bus, stack: AsyncExitStack):
        channel = grpc.aio.insecure_channel(common.dataprep_addr)
        stack.push_async_callback(channel.close)
        control = TrainerControl(
            bus,
            dataprep_pb2_grpc.DataPrepStub(channel),
            settings.validation_timeout_s,
            model_cache=common.model_cache,
            max_lora_rank=settings.max_lora_rank,
            providers=providers,
        )
        await control.resume_pending()
        stop = asyncio.Event()
        work_dir = settings.work_dir or common.home / "trainer"
        tasks = []
        if devices:  # the control plane alone needs no torch
            from tunery_trainer.worker import TrainWorker

            tasks = [
                asyncio.create_task(
                    TrainWorker(bus, settings, work_dir, common.model_cache, device, providers=providers).run(
                        stop
                    )
                )
                for device in devices
            ]

        async def stop_workers():
            # Each running job saves a checkpoint at its next step and goes back to the queue.
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

        stack.push_async_callback(stop_workers)
        name = trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name
        return [(trainer_pb2_grpc.add_TrainerServicer_to_server, control, name)]

    service_main("trainer", common, grpc_port(common.trainer_addr), setup)


if __name__ == "__main__":
    main()
