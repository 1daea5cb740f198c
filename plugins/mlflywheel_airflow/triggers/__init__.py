"""Triggers: deferrable waits, run by the triggerer (serializable, no side effects, one event)."""

from mlflywheel_airflow.triggers.rollout import BakeTrigger

__all__ = ["BakeTrigger"]
