"""eval-judge process: `python -m tunery_evaljudge.main`."""

from contextlib import AsyncExitStack

from tunery.evaljudge.v1 import evaljudge_pb2, evaljudge_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.service_main import service_main
from tunery_common.settings import CommonSettings, grpc_port

from tunery_evaljudge.service import EvalJudgeService


def main() -> None:
    settings = CommonSettings()

    async def setup(bus: Bus, stack: AsyncExitStack):
        name = evaljudge_pb2.DESCRIPTOR.services_by_name["EvalJudge"].full_name
        return [(evaljudge_pb2_grpc.add_EvalJudgeServicer_to_server, EvalJudgeService(), name)]

    service_main("eval-judge", settings, grpc_port(settings.evaljudge_addr), setup)


if __name__ == "__main__":
    main()
