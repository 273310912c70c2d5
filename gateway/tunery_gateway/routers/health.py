"""`/healthz` for the launcher and probes: ready once the bus is connected; no auth."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    bus = getattr(request.app.state, "bus", None)
    if bus is None or not bus.nc.is_connected:
        return JSONResponse({"status": "unavailable", "reason": "NATS not connected"}, status_code=503)
    return JSONResponse({"status": "ok"})
