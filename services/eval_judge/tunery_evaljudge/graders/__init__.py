"""Graders: functions from (model output, reference) to a verdict."""
