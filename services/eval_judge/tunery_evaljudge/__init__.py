"""Tunery eval_judge service."""
