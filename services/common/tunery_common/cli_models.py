"""`tunery models`: fine-tuned models through the HTTP API.

`export` downloads a fine-tuned model's (or checkpoint's) LoRA adapter as a PEFT folder, or,
with `--merged`, merges it into its base model and writes a plain Hugging Face model folder.
`parity` checks that the serving engine answers like the PEFT-in-transformers reference: the
same prompts, greedy, through both, compared token by token (tunery_common.parity).
The gateway is found like the `openai` client finds OpenAI: an option or an environment
variable (TUNERY_BASE_URL, TUNERY_API_KEY), else the stack `tunery up` runs from TUNERY_HOME.
Failures are one line with a hint and a non-zero exit: 1 for the server's answers and the
network (and a parity below `--min-agreement`), 2 for a bad output folder, file or configuration.
"""

import json
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

models_app = typer.Typer(
    help="Fine-tuned models: download adapters or merged models, check train/serve parity.",
    no_args_is_help=True,
)
err = Console(stderr=True, soft_wrap=True)  # soft wrap: an error stays one line, however long
out = Console()


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


@models_app.command()
def parity(
    model: str = typer.Argument(..., help="A fine-tuned model id, or a checkpoint's (`...:ckpt-step-N`)."),
    file: Path | None = typer.Option(
        None,
        "--file",
        help="Chat JSONL whose prompts to use (default: the job's validation file, else its training file).",
    ),
    n: int = typer.Option(20, "--n", min=1, help="How many prompts (the file's first N)."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1, help="Tokens per completion."),
    min_agreement: float = typer.Option(
        0.9, "--min-agreement", min=0.0, max=1.0, help="Exit 1 when the exact-match rate is below it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    base_url: str | None = typer.Option(
        None, "--base-url", envvar="TUNERY_BASE_URL", help="The gateway, e.g. http://127.0.0.1:8000/v1."
    ),
    key: str | None = typer.Option(None, "--api-key", envvar="TUNERY_API_KEY", help="A Tunery API key."),
) -> None:
    """Greedy answers of the serving engine vs the PEFT-in-transformers reference, token by token."""
    from tunery_common.parity import PromptFileError, agreement, prompts_of, summary

    _require_reference_libraries()
    url, token = api_base_url(base_url), api_key(key)
    client = _openai_client(url, token)
    try:
        source, text = _prompt_source(client, model, file)
        prompts = prompts_of(text, source, n)
    except PromptFileError as exc:
        fail(str(exc), "pass --file with chat examples (`messages`)", code=2)
    with tempfile.TemporaryDirectory(prefix="tunery-parity-") as work:
        archive = Path(work) / "adapter.tar.gz"
        with archive.open("wb") as download:
            _download(url, token, model, download)
        adapter_dir = _extract(archive, Path(work) / "adapter")
        served = _served_completions(client, model, prompts, max_tokens)
        reference = _reference_completions(adapter_dir, prompts, max_tokens)
    agreements = [agreement(r.tokens, s.tokens) for r, s in zip(reference, served, strict=True)]
    figures = summary(agreements)
    report = {
        "model": model,
        "prompts": source,
        "n": len(prompts),
        "max_tokens": max_tokens,
        **figures,
        "min_agreement": min_agreement,
        "passed": figures["exact_match_rate"] >= min_agreement,
        "items": [
            {
                "messages": messages,
                "reference": r.text,
                "served": s.text,
                "exact": a.exact,
                "common_prefix": a.common_prefix,
                "tokens": a.longest,
            }
            for messages, r, s, a in zip(prompts, reference, served, agreements, strict=True)
        ],
    }
    if as_json:
        print(json.dumps(report))
    else:
        _print_parity(report)
    if not report["passed"]:
        if not as_json:
            err.print(
                f"[red]parity below --min-agreement {min_agreement:.2f}[/]: "
                f"{figures['exact_match_rate']:.2f} of the completions agree",
                highlight=False,
            )
        raise typer.Exit(1)


def _openai_client(url: str, token: str):
    import openai

    return openai.OpenAI(base_url=url, api_key=token, max_retries=2, timeout=600)


