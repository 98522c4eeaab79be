"""Simulation of many clients on one machine."""

from federa.simulation.executors import ProcessExecutor, SerialExecutor
from federa.simulation.heterogeneity import ClientProfile, Heterogeneity, HeterogeneousTransport
from federa.simulation.ray import RayExecutor
from federa.simulation.simulate import make_executor, simulate

__all__ = [
    "ClientProfile",
    "Heterogeneity",
    "HeterogeneousTransport",
    "ProcessExecutor",
    "RayExecutor",
    "SerialExecutor",
    "make_executor",
    "simulate",
]
