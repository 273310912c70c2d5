"""Inference engines: chat and text completions over a base model and its LoRA adapters."""
