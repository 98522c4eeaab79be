"""Client side: the `Client` contract, the task runner and the local-DP wrapper."""

from federa.client.base import Client
from federa.client.local_dp import LocalDPClient
from federa.client.runner import ClientFn, run_client_task, run_task

__all__ = ["Client", "ClientFn", "LocalDPClient", "run_client_task", "run_task"]
