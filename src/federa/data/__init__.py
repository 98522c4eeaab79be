"""Datasets, their readers (one per dataset) and partitioners (one per scheme)."""

from federa.data.dataset import Dataset, DatasetSplit
from federa.data.digits import load_digits
from federa.data.mnist import load_mnist, read_idx
from federa.data.partition import partition_dirichlet, partition_iid

__all__ = [
    "Dataset",
    "DatasetSplit",
    "load_digits",
    "load_mnist",
    "partition_dirichlet",
    "partition_iid",
    "read_idx",
]
