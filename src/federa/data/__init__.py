"""Datasets, their readers (one per dataset) and partitioners (one per scheme)."""

from federa.data.calculator import CALCULATOR_CLASSES, load_calculator
from federa.data.cifar10 import load_cifar10
from federa.data.dataset import Dataset, DatasetSplit
from federa.data.describe import PartitionSummary, summarize_partition
from federa.data.digits import load_digits
from federa.data.emnist import EMNIST_SPLITS, load_emnist
from federa.data.femnist import load_femnist
from federa.data.mnist import load_mnist, read_idx
from federa.data.partition import (
    partition_dirichlet,
    partition_iid,
    partition_natural,
    partition_quantity,
    partition_shards,
)
from federa.data.symbols import SYMBOL_CHARS, load_symbols

__all__ = [
    "CALCULATOR_CLASSES",
    "EMNIST_SPLITS",
    "SYMBOL_CHARS",
    "Dataset",
    "DatasetSplit",
    "PartitionSummary",
    "load_calculator",
    "load_cifar10",
    "load_digits",
    "load_emnist",
    "load_femnist",
    "load_mnist",
    "load_symbols",
    "partition_dirichlet",
    "partition_iid",
    "partition_natural",
    "partition_quantity",
    "partition_shards",
    "read_idx",
    "summarize_partition",
]