def _prompt_source(client, model: str, file: Path | None) -> tuple[str, str]:
    """(where the prompts come from, the JSONL text): `--file`, else the model's job's files."""
    import openai

    from tunery_common.records import job_id_of_model

    if file is not None:
        try:
            return str(file), file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {file}: {exc}", "pass a chat JSONL file with --file", code=2)
    job_id = job_id_of_model(model)
    if job_id is None:
        fail(
            f"{model!r} names no fine-tuning job to take prompts from",
            "pass a chat JSONL file with --file",
            2,
        )
    with _api_errors(client):
        job = client.fine_tuning.jobs.retrieve(job_id)
        file_id = job.validation_file or job.training_file
        what = "validation" if job.validation_file else "training"
        try:
            return f"{job_id}'s {what} file {file_id}", client.files.content(file_id).text
        except openai.NotFoundError:
            fail(f"the {what} file {file_id} of {job_id} is gone", "pass a chat JSONL file with --file", 2)


@contextmanager
def _api_errors(client) -> Iterator[None]:
    """The `openai` client's failures as one line each."""
    import openai

    try:
        yield
    except openai.AuthenticationError as exc:
        fail(f"the gateway at {client.base_url} refused the API key: {exc.message}", "set TUNERY_API_KEY")
    except openai.APIStatusError as exc:
        fail(f"the gateway answered {exc.status_code}: {exc.message}", "check the model id (GET /v1/models)")
    except openai.APIConnectionError as exc:
        fail(
            f"cannot reach the Tunery gateway at {client.base_url} ({exc})",
            "start it with `tunery up`, or set TUNERY_BASE_URL / --base-url",
        )


def _served_completions(client, model: str, prompts: list[list[dict]], max_tokens: int) -> list:
    """Greedy completions from the serving engine, one request at a time, with their tokens' bytes."""
    from rich.progress import Progress

    from tunery_common.parity import END, Completion

    completions = []
    with _api_errors(client), Progress(console=err, transient=True) as bar:
        task = bar.add_task("serving engine", total=len(prompts))
        for messages in prompts:
            reply = client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, temperature=0, logprobs=True
            )
            choice = reply.choices[0]
            tokens = [bytes(t.bytes or b"") for t in (choice.logprobs.content or [])]
            # Without stop strings, a greedy answer stops early only at an end-of-sequence token.
            tokens += [END] if choice.finish_reason == "stop" else []
            completions.append(Completion(choice.message.content or "", tokens))
            bar.advance(task)
    return completions


def _reference_completions(adapter_dir: Path, prompts: list[list[dict]], max_tokens: int) -> list:
    from rich.progress import Progress

    from tunery_common.basemodels import UnknownModelError, ensure_base_model
    from tunery_common.merge import adapter_base_model
    from tunery_common.parity import reference_completions

    try:
        base_dir = ensure_base_model(adapter_base_model(adapter_dir), _settings().model_cache)
    except UnknownModelError as exc:
        fail(f"no reference for this adapter: {exc.args[0]}")
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("PEFT reference", total=len(prompts))
        return reference_completions(base_dir, adapter_dir, prompts, max_tokens, lambda: bar.advance(task))


def _require_reference_libraries() -> None:
    """The reference runs here: fail before the first request without what it needs."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import tunery_inference.engines.vocabulary  # noqa: F401 - the engine's exact token bytes
    except ImportError as exc:
        fail(
            f"parity runs the PEFT reference here: it needs torch, peft, tunery-inference ({exc})",
            "install the inference package",
            code=2,
        )


def _print_parity(report: dict) -> None:
    from rich.table import Table

    table = Table(
        title=f"{report['model']}: served vs PEFT reference (prompts: {report['prompts']})",
        title_justify="left",
    )
    for column in ("#", "prompt", "agree", "common prefix", "reference", "served"):
        table.add_column(column, overflow="fold")
    for i, item in enumerate(report["items"], start=1):
        table.add_row(
            str(i),
            _short(item["messages"][-1]["content"]),
            "[green]yes[/]" if item["exact"] else "[red]no[/]",
            f"{item['common_prefix']}/{item['tokens']}",
            _short(item["reference"]),
            "(same)" if item["exact"] else _short(item["served"]),
        )
    out.print(table)
    out.print(
        f"exact match: [bold]{report['exact_match_rate']:.2f}[/] of {report['n']} completions; "
        f"mean common prefix: [bold]{report['mean_common_prefix']:.2f}[/] of the tokens",
        highlight=False,
    )


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


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
