"""The worker's pieces that need no bus: the method object, the result CSV, failure kinds, devices."""

import csv
import io

import pytest
import torch
from pydantic import ValidationError
from tunery_common.grpc_errors import ServiceError
from tunery_trainer.failures import is_out_of_memory, job_error
from tunery_trainer.main import check_devices
from tunery_trainer.method import hyperparameters_of, parse_method
from tunery_trainer.results import metrics_csv
from tunery_trainer.settings import TrainerSettings


def test_a_method_keeps_what_was_given_and_reads_back_as_hyperparameters():
    method = parse_method({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5, "lora": {"r": 4}}}})
    assert method == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5, "lora": {"r": 4}}}}
    hp = hyperparameters_of(method)
    assert (hp.beta, hp.lora.r, hp.n_epochs) == (0.5, 4, "auto")
    assert parse_method(None) == {"type": "supervised", "supervised": {"hyperparameters": {}}}


HP = "method.supervised.hyperparameters"


@pytest.mark.parametrize(
    ("section", "param"),
    [
        ({"hyperparameters": {"lora": {"alpha": 0}}}, f"{HP}.lora.alpha"),
        ({"hyperparameters": {"lora": {"target_modules": ["q_proj", 1]}}}, f"{HP}.lora.target_modules[1]"),
        ({"hyperparameters": {"lr_scheduler": "step"}}, f"{HP}.lr_scheduler"),
        ({"hyperparameters": [1]}, HP),
        ({"extra": 1}, "method.supervised.extra"),
    ],
)
def test_a_bad_method_names_its_field(section, param):
    with pytest.raises(ServiceError) as info:
        parse_method({"type": "supervised", "supervised": section})
    assert info.value.param == param and info.value.message


def test_the_result_csv_puts_openai_columns_first():
    history = [
        {"step": 1, "epoch": 1, "train_loss": 2.5, "train_mean_token_accuracy": 0.25, "learning_rate": 1e-4},
        {"step": 2, "epoch": 1, "train_loss": 2.0, "train_mean_token_accuracy": 0.5, "valid_loss": 2.2},
        {
            "step": 3,
            "epoch": 2,
            "train_loss": 1.5,
            "train_mean_token_accuracy": 0.75,
            "full_valid_loss": None,
        },
    ]
    rows = list(csv.reader(io.StringIO(metrics_csv(history).decode())))
    assert rows[0] == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "epoch",
        "learning_rate",
        "full_valid_loss",
    ]
    assert rows[1] == ["1", "2.5", "0.25", "", "", "1", "0.0001", ""]
    assert rows[2][3] == "2.2" and rows[3][-1] == ""
    assert metrics_csv([]).decode().splitlines() == [",".join(rows[0][:5])]


def test_running_out_of_memory_is_told_apart_from_other_failures():
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(2**56, dtype=torch.uint8)  # beyond any address space: the allocator refuses
    assert is_out_of_memory(cpu.value)
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))

    method = {"type": "dpo", "dpo": {"hyperparameters": {}}}
    error = job_error(cpu.value, method)
    assert (error.code, error.param) == ("out_of_memory", "method.dpo.hyperparameters.batch_size")
    assert "DefaultCPUAllocator" in error.message and '"4bit"' in error.message
    other = job_error(ValueError("no training examples"), method)
    assert (other.code, other.message, other.param) == (
        "training_failed",
        "ValueError: no training examples",
        None,
    )


def test_devices_give_one_worker_each(monkeypatch):
    monkeypatch.setenv("TUNERY_TRAINER_DEVICES", "cuda:0, cuda:1")
    assert TrainerSettings().worker_devices() == ["cuda:0", "cuda:1"]
    monkeypatch.delenv("TUNERY_TRAINER_DEVICES")
    assert TrainerSettings(workers=2).worker_devices() == [None, None]
    assert TrainerSettings(workers=0).worker_devices() == []
    for bad in ("gpu0", "cuda:0,cuda:0"):
        monkeypatch.setenv("TUNERY_TRAINER_DEVICES", bad)
        with pytest.raises(ValidationError, match="devices"):
            TrainerSettings()


def test_a_device_the_machine_lacks_stops_the_trainer_at_start():
    check_devices(["cpu"])
    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    with pytest.raises(SystemExit, match=f"names {missing}"):
        check_devices(["cpu", missing])
