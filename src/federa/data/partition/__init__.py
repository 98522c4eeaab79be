"""Partitioners: split a dataset's indices between clients, one scheme per module."""

from federa.data.partition.dirichlet import partition_dirichlet
from federa.data.partition.iid import partition_iid

__all__ = ["partition_dirichlet", "partition_iid"]
