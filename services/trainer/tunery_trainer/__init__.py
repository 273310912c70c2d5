"""Tunery trainer service."""
