"""Inference engines: run chat completions over a base model and its LoRA adapters."""
