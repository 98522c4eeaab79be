"""Client side: the `Client` contract and the task runner."""

from federa.client.base import Client
from federa.client.runner import ClientFn, run_client_task, run_task

__all__ = ["Client", "ClientFn", "run_client_task", "run_task"]
