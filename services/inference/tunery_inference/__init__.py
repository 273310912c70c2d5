"""Tunery inference service."""
