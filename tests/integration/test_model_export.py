"""Downloading fine-tuned models: `GET /v1/models/{id}/content` on a real gateway and NATS, and
`tunery models export` (adapter, and merged into the base) against it."""

import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile

import httpx
import pytest
import torch
from adapter_helpers import BASE, INPUT_IDS, make_lora, peft_logits, publish
from gateway_harness import serve_gateway
from peft import PeftModel
from transformers import AutoModelForCausalLM
from tunery_common.basemodels import ensure_base_model
from tunery_common.bus import Bus
from tunery_common.cli import app
from tunery_common.natsserver import free_port
from tunery_gateway.settings import GatewaySettings
from typer.testing import CliRunner

JOB = "ftjob-export1"
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"]


@pytest.fixture(scope="module")
def adapters(model_cache, tmp_path_factory):
    base_dir = ensure_base_model(BASE, model_cache)
    root = tmp_path_factory.mktemp("adapters")
    final, step2 = make_lora(base_dir, root / "final", seed=3), make_lora(base_dir, root / "step2", seed=4)
    return base_dir, final, step2


@pytest.fixture
def gateway(nats_url, tmp_path, monkeypatch, adapters):
    """A gateway (no services: downloads need only the bus) with acme's model and checkpoint."""
    monkeypatch.setenv("TUNERY_API_KEYS", "k1:acme,k2:other")

    async def publish_both():
        bus = await Bus.connect(nats_url, "test")
        try:
            final, _ = await publish(bus, "acme", JOB, adapters[1])
            checkpoint, _ = await publish(bus, "acme", JOB, adapters[2], step=2)
            return final.id, checkpoint.id
        finally:
            await bus.close()

    models = asyncio.run(publish_both())
    settings = GatewaySettings(
        nats_url=nats_url, home=tmp_path / "home", inference_addr=f"127.0.0.1:{free_port()}"
    )
    with serve_gateway(settings) as url:
        yield url, *models


def _download(url: str, model_id: str, key: str = "k1") -> httpx.Response:
    return httpx.get(f"{url}/v1/models/{model_id}/content", headers={"Authorization": f"Bearer {key}"})


def _extract(content: bytes, target):
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ADAPTER_FILES
        tar.extractall(target, filter="data")
    return target


def test_downloaded_adapter_loads_with_peft_and_matches_the_published_one(gateway, adapters, tmp_path):
    url, final_id, checkpoint_id = gateway
    base_dir, final_dir, step2_dir = adapters
    for model_id, published, filename in (
        (final_id, final_dir, "ft-tiny-random-llama-acme-sfx-ftjob-export1.tar.gz"),
        (checkpoint_id, step2_dir, "ft-tiny-random-llama-acme-sfx-ftjob-export1-ckpt-step-2.tar.gz"),
    ):
        response = _download(url, model_id)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/gzip"
        assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'
        assert int(response.headers["content-length"]) == len(response.content)

        folder = _extract(response.content, tmp_path / filename)
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == BASE  # not the trainer's local path
        assert config["peft_type"] == "LORA" and config["r"] == 8
        assert (folder / "adapter_model.safetensors").read_bytes() == (
            published / "adapter_model.safetensors"
        ).read_bytes()
        assert torch.equal(peft_logits(base_dir, folder), peft_logits(base_dir, published))
    # The two downloads are different adapters.
    assert not torch.equal(peft_logits(base_dir, final_dir), peft_logits(base_dir, step2_dir))


