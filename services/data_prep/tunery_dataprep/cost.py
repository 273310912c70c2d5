"""What a fine-tune costs: managed providers from a price table, self-hosted LoRA from GPU-hours.

The table is data (prices.toml); this module only multiplies. Trained tokens are the cookbook's:
billing tokens (each example capped) × epochs.
"""

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from tunery_common.training_rules import auto_n_epochs

DEFAULT_PRICES = Path(__file__).with_name("prices.toml")
DAYS_PER_MONTH = 30
MILLION = 1_000_000


@dataclass(frozen=True)
class Gpu:
    usd_per_hour: float
    tokens_per_s: tuple[float, ...]  # per size bucket


@dataclass(frozen=True)
class PriceTable:
    training: dict[str, float]  # USD per 1M trained tokens
    inference: dict[str, tuple[float, float]]  # USD per 1M input, output tokens
    base: str
    fine_tuned: tuple[str, ...]
    size_buckets_b: tuple[float, ...]
    gpus: dict[str, Gpu]
    model_params_b: dict[str, float]

    def throughput(self, gpu: str, model: str) -> float:
        """LoRA training tokens/s of `gpu` on `model`; 0 when it does not fit (or is unknown)."""
        params = self.model_params_b.get(model)
        if params is None:
            return 0.0
        for bound, tps in zip(self.size_buckets_b, self.gpus[gpu].tokens_per_s, strict=True):
            if params <= bound:
                return tps
        return 0.0


@lru_cache(maxsize=8)
def load_prices(path: Path | None = None) -> PriceTable:
    """The price table; a malformed file fails here, at start-up, naming what is wrong."""
    path = path or DEFAULT_PRICES
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    try:
        hosted = raw["self_hosted"]
        table = PriceTable(
            training={k: float(v) for k, v in raw["training"].items()},
            inference={k: (float(v["input"]), float(v["output"])) for k, v in raw["inference"].items()},
            base=raw["comparison"]["base"],
            fine_tuned=tuple(raw["comparison"]["fine_tuned"]),
            size_buckets_b=tuple(hosted["size_buckets_b"]),
            gpus={
                name: Gpu(float(g["usd_per_hour"]), tuple(map(float, g["tokens_per_s"])))
                for name, g in hosted["gpus"].items()
            },
            model_params_b={k: float(v) for k, v in hosted["models"].items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed price table ({exc!r})") from None
    for name, gpu in table.gpus.items():
        if len(gpu.tokens_per_s) != len(table.size_buckets_b):
            raise ValueError(f"{path}: gpu {name!r} needs one throughput per size bucket")
    for name in (table.base, *table.fine_tuned):
        if name not in table.inference:
            raise ValueError(f"{path}: comparison names {name!r}, which has no inference price")
    return table


class TrainingCost(BaseModel):
    backend: str  # "gpt-4o-mini", or "self-hosted nvidia-a100-80gb"
    kind: Literal["managed", "self_hosted"]
    trained_tokens: int
    usd: float
    gpu_hours: float | None = None
    usd_per_gpu_hour: float | None = None


class InferenceCost(BaseModel):
    model: str
    usd_per_month: float
    saving_usd_per_month: float  # against the base model; negative when dearer


class InferenceMonthly(BaseModel):
    requests_per_day: int
    input_tokens_per_request: int
    output_tokens_per_request: int
    base: InferenceCost
    fine_tuned: list[InferenceCost]


def training_costs(
    trained_tokens: int,
    model: str,
    prices: PriceTable,
    *,
    gpu: str | None = None,
    gpu_usd_per_hour: float | None = None,
) -> list[TrainingCost]:
    """One entry per managed backend, then one per GPU type the model fits (or just `gpu`)."""
    costs = [
        TrainingCost(
            backend=name,
            kind="managed",
            trained_tokens=trained_tokens,
            usd=round(trained_tokens * usd / MILLION, 6),
        )
        for name, usd in prices.training.items()
    ]
    for name in [gpu] if gpu else prices.gpus:
        tps = prices.throughput(name, model)
        if tps <= 0:
            continue
        hours = trained_tokens / tps / 3600
        hourly = gpu_usd_per_hour or prices.gpus[name].usd_per_hour
        costs.append(
            TrainingCost(
                backend=f"self-hosted {name}",
                kind="self_hosted",
                trained_tokens=trained_tokens,
                usd=round(hours * hourly, 6),
                gpu_hours=round(hours, 6),
                usd_per_gpu_hour=hourly,
            )
        )
    return costs


def inference_monthly(
    requests_per_day: int, input_tokens: int, output_tokens: int, prices: PriceTable
) -> InferenceMonthly:
    def monthly(model: str) -> float:
        usd_in, usd_out = prices.inference[model]
        per_request = (input_tokens * usd_in + output_tokens * usd_out) / MILLION
        return round(per_request * requests_per_day * DAYS_PER_MONTH, 2)

    base = monthly(prices.base)
    return InferenceMonthly(
        requests_per_day=requests_per_day,
        input_tokens_per_request=input_tokens,
        output_tokens_per_request=output_tokens,
        base=InferenceCost(model=prices.base, usd_per_month=base, saving_usd_per_month=0.0),
        fine_tuned=[
            InferenceCost(model=m, usd_per_month=monthly(m), saving_usd_per_month=round(base - monthly(m), 2))
            for m in prices.fine_tuned
        ],
    )


class CostEstimate(BaseModel):
    model: str
    n_examples: int
    billing_tokens: int  # per epoch: each example's tokens, capped
    n_epochs: int
    trained_tokens: int
    training: list[TrainingCost]
    inference_monthly: InferenceMonthly | None = None


def estimate_cost(
    *,
    model: str,
    n_examples: int,
    billing_tokens: int,
    n_epochs: int | None,
    prices: PriceTable,
    gpu: str | None = None,
    gpu_usd_per_hour: float | None = None,
    requests_per_day: int = 0,
    input_tokens_per_request: int = 0,
    output_tokens_per_request: int = 0,
) -> CostEstimate:
    """Training per backend for `n_epochs` ("auto" when None), and inference when traffic is given."""
    epochs = n_epochs or (auto_n_epochs(n_examples) if n_examples else 0)
    trained = billing_tokens * epochs
    monthly = None
    if requests_per_day:
        monthly = inference_monthly(
            requests_per_day, input_tokens_per_request, output_tokens_per_request, prices
        )
    return CostEstimate(
        model=model,
        n_examples=n_examples,
        billing_tokens=billing_tokens,
        n_epochs=epochs,
        trained_tokens=trained,
        training=training_costs(trained, model, prices, gpu=gpu, gpu_usd_per_hour=gpu_usd_per_hour),
        inference_monthly=monthly,
    )
