"""Tunery data_prep service."""
