"""Cost estimates: managed prices, self-hosted GPU-hours, monthly inference, the table as data."""

import pytest
from tunery_dataprep.cost import DEFAULT_PRICES, estimate_cost, load_prices, training_costs


@pytest.fixture
def prices():
    return load_prices()


def test_training_per_backend(prices):
    estimate = estimate_cost(
        model="smollm2-135m-instruct", n_examples=1000, billing_tokens=500_000, n_epochs=None, prices=prices
    )
    assert (estimate.n_epochs, estimate.trained_tokens) == (3, 1_500_000)
    usd = {c.backend: c.usd for c in estimate.training}
    assert usd["gpt-4o-mini"] == pytest.approx(4.50)
    assert usd["gpt-4o"] == pytest.approx(37.50)
    assert usd["gpt-3.5-turbo"] == pytest.approx(12.00)
    a100 = next(c for c in estimate.training if c.backend == "self-hosted nvidia-a100-80gb")
    # 1.5M tokens at 60,000 tokens/s (models up to 0.5B) = 25 s = 0.00694 GPU-hours at 1.80/h
    assert a100.gpu_hours == pytest.approx(1_500_000 / 60_000 / 3600, abs=1e-4)
    assert a100.usd == pytest.approx(a100.gpu_hours * 1.80, abs=1e-4)
    assert estimate.inference_monthly is None


def test_explicit_epochs_one_gpu_and_its_price(prices):
    estimate = estimate_cost(
        model="smollm2-135m-instruct",
        n_examples=10,
        billing_tokens=1000,
        n_epochs=2,
        prices=prices,
        gpu="nvidia-l4",
        gpu_usd_per_hour=1.0,
    )
    assert estimate.trained_tokens == 2000
    [hosted] = [c for c in estimate.training if c.kind == "self_hosted"]
    assert (hosted.backend, hosted.usd_per_gpu_hour) == ("self-hosted nvidia-l4", 1.0)


def test_inference_monthly_base_against_fine_tuned(prices):
    estimate = estimate_cost(
        model="smollm2-135m-instruct",
        n_examples=100,
        billing_tokens=10_000,
        n_epochs=None,
        prices=prices,
        requests_per_day=1000,
        input_tokens_per_request=500,
        output_tokens_per_request=100,
    )
    monthly = estimate.inference_monthly
    # gpt-4o: (500 x 2.50 + 100 x 10.00) / 1M x 1000 x 30 = 67.50
    assert (monthly.base.model, monthly.base.usd_per_month) == ("gpt-4o", 67.50)
    mini = next(m for m in monthly.fine_tuned if m.model == "ft:gpt-4o-mini")
    # (500 x 0.30 + 100 x 1.20) / 1M x 30,000 = 8.10
    assert (mini.usd_per_month, mini.saving_usd_per_month) == (8.10, 59.40)
    ft4o = next(m for m in monthly.fine_tuned if m.model == "ft:gpt-4o")
    assert ft4o.saving_usd_per_month < 0  # dearer than the base model


def test_gpus_a_model_does_not_fit_are_left_out(tmp_path):
    table = tmp_path / "prices.toml"
    # [self_hosted.models] is the file's last table: a 20B model fits no 0.5B..14B bucket of the L4.
    table.write_text(DEFAULT_PRICES.read_text() + '"big-20b" = 20\n')
    prices = load_prices(table)
    assert prices.throughput("cpu-2-cores", "smollm2-135m-instruct") == 150
    assert prices.throughput("nvidia-l4", "big-20b") == 0
    hosted = [c.backend for c in training_costs(10**6, "big-20b", prices) if c.kind == "self_hosted"]
    assert hosted == ["self-hosted nvidia-a100-80gb", "self-hosted nvidia-h100-80gb"]


def test_a_malformed_table_fails_naming_the_file(tmp_path):
    bad = tmp_path / "prices.toml"
    bad.write_text('[training]\n"x" = 1\n')
    with pytest.raises(ValueError, match="prices.toml"):
        load_prices(bad)
