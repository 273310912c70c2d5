"""Gateway pieces without a network: error mapping, request/response translation, settings."""

import grpc
import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from tunery.trainer.v1 import trainer_pb2
from tunery_gateway.errors import OpenAIError, from_rpc_error, from_validation_error, model_error
from tunery_gateway.pagination import Page, paginate
from tunery_gateway.schemas.chat import ChatCompletionRequest
from tunery_gateway.schemas.fine_tuning import FineTuningJob, FineTuningJobCreate
from tunery_gateway.settings import GatewaySettings
from tunery_gateway.structs import to_struct


def _rpc_error(status: grpc.StatusCode, details: str = "nope", **trailing: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing.items()), details)


@pytest.mark.parametrize(
    ("grpc_code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.FAILED_PRECONDITION, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 502),
        (grpc.StatusCode.UNKNOWN, 502),
    ],
)
def test_grpc_codes_map_to_http(grpc_code, status):
    error = from_rpc_error(_rpc_error(grpc_code, "secret", param="training_file", code="bad_file"), "trainer")
    assert error.status_code == status
    body = error.body()["error"]
    if status < 500:  # the service's own words and fields reach the client
        assert (body["message"], body["param"], body["code"]) == ("secret", "training_file", "bad_file")
        assert body["type"] == ("rate_limit_error" if status == 429 else "invalid_request_error")
    else:  # server-side details stay in the log
        assert "secret" not in body["message"] and "trainer" in body["message"]
        assert body["type"] == "server_error"


def test_unknown_model_gets_openais_code():
    error = model_error(_rpc_error(grpc.StatusCode.NOT_FOUND, "no model x"))
    assert (error.status_code, error.param, error.code) == (404, "model", "model_not_found")
    assert model_error(_rpc_error(grpc.StatusCode.UNAVAILABLE)).status_code == 503


def _validation_error(model: type[BaseModel], body: object) -> OpenAIError:
    with pytest.raises(ValidationError) as excinfo:
        model.model_validate(body)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in excinfo.value.errors()]
    return from_validation_error(RequestValidationError(errors))


def test_validation_errors_name_the_parameter():
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    error = _validation_error(ChatCompletionRequest, {**chat, "top_p": 0})
    assert (error.status_code, error.param) == (400, "top_p")
    assert error.detail.startswith("Invalid value for 'top_p':")
    # A union's alternatives are folded into one parameter and one message.
    error = _validation_error(ChatCompletionRequest, {**chat, "messages": [{"role": "user", "content": 1}]})
    assert error.param == "messages[0].content"
    assert "valid string" in error.detail and "valid list" in error.detail
    error = _validation_error(ChatCompletionRequest, {**chat, "audio": {"voice": "alloy"}})
    assert (error.param, error.detail) == ("audio", "Invalid value for 'audio': not supported")
    assert (
        _validation_error(ChatCompletionRequest, {"messages": []}).detail
        == "Missing required parameter: 'model'."
    )
    error = _validation_error(FineTuningJobCreate, {"model": "m", "training_file": "f", "hyperparams": {}})
    assert (error.param, error.detail) == (
        "hyperparams",
        "Unrecognized request argument supplied: hyperparams",
    )
    assert _validation_error(FineTuningJobCreate, [1]).param is None


def test_harmless_values_of_unsupported_parameters_are_accepted():
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "assistant", "content": None, "refusal": None},
                {"role": "user", "content": "x"},
            ],
            "response_format": {"type": "text"},
            "tools": [],
            "tool_choice": "none",
            "logprobs": False,
            "frequency_penalty": 0.5,
        }
    )
    assert [m.content for m in request.to_proto("org").messages] == ["", "x"]


def test_legacy_hyperparameters_move_into_the_method():
    body = FineTuningJobCreate(
        model="m", training_file="f", hyperparameters={"n_epochs": 2, "batch_size": None}
    )
    request = body.to_proto("org1")
    assert not request.HasField("seed") and request.validation_file == ""
    assert dict(request.method) == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 2.0}},
    }
    assert not FineTuningJobCreate(model="m", training_file="f").to_proto("org1").HasField("method")


def test_job_from_proto_nulls_unset_fields_and_restores_ints():
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 8}}}
    method["supervised"]["hyperparameters"]["learning_rate_multiplier"] = 0.5
    job = FineTuningJob.from_proto(
        trainer_pb2.Job(id="ftjob-1", org="o", status="queued", method=to_struct(method))
    )
    assert job.method == method and job.hyperparameters.n_epochs == 3
    assert job.hyperparameters.learning_rate_multiplier == 0.5
    assert job.error is job.fine_tuned_model is job.finished_at is job.trained_tokens is job.metadata is None

    failed = trainer_pb2.Job(
        id="ftjob-2", status="failed", error=trainer_pb2.JobError(code="invalid_file", message="m")
    )
    job = FineTuningJob.from_proto(failed)
    assert (job.error.code, job.error.param) == ("invalid_file", None)
    assert job.hyperparameters.n_epochs == "auto" and job.method == {}


def test_paginate():
    items = ["c", "b", "a"]
    assert paginate(items, Page(None, 2), str) == (["c", "b"], True)
    assert paginate(items, Page("b", 2), str) == (["a"], False)
    with pytest.raises(OpenAIError) as excinfo:
        paginate(items, Page("z", 2), str)
    assert excinfo.value.param == "after"


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("TUNERY_GATEWAY_REQUEST_TIMEOUT_S", "12")
    monkeypatch.setenv("TUNERY_GATEWAY_CORS_ORIGINS", "http://a, http://b")
    monkeypatch.setenv("TUNERY_PORT", "9001")
    settings = GatewaySettings()
    assert (settings.request_timeout_s, settings.cors_origins, settings.port) == (
        12,
        ["http://a", "http://b"],
        9001,
    )


def test_bad_api_keys_fail_at_startup_without_showing_keys(monkeypatch):
    monkeypatch.setenv("TUNERY_API_KEYS", "sk-very-secret-key")
    with pytest.raises(ValidationError) as excinfo:
        GatewaySettings()
    assert "very-secret" not in str(excinfo.value)


def test_default_key_without_configured_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNERY_API_KEYS", raising=False)
    keys = GatewaySettings(home=tmp_path).load_api_keys()
    assert keys.org_for((tmp_path / "api_key").read_text().strip()) == "default"
