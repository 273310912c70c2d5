"""Pydantic models of the OpenAI protocol, one module per resource."""
