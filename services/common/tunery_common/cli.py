"""The `tunery` command. Heavy libraries are imported inside the commands that need them."""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console

from tunery_common.cli_data import data_app
from tunery_common.cli_eval import eval_app
from tunery_common.cli_models import models_app

app = typer.Typer(
    help="Tunery: fine-tune open LLMs and serve them behind an OpenAI-compatible API.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
console = Console(stderr=True)


def _settings():
    from tunery_common.settings import CommonSettings

    try:
        return CommonSettings()
    except Exception as exc:  # pydantic's message names the bad variable
        console.print(f"[red]invalid configuration:[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def up(
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Return once healthy; stop later with `tunery down`."
    ),
    random_ports: bool = typer.Option(False, help="Pick free ports for NATS, the services and the gateway."),
    timeout: float = typer.Option(600, help="Seconds to wait for every health check."),
) -> None:
    """Start NATS (unless TUNERY_NATS_URL is set), the four services and the gateway."""
    from tunery_common.apikeys import ApiKeyError, ensure_default_key, parse_api_keys
    from tunery_common.launcher import Stack, StackConfig, pid_alive, read_stack, wait_until_healthy

    settings = _settings()
    home = settings.home.resolve()
    running = read_stack(home)
    if running and pid_alive(running["pid"]):
        console.print(f"a stack already runs from {home} (pid {running['pid']}): {running['gateway_url']}")
        raise typer.Exit(1)
    if detach:
        home.mkdir(parents=True, exist_ok=True)
        (home / "logs").mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "tunery_common.cli", "up", "--timeout", str(timeout)]
        if random_ports:
            argv.append("--random-ports")
        with open(home / "logs" / "launcher.log", "ab") as out:
            launcher = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "TUNERY_HOME": str(home)},
            )
        try:
            state = wait_until_healthy(home, launcher, timeout + 30)
        except (RuntimeError, TimeoutError) as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
        _print_ready(state["gateway_url"], home, settings.api_keys)
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s launcher %(levelname)s %(message)s")
    api_keys = settings.api_keys
    try:
        parse_api_keys(api_keys)
    except ApiKeyError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if not api_keys:
        api_keys = ensure_default_key(home)
    nats_url = os.environ.get("TUNERY_NATS_URL")
    if random_ports:
        config = StackConfig.with_random_ports(
            home, host=settings.host, nats_url=nats_url, api_keys=api_keys, startup_timeout_s=timeout
        )
    else:
        from tunery_common.launcher import DEFAULT_PORTS
        from tunery_common.settings import grpc_port

        ports = {
            name: grpc_port(getattr(settings, f"{name.replace('-', '')}_addr")) for name in DEFAULT_PORTS
        }
        config = StackConfig(
            home=home,
            host=settings.host,
            gateway_port=settings.port,
            nats_url=nats_url,
            service_ports=ports,
            api_keys=api_keys,
            startup_timeout_s=timeout,
        )
    stack = Stack(config)
    stopping = {"flag": False}

    def on_signal(signum, frame):
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with console.status(
            "starting Tunery (the first start converts the default model; this takes a minute)"
        ):
            stack.start()
        _print_ready(stack.gateway_url, home, settings.api_keys)
        stack.run_forever(lambda: stopping["flag"])
    except (TimeoutError, RuntimeError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    finally:
        console.print("stopping Tunery")
        stack.stop()


def _print_ready(gateway_url: str, home: Path, keys_from_env: str) -> None:
    console.print(f"[green]Tunery is up[/]: {gateway_url}/v1")
    if keys_from_env:
        console.print("API keys: those in TUNERY_API_KEYS")
    else:
        console.print(f"API key (org 'default'): {(home / 'api_key').read_text().strip()}")
    console.print(f"logs: {home}/logs")


@app.command()
def down(timeout: float = typer.Option(60, help="Seconds to wait for the stack to stop.")) -> None:
    """Stop the stack started with `tunery up --detach` from this TUNERY_HOME."""
    from tunery_common.launcher import stop_detached

    home = _settings().home.resolve()
    if stop_detached(home, timeout):
        console.print("Tunery stopped")
    else:
        console.print(f"no running stack found under {home}")


@app.command()
def demo(
    train: Path = typer.Option(Path("examples/support_tickets/train.jsonl"), exists=True, dir_okay=False),
    heldout: Path = typer.Option(Path("examples/support_tickets/heldout.jsonl"), exists=True, dir_okay=False),
    model: str = typer.Option("smollm2-135m-instruct", help="Base model to fine-tune."),
    n_epochs: int = typer.Option(1, min=1),
    batch_size: int = typer.Option(8, min=1),
    learning_rate_multiplier: float = typer.Option(5.0, min=0.01),
) -> None:
    """Fine-tune the default model on support tickets and compare it with the base model."""
    from tunery_common.demo import DemoError, run_demo
    from tunery_common.launcher import pid_alive, read_stack

    settings = _settings()
    home = settings.home.resolve()
    state = read_stack(home)
    started_here = not (state and state.get("state") == "healthy" and pid_alive(state["pid"]))
    if started_here:
        console.print("starting the stack for the demo (`tunery up --detach`)")
        up(detach=True, random_ports=False, timeout=600)
        state = read_stack(home)
    api_key = (
        settings.api_keys.split(",")[0].rpartition(":")[0]
        if settings.api_keys
        else ((home / "api_key").read_text().strip())
    )
    hyperparameters = {
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": learning_rate_multiplier,
    }
    try:
        run_demo(f"{state['gateway_url']}/v1", api_key, train, heldout, model, hyperparameters, Console())
    except DemoError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    finally:
        if started_here:
            down(timeout=60)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
