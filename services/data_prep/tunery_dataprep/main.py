"""data-prep process: `python -m tunery_dataprep.main`."""

from contextlib import AsyncExitStack

from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.service_main import service_main
from tunery_common.settings import CommonSettings, grpc_port

from tunery_dataprep.service import DataPrepService
from tunery_dataprep.settings import DataPrepSettings


def main() -> None:
    common = CommonSettings()
    settings = DataPrepSettings()

    async def setup(bus: Bus, stack: AsyncExitStack):
        service = DataPrepService(bus, settings.model_cache, settings)
        name = dataprep_pb2.DESCRIPTOR.services_by_name["DataPrep"].full_name
        return [(dataprep_pb2_grpc.add_DataPrepServicer_to_server, service, name)]

    service_main("data-prep", common, grpc_port(common.dataprep_addr), setup)


if __name__ == "__main__":
    main()
