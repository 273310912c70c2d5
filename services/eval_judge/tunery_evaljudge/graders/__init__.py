"""Graders: from a model's answer (and the eval item) to a verdict.

basic.py holds the GradeSamples RPC's exact match and JSON validity; the other modules are testing
criteria in the shape of OpenAI's Evals API graders, loaded and run through criteria.py.
"""
