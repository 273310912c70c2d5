"""`tunery models`: fine-tuned models through the HTTP API.

`export` downloads a fine-tuned model's (or checkpoint's) LoRA adapter as a PEFT folder, or,
with `--merged`, merges it into its base model and writes a plain Hugging Face model folder.
The gateway is found like the `openai` client finds OpenAI: an option or an environment
variable (TUNERY_BASE_URL, TUNERY_API_KEY), else the stack `tunery up` runs from TUNERY_HOME.
Failures are one line with a hint and a non-zero exit: 1 for the server's answers and the
network, 2 for a bad output folder or configuration.
"""

import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn
from urllib.parse import quote

import typer
from rich.console import Console

if TYPE_CHECKING:
    import httpx

models_app = typer.Typer(help="Fine-tuned models: download adapters or merged models.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)  # soft wrap: an error stays one line, however long


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/] {message}" + (f" [dim](hint: {hint})[/]" if hint else ""), highlight=False)
    raise typer.Exit(code)


def api_base_url(explicit: str | None) -> str:
    """The API root (`.../v1`): the option or TUNERY_BASE_URL, else the local stack's gateway."""
    if explicit:
        url = explicit.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"
    from tunery_common.launcher import read_stack

    settings = _settings()
    state = read_stack(settings.home.resolve())
    if state and state.get("gateway_url"):
        return f"{state['gateway_url']}/v1"
    return f"http://{settings.host}:{settings.port}/v1"


def api_key(explicit: str | None) -> str:
    """The option or TUNERY_API_KEY, else the first of TUNERY_API_KEYS, else the local stack's key."""
    if explicit:
        return explicit
    settings = _settings()
    if settings.api_keys:
        return settings.api_keys.split(",")[0].strip().rpartition(":")[0]
    key_file = settings.home / "api_key"
    if key_file.is_file():
        return key_file.read_text().strip()
    fail(
        "no API key",
        "pass --api-key or set TUNERY_API_KEY (a local stack keeps its key in TUNERY_HOME/api_key)",
        code=2,
    )


def _settings():
    from tunery_common.settings import CommonSettings

    try:
        return CommonSettings()
    except ValueError as exc:  # pydantic's message names the bad variable
        fail(f"invalid configuration: {' '.join(str(exc).split())}", code=2)


@models_app.command()
def export(
    model: str = typer.Argument(..., help="A fine-tuned model id, or a checkpoint's (`...:ckpt-step-N`)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write (new or empty)."),
    merged: bool = typer.Option(
        False, "--merged", help="Merge into the base model: a plain Hugging Face folder, no PEFT needed."
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", envvar="TUNERY_BASE_URL", help="The gateway, e.g. http://127.0.0.1:8000/v1."
    ),
    key: str | None = typer.Option(None, "--api-key", envvar="TUNERY_API_KEY", help="A Tunery API key."),
) -> None:
    """Download a fine-tuned model: its LoRA adapter (PEFT folder), or the merged model."""
    _check_output(output)
    url, token = api_base_url(base_url), api_key(key)
    with _work_folder(output) as work:
        archive = work / "adapter.tar.gz"
        with archive.open("wb") as out:
            _download(url, token, model, out)
        adapter_dir = _extract(archive, work / "adapter")
        if merged:
            result = work / "merged"
            base = _merge(adapter_dir, result)
            what = f"merged model ({base} + adapter)"
        else:
            result, what = adapter_dir, "PEFT adapter"
        _move_into(result, output)
    err.print(f"[green]exported[/] {model} to {output}: {what}", highlight=False)


@contextmanager
def _work_folder(output: Path) -> Iterator[Path]:
    """A temporary folder beside the output (the same file system: merged models are large)."""
    try:
        output.resolve().parent.mkdir(parents=True, exist_ok=True)
        work = tempfile.TemporaryDirectory(prefix=".tunery-export-", dir=output.resolve().parent)
    except OSError as exc:
        fail(f"cannot write beside {output}: {exc.strerror or exc}", "choose a writable folder with -o", 2)
    with work as folder:
        yield Path(folder)


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        fail(f"{output} exists and is not a folder", "choose a new or empty folder with -o", code=2)
    if output.is_dir() and any(output.iterdir()):
        fail(f"{output} is not empty", "choose a new or empty folder with -o", code=2)


def _download(url: str, token: str, model: str, out: IO[bytes]) -> None:
    """Streams `/models/{model}/content` into `out` under a progress bar."""
    import httpx
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.stream(
            "GET", f"{url}/models/{quote(model, safe=':')}/content", headers=headers, timeout=600
        ) as response:
            if response.status_code != 200:
                response.read()
                _refused(response, url)
            total = int(response.headers.get("content-length", 0)) or None
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("downloading the adapter", total=total)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    bar.advance(task, len(chunk))
    except httpx.InvalidURL as exc:
        fail(
            f"invalid gateway URL {url!r}: {exc}",
            "set TUNERY_BASE_URL / --base-url to http://HOST:PORT/v1",
            2,
        )
    except httpx.TransportError as exc:
        fail(
            f"cannot reach the Tunery gateway at {url} ({type(exc).__name__}: {exc})",
            "start it with `tunery up`, or set TUNERY_BASE_URL / --base-url",
        )


def _refused(response: "httpx.Response", url: str) -> NoReturn:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text.strip()[:200] or response.reason_phrase
    status = response.status_code
    if status == 401:
        fail(f"the gateway at {url} refused the API key: {message}", "set TUNERY_API_KEY or --api-key")
    if status in (400, 404):
        fail(message, "pass a fine-tuned model id or a checkpoint's (GET /v1/models lists your models)")
    fail(f"the gateway answered {status}: {message}", "see the gateway's logs")


def _extract(archive: Path, target: Path) -> Path:
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        fail(f"the downloaded archive is unreadable: {exc}", "retry; the download may have been cut")
    return target


def _merge(adapter_dir: Path, out_dir: Path) -> str:
    from tunery_common.basemodels import UnknownModelError
    from tunery_common.merge import merge_adapter

    with err.status("merging the adapter into its base model"):
        try:
            return merge_adapter(adapter_dir, _settings().model_cache, out_dir)
        except ImportError as exc:
            fail(f"--merged needs torch, transformers and peft: {exc}", "install the trainer package")
        except UnknownModelError as exc:
            fail(f"cannot merge: {exc.args[0]}", "export the adapter without --merged")


def _move_into(source: Path, output: Path) -> None:
    """Moves the finished folder's files into `output`: a failure before leaves `output` untouched."""
    output.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        shutil.move(path, output / path.name)
