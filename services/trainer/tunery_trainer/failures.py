"""Why a training run failed, as the job's error: bad settings, out of memory, or anything else."""

import gc

import torch
from tunery_common.records import JobError

from tunery_trainer.method import hyperparameters_path, method_type
from tunery_trainer.model_setup import ConfigError

# torch's CPU allocator reports a failed allocation as a plain RuntimeError with this text.
_CPU_ALLOCATION_FAILED = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and _CPU_ALLOCATION_FAILED in str(exc)
    )


def job_error(exc: Exception, method: dict) -> JobError:
    if isinstance(exc, ConfigError):
        return JobError(code="invalid_hyperparameters", message=str(exc), param=exc.param)
    if is_out_of_memory(exc):
        path = hyperparameters_path(method_type(method))
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = (
            f"Training ran out of memory ({detail[:300]}). Try a smaller {path}.batch_size "
            f'(with gradient_accumulation_steps to keep the effective batch), quantization "4bit" '
            f"or a smaller max_seq_len."
        )
        return JobError(code="out_of_memory", message=message, param=f"{path}.batch_size")
    return JobError(code="training_failed", message=f"{type(exc).__name__}: {exc}")


def free_accelerator_memory() -> None:
    """What a failed run left on the GPU goes back, so the next job starts with all of it."""
    if torch.cuda.is_available():
        gc.collect()  # the run's tensors may still hang in reference cycles of its frames
        torch.cuda.empty_cache()
