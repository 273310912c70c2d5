"""The gateway against a real NATS, driven by the official openai client and raw httpx.

Covers files end to end, authentication, org isolation, OpenAI error shapes for bad input, and
the answer when the gRPC services are not running (the services themselves are not started).
"""

import asyncio
import io

import httpx
import openai
import pytest
from gateway_harness import openai_client, serve_gateway
from tunery_common.bus import Bus
from tunery_common.natsserver import free_port
from tunery_gateway.settings import GatewaySettings

JSONL = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


@pytest.fixture
def gateway(nats_url, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_API_KEYS", "k1:org1,k2:org2")
    monkeypatch.setenv("TUNERY_MAX_UPLOAD_MB", "1")
    monkeypatch.setenv("TUNERY_GATEWAY_MAX_REQUEST_MB", "1")
    # Nothing listens on these ports: the services count as down.
    settings = GatewaySettings(
        nats_url=nats_url,
        home=tmp_path / "home",
        trainer_addr=f"127.0.0.1:{free_port()}",
        inference_addr=f"127.0.0.1:{free_port()}",
    )
    with serve_gateway(settings) as url:
        yield url


def _object_names(nats_url: str) -> list[str]:
    async def names() -> list[str]:
        bus = await Bus.connect(nats_url, "test")
        try:
            return [info.name for info in await bus.objects.list(ignore_deletes=True)]
        except Exception:  # nats-py raises NotFoundError for an empty store
            return []
        finally:
            await bus.close()

    return asyncio.run(names())


def _assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def test_file_lifecycle(gateway, nats_url):
    client = openai_client(gateway)
    created = client.files.create(file=("train.jsonl", JSONL), purpose="fine-tune")
    assert created.id.startswith("file-")
    assert (created.object, created.bytes, created.filename) == ("file", len(JSONL), "train.jsonl")
    assert (created.purpose, created.status) == ("fine-tune", "processed")

    assert [f.id for f in client.files.list()] == [created.id]
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == JSONL

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert list(client.files.list()) == []
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    assert _object_names(nats_url) == []


def test_large_upload_round_trips_through_disk_spooling(gateway):
    client = openai_client(gateway)
    data = bytes(range(256)) * 4000  # ~1 MB: spooled to a temporary file, stored in many chunks
    created = client.files.create(file=("big.jsonl", io.BytesIO(data)), purpose="evals")
    assert created.bytes == len(data)
    assert client.files.content(created.id).content == data


def test_other_org_gets_404_like_an_unknown_id(gateway):
    owner, other = openai_client(gateway, "k1"), openai_client(gateway, "k2")
    created = owner.files.create(file=("a.jsonl", JSONL), purpose="fine-tune")
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    assert list(other.files.list()) == []
    assert owner.files.retrieve(created.id).id == created.id  # untouched by the other org's delete
    response = httpx.get(f"{gateway}/v1/files/file-unknown", headers={"Authorization": "Bearer k2"})
    _assert_error(response, 404, "id", "not_found")


def test_api_key_required(gateway):
    with pytest.raises(openai.AuthenticationError):
        openai_client(gateway, "wrong").files.list()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic azE6"}):
        response = httpx.get(f"{gateway}/v1/files", headers=headers)
        error = _assert_error(response, 401, None, "invalid_api_key")
        assert error["type"] == "invalid_request_error"


def test_invalid_upload_fields(gateway):
    client = openai_client(gateway)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.files.create(file=("a.jsonl", JSONL), purpose="batch")
    assert excinfo.value.param == "purpose"
    auth = {"Authorization": "Bearer k1"}
    _assert_error(
        httpx.post(f"{gateway}/v1/files", headers=auth, files={"file": ("a", JSONL)}), 400, "purpose"
    )
    _assert_error(httpx.post(f"{gateway}/v1/files", headers=auth, data={"purpose": "evals"}), 400, "file")
    empty = httpx.post(
        f"{gateway}/v1/files", headers=auth, data={"purpose": "evals"}, files={"file": ("a", b"")}
    )
    _assert_error(empty, 400, "file")
    assert list(client.files.list()) == []


def test_upload_over_the_limit_is_refused_and_not_stored(gateway, nats_url):
    too_big = b"x" * (3 * 2**20 // 2)  # 1.5 MB against TUNERY_MAX_UPLOAD_MB=1
    with pytest.raises(openai.APIStatusError) as excinfo:
        openai_client(gateway).files.create(file=("big.jsonl", too_big), purpose="fine-tune")
    assert excinfo.value.status_code == 413
    assert excinfo.value.code == "file_too_large"

    # Without Content-Length (chunked) the bytes are counted as they arrive.
    boundary = "tunery-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
        ).encode()
        + too_big
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunked():
        for start in range(0, len(body), 64 << 10):
            yield body[start : start + (64 << 10)]

    response = httpx.post(
        f"{gateway}/v1/files",
        headers={"Authorization": "Bearer k1", "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=chunked(),
    )
    _assert_error(response, 413, "file", "file_too_large")
    assert list(openai_client(gateway).files.list()) == []
    assert _object_names(nats_url) == []


def test_list_pagination_and_purpose_filter(gateway):
    client = openai_client(gateway)
    ids = [client.files.create(file=(f"{i}.jsonl", JSONL), purpose="fine-tune").id for i in range(3)]
    evals = client.files.create(file=("e.jsonl", JSONL), purpose="evals").id
    url, auth = f"{gateway}/v1/files", {"Authorization": "Bearer k1"}

    first = httpx.get(url, params={"limit": 2, "purpose": "fine-tune"}, headers=auth).json()
    assert first["object"] == "list" and first["has_more"] is True
    page_ids = [f["id"] for f in first["data"]]
    assert (first["first_id"], first["last_id"]) == (page_ids[0], page_ids[-1])
    rest = httpx.get(
        f"{gateway}/v1/files",
        params={"limit": 2, "purpose": "fine-tune", "after": first["last_id"]},
        headers=auth,
    ).json()
    assert rest["has_more"] is False
    assert sorted(page_ids + [f["id"] for f in rest["data"]]) == sorted(ids)
    assert [f.id for f in client.files.list(purpose="evals")] == [evals]

    _assert_error(httpx.get(url, params={"limit": 0}, headers=auth), 400, "limit")
    _assert_error(httpx.get(url, params={"after": "file-gone"}, headers=auth), 400, "after")


def test_bad_json_and_wrong_types_are_400s(gateway):
    auth = {"Authorization": "Bearer k1", "Content-Type": "application/json"}
    jobs, chat = f"{gateway}/v1/fine_tuning/jobs", f"{gateway}/v1/chat/completions"
    _assert_error(httpx.post(jobs, headers=auth, content=b'{"model": "x", '), 400, None)
    _assert_error(httpx.post(jobs, headers=auth, content=b"[1, 2]"), 400, None)
    _assert_error(httpx.post(jobs, headers=auth, json={"training_file": "file-1"}), 400, "model")
    job = {"model": "m", "training_file": "file-1"}
    for extra, param in [
        ({"seed": "x"}, "seed"),
        ({"epochs": 3}, "epochs"),
        ({"suffix": "no spaces"}, "suffix"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"integrations": [{"type": "wandb"}]}, "integrations"),
        ({"method": {"type": "supervised"}, "hyperparameters": {"n_epochs": 2}}, "hyperparameters"),
    ]:
        error = _assert_error(httpx.post(jobs, headers=auth, json={**job, **extra}), 400, param)
        assert param.split(".")[0] in error["message"]

    chat_body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for extra, param in [
        ({"temperature": 5}, "temperature"),
        ({"n": 0}, "n"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 3}, "stop"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].type"),
        ({"messages": [{"role": "user"}]}, "messages[0]"),
        ({"messages": []}, "messages"),
    ]:
        _assert_error(httpx.post(chat, headers=auth, json={**chat_body, **extra}), 400, param)

    with pytest.raises(openai.BadRequestError) as excinfo:
        openai_client(gateway).chat.completions.create(model="m", messages=chat_body["messages"], n=200)
    assert excinfo.value.param == "n"

    huge = {"model": "m", "messages": [{"role": "user", "content": "x" * (3 * 2**20 // 2)}]}
    _assert_error(httpx.post(chat, headers=auth, json=huge), 413, None, "request_too_large")


def test_services_down_answer_503(gateway):
    client = openai_client(gateway)
    calls = {
        "trainer": [
            lambda: client.fine_tuning.jobs.create(model="m", training_file="file-1"),
            lambda: client.fine_tuning.jobs.list(),
            lambda: client.fine_tuning.jobs.retrieve("ftjob-1"),
            lambda: client.fine_tuning.jobs.list_events("ftjob-1"),
        ],
        "inference": [
            lambda: client.models.list(),
            lambda: client.models.retrieve("ft:m:org1::ftjob-1"),
            lambda: client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]),
            lambda: client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            ),
        ],
    }
    for service, service_calls in calls.items():
        for call in service_calls:
            with pytest.raises(openai.InternalServerError) as excinfo:
                call()
            assert excinfo.value.status_code == 503
            assert excinfo.value.body == {
                "message": f"service {service} unavailable, retry",
                "type": "server_error",
                "param": None,
                "code": None,
            }


def test_health_and_unknown_routes(gateway):
    assert httpx.get(f"{gateway}/healthz").json() == {"status": "ok"}
    _assert_error(httpx.get(f"{gateway}/v1/nothing", headers={"Authorization": "Bearer k1"}), 404)
    _assert_error(httpx.put(f"{gateway}/v1/files", headers={"Authorization": "Bearer k1"}), 405)
