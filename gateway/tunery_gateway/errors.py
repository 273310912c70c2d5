"""OpenAI error objects (`{"error": {"message", "type", "param", "code"}}`) for every failure.

Inside, services speak gRPC status codes; here they become HTTP statuses. Bad input never
answers 500: a 500 means a bug in the gateway, and its traceback goes to the log only.
"""

import logging
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc
import nats.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from tunery_common.grpc_errors import error_fields

log = logging.getLogger(__name__)


class OpenAIError(StarletteHTTPException):
    """An HTTP error whose body is an OpenAI error object.

    An HTTPException so that frameworks pass it through untouched (FastAPI turns any other
    exception raised while reading a body into a generic 400).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, message, headers)
        self.param = param
        self.code = code
        self.type = type or default_type(status)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.detail, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def default_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error"


def raise_openai_error(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    type: str | None = None,
) -> NoReturn:
    raise OpenAIError(status, message, param=param, code=code, type=type)


_GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def from_rpc_error(exc: grpc.aio.AioRpcError, service: str) -> OpenAIError:
    """The OpenAI error for a failed call to `service`; the service's message for client errors."""
    code = exc.code()
    status = _GRPC_TO_HTTP.get(code, 502)
    fields = error_fields(exc)
    if status < 500:
        # A precondition does not change by retrying; the openai SDK retries 409 unless told.
        headers = {"x-should-retry": "false"} if status == 409 else None
        return OpenAIError(status, exc.details() or code.name, headers=headers, **fields)
    # Server-side details (addresses, exception texts) stay in the log.
    log.warning("%s call failed: %s %s", service, code.name, exc.details())
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"service {service} unavailable, retry"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"service {service} did not answer in time"
    else:
        message = f"service {service} failed ({code.name}); see its logs"
    return OpenAIError(status, message, code=fields["code"])


def model_error(exc: grpc.aio.AioRpcError) -> OpenAIError:
    """A failed call naming a model: an unknown one gets OpenAI's `model_not_found`."""
    error = from_rpc_error(exc, "inference")
    if exc.code() == grpc.StatusCode.NOT_FOUND and error.code in (None, "not_found"):
        error.param, error.code = "model", "model_not_found"
    return error


def _path(loc: Sequence[str | int]) -> list[str | int]:
    """The client's path to a field: `("body", "messages", 0, "content")` → `messages`, 0, `content`.

    Pydantic adds the member type of a union to the location (`str`, `list[TextPart]`,
    `literal['auto']`, a class name); it is no part of the client's path.
    """
    return [
        part
        for part in loc[1:]  # loc[0] is body / query / path / header
        if isinstance(part, int)
        or not ("[" in part or part in {"str", "int", "float", "bool"} or part[:1].isupper())
    ]


def _param(path: list[str | int]) -> str | None:
    """`messages[0].content`, as OpenAI names a parameter."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or None


def from_validation_error(exc: RequestValidationError) -> OpenAIError:
    errors = [(error, _path(error["loc"])) for error in exc.errors()]
    # The deepest failure is the most precise: for `content: [{"type": "image"}]` it is
    # `content[0].type`, not "content should be a string".
    first, path = max(errors, key=lambda item: len(item[1]))
    param = _param(path)
    if first["type"] == "json_invalid":
        return OpenAIError(
            400,
            "We could not parse the JSON body of your request: "
            f"{first.get('ctx', {}).get('error', 'invalid JSON')}",
        )
    if param is None:  # the body itself: absent, a list, or sent with another Content-Type
        return OpenAIError(400, "The request body must be a JSON object sent as application/json.")
    if first["type"] == "missing":
        return OpenAIError(400, f"Missing required parameter: '{param}'.", param=param)
    if first["type"] == "extra_forbidden":
        return OpenAIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    # Every alternative of a union fails on the same path: say them all in one message.
    reasons = " or ".join(dict.fromkeys(_reason(error) for error, other in errors if other == path))
    return OpenAIError(400, f"Invalid value for '{param}': {reasons}", param=param)


def _reason(error: dict[str, Any]) -> str:
    if error["type"] == "value_error":  # our own validators: their message without "Value error, "
        return str(error["ctx"]["error"])
    return error["msg"]


async def _on_openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    return exc.response()


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Raised by the framework only (unknown route, wrong method, broken multipart).
    message = str(exc.detail)
    if exc.status_code in (404, 405):
        message = f"{message}: {request.method} {request.url.path}"
    return OpenAIError(exc.status_code, message, headers=exc.headers).response()


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return from_validation_error(exc).response()


async def _on_rpc_error(request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
    # `service` is recorded by the dependency that handed out the stub (see dependencies.py).
    return from_rpc_error(exc, getattr(request.state, "service", "upstream")).response()


async def _on_nats_error(request: Request, exc: nats.errors.Error) -> JSONResponse:
    log.warning("NATS failed during %s %s: %r", request.method, request.url.path, exc)
    return OpenAIError(503, "storage (NATS) unavailable, retry").response()


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this answer, so the server logs the traceback once.
    return OpenAIError(500, "internal error in the gateway; see its logs").response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OpenAIError, _on_openai_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(grpc.aio.AioRpcError, _on_rpc_error)
    app.add_exception_handler(nats.errors.Error, _on_nats_error)
    app.add_exception_handler(Exception, _on_unexpected)
