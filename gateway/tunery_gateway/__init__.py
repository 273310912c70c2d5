"""Tunery gateway: the OpenAI-compatible HTTP API."""
