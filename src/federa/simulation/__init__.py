"""Simulation of many clients on one machine."""

from federa.simulation.executors import ProcessExecutor, SerialExecutor
from federa.simulation.simulate import make_executor, simulate

__all__ = ["ProcessExecutor", "SerialExecutor", "make_executor", "simulate"]