def _assert_error(response: httpx.Response, status: int, param: str | None, code: str | None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    return error["message"]


def test_download_errors_are_openai_errors(gateway, nats_url, adapters):
    url, final_id, checkpoint_id = gateway
    # Another org's model and checkpoint answer like unknown ones.
    for model_id in (final_id, checkpoint_id):
        message = _assert_error(_download(url, model_id, key="k2"), 404, "model", "model_not_found")
        assert model_id in message
    for model_id in (
        f"{final_id}:ckpt-step-9",
        "ft:tiny-random-llama:acme:sfx:ftjob-missing",
        f"ft:smollm2-135m-instruct:acme:sfx:{JOB}",  # the job exists, under another id
        "ft:tiny-random-llama:acme:sfx:ftjob-bad key*",
        "no-such-model",
    ):
        _assert_error(_download(url, model_id), 404, "model", "model_not_found")
    message = _assert_error(_download(url, BASE), 400, "model", None)
    assert "only fine-tuned models" in message
    _assert_error(_download(url, final_id, key="wrong"), 401, None, "invalid_api_key")

    async def publish_without_adapter() -> str:
        bus = await Bus.connect(nats_url, "test")
        try:
            record, _ = await publish(bus, "acme", JOB, adapters[2], step=5)
            await bus.delete_object(record.adapter_object)
            return record.id
        finally:
            await bus.close()

    message = _assert_error(
        _download(url, asyncio.run(publish_without_adapter())), 404, "model", "model_not_found"
    )
    assert "no downloadable adapter" in message
    # The model route itself still answers for ids of every shape (the inference service is down).
    assert httpx.get(f"{url}/v1/models/{final_id}", headers={"Authorization": "Bearer k1"}).status_code == 503


def _export(args: list[str], **env: str):
    result = CliRunner().invoke(app, ["models", "export", *args], env=env)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_cli_exports_the_adapter(gateway, adapters, tmp_path):
    url, _, checkpoint_id = gateway
    out = tmp_path / "out" / "adapter"
    result = _export([checkpoint_id, "-o", str(out)], TUNERY_BASE_URL=url, TUNERY_API_KEY="k1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ADAPTER_FILES
    base_dir, _, step2_dir = adapters
    assert torch.equal(peft_logits(base_dir, out), peft_logits(base_dir, step2_dir))
    assert [p.name for p in out.parent.iterdir()] == ["adapter"]  # no work folder left behind


def test_cli_exports_a_merged_model_that_loads_without_peft(gateway, adapters, tmp_path, model_cache):
    url, final_id, _ = gateway
    out = tmp_path / "merged"
    out.mkdir()  # an existing empty folder is fine
    result = _export(
        [final_id, "-o", str(out), "--merged", "--base-url", f"{url}/v1", "--api-key", "k1"],
        TUNERY_MODEL_CACHE=str(model_cache),
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert not any(name.startswith("adapter") for name in names)

    base_dir, final_dir, _ = adapters
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert not isinstance(merged, PeftModel)
    with torch.inference_mode():
        logits = merged(INPUT_IDS).logits
    expected = peft_logits(base_dir, final_dir)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # The adapter does change the model: the comparison above is not base against base.
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        assert (base(INPUT_IDS).logits - expected).abs().max() > 1e-3


def test_cli_errors_are_one_line_with_a_hint(gateway, tmp_path):
    url, final_id, _ = gateway
    access = {"TUNERY_BASE_URL": url, "TUNERY_API_KEY": "k1"}
    work = tmp_path / "work"
    not_empty = work / "full"
    not_empty.mkdir(parents=True)
    (not_empty / "keep.txt").write_text("mine")
    unknown = "ft:tiny-random-llama:acme:sfx:ftjob-nope"
    down = f"http://127.0.0.1:{free_port()}/v1"
    cases = [
        (final_id, not_empty, access, 2, "is not empty"),
        (unknown, work / "a", access, 1, "does not exist"),
        (BASE, work / "b", access, 1, "only fine-tuned models"),
        (final_id, work / "c", {**access, "TUNERY_API_KEY": "wrong"}, 1, "refused the API key"),
        (final_id, work / "d", {**access, "TUNERY_BASE_URL": down}, 1, "cannot reach the Tunery gateway"),
    ]
    for model_id, out, env, exit_code, message in cases:
        result = _export([model_id, "-o", str(out)], **env)
        assert result.exit_code == exit_code, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "hint" in lines[0], result.output
    assert [p.name for p in not_empty.iterdir()] == ["keep.txt"]
    assert [p.name for p in work.iterdir()] == ["full"]  # failures leave nothing behind


def test_the_installed_command_exports(gateway, tmp_path):
    """The `tunery` entry point itself, as a user runs it."""
    url, final_id, _ = gateway
    out = tmp_path / "adapter"
    env = {**os.environ, "TUNERY_BASE_URL": url, "TUNERY_API_KEY": "k1"}
    done = subprocess.run(
        [sys.executable, "-m", "tunery_common.cli", "models", "export", final_id, "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"exported {final_id} to {out}" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ADAPTER_FILES
