"""Broker: the test suite's name for :mod:`simulator.broker` (kept while tests migrate)."""

from simulator.broker import Mosquitto, free_port

__all__ = ["Mosquitto", "free_port"]
