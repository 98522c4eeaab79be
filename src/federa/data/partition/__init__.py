"""Partitioners: split a dataset's indices between clients, one scheme per module."""

from federa.data.partition.dirichlet import partition_dirichlet
from federa.data.partition.iid import partition_iid
from federa.data.partition.natural import partition_natural
from federa.data.partition.quantity import partition_quantity
from federa.data.partition.shards import partition_shards

__all__ = [
    "partition_dirichlet",
    "partition_iid",
    "partition_natural",
    "partition_quantity",
    "partition_shards",
]
