"""Triggers: deferrable waits, run by the triggerer (serializable, no side effects, one event)."""

from mlflywheel_airflow.triggers.deploy_canary import BakeTrigger

__all__ = ["BakeTrigger"]
