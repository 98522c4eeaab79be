"""Turn a `RunConfig` into data, clients, a model and a strategy for `simulate`."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from federa.cli.config import RunConfig
from federa.core.arrays import Arrays
from federa.data import DatasetSplit, load_digits, load_mnist, partition_dirichlet, partition_iid
from federa.errors import ConfigError
from federa.strategy.fedavg import FedAvg
from federa.torch.arrays import module_to_arrays
from federa.torch.client import ModelFn, TorchClient, make_evaluate_fn
from federa.torch.models import build_model
from federa.torch.train import TrainConfig


@dataclass(frozen=True, slots=True)
class ClientData:
    """The training set and its partition; pickled once per worker process."""

    model_fn: ModelFn
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    partitions: tuple[npt.NDArray[np.int64], ...]
    train_config: TrainConfig


def make_client(data: ClientData, cid: int) -> TorchClient:
    """Build client `cid` over its partition of the training set."""
    idx = data.partitions[cid]
    return TorchClient(data.model_fn, (data.x[idx], data.y[idx]), train_config=data.train_config)


@dataclass(frozen=True, slots=True)
class Experiment:
    """What `simulate` needs, built from a RunConfig."""

    split: DatasetSplit
    client_fn: functools.partial[TorchClient]
    strategy: FedAvg
    initial: Arrays
    partitions: tuple[npt.NDArray[np.int64], ...]


def load_dataset(cfg: RunConfig) -> DatasetSplit:
    """Load the dataset `cfg` names."""
    if cfg.dataset == "mnist":
        assert cfg.data_dir is not None  # validate() requires it
        return load_mnist(cfg.data_dir)
    return load_digits()


def partition(cfg: RunConfig, labels: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], ...]:
    """Split the training set between `cfg.num_clients` clients."""
    if cfg.partition == "iid":
        return tuple(partition_iid(len(labels), cfg.num_clients, seed=cfg.seed))
    return tuple(partition_dirichlet(labels, cfg.num_clients, alpha=cfg.alpha, seed=cfg.seed))


def build_experiment(cfg: RunConfig, split: DatasetSplit | None = None) -> Experiment:
    """Load data, partition it, and build the model, clients and FedAvg strategy."""
    split = split if split is not None else load_dataset(cfg)
    if cfg.num_clients > len(split.train):
        raise ConfigError(
            f"--num-clients {cfg.num_clients} is more than the {len(split.train)} training "
            f"examples of {cfg.dataset}; use at most {len(split.train)}"
        )
    model_fn: ModelFn = functools.partial(
        build_model, cfg.model_name, split.in_shape, split.num_classes
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        initial = module_to_arrays(model_fn())
    parts = partition(cfg, split.train.y)
    train_config = TrainConfig(
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer="adam" if cfg.optimizer == "adam" else "sgd",
        momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0,
        weight_decay=cfg.weight_decay,
    )
    data = ClientData(model_fn, split.train.x, split.train.y, parts, train_config)
    strategy = FedAvg(
        fraction_train=cfg.fraction_train,
        min_train_clients=1,
        fraction_evaluate=cfg.fraction_evaluate,
        min_evaluate_clients=1,
        evaluate_fn=make_evaluate_fn(model_fn, (split.test.x, split.test.y)),
    )
    return Experiment(
        split=split,
        client_fn=functools.partial(make_client, data),
        strategy=strategy,
        initial=initial,
        partitions=parts,
    )
