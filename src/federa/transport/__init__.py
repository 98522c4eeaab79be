"""Transports: how tasks reach clients (in-process, gRPC, Ray)."""

from federa.transport.base import Transport
from federa.transport.inprocess import Executor, InProcessTransport

__all__ = ["Executor", "InProcessTransport", "Transport"]
