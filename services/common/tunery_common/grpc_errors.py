"""How services report errors over gRPC so the gateway can answer with an OpenAI error object.

The status code carries the kind (INVALID_ARGUMENT → 400, NOT_FOUND → 404, ...), the details the
human message, and trailing metadata the OpenAI `param` and `code` fields.
"""

import grpc


class ServiceError(Exception):
    """Raised by domain code; turned into a gRPC status by `abort_with`."""

    def __init__(
        self, status: grpc.StatusCode, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def invalid(message: str, param: str | None = None, code: str | None = None) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, param, code)


def not_found(message: str, param: str | None = None) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message, param, "not_found")


def conflict(message: str, param: str | None = None) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message, param, "conflict")


async def abort_with(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    metadata = []
    if error.param:
        metadata.append(("param", error.param))
    if error.code:
        metadata.append(("code", error.code))
    context.set_trailing_metadata(tuple(metadata))
    await context.abort(error.status, error.message)


def error_fields(exc: grpc.aio.AioRpcError) -> dict[str, str | None]:
    """`param` and `code` a service attached to a failed call."""
    trailing = dict(exc.trailing_metadata() or ())
    return {"param": trailing.get("param"), "code": trailing.get("code")}


async def answer_or_abort(context: grpc.aio.ServicerContext, handler, request):
    """Runs a unary handler; a ServiceError it raises becomes the call's status and trailing metadata."""
    try:
        return await handler(request)
    except ServiceError as exc:
        await abort_with(context, exc)
