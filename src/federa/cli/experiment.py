"""Turn a `RunConfig` into data, clients, a model and a strategy for `simulate`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from federa.cli.config import DEFAULT_NUM_CLIENTS, RunConfig
from federa.cli.privacy import resolve_dp, wrap_clients, wrap_strategy
from federa.cli.strategies import build_strategy
from federa.client.runner import ClientFn
from federa.core.arrays import Arrays
from federa.data import (
    DatasetSplit,
    load_calculator,
    load_cifar10,
    load_digits,
    load_emnist,
    load_femnist,
    load_mnist,
    partition_dirichlet,
    partition_iid,
    partition_natural,
    partition_quantity,
    partition_shards,
)
from federa.errors import ConfigError
from federa.simulation.attacks import Attack, choose_attackers, with_attack
from federa.strategy.base import Strategy
from federa.torch.arrays import module_to_arrays
from federa.torch.client import ModelFn, TorchClient, make_evaluate_fn
from federa.torch.models import build_model
from federa.torch.train import TrainConfig

Parts = tuple[npt.NDArray[np.int64], ...]


@dataclass(frozen=True, slots=True)
class ClientData:
    """The data every client is cut from and the cuts; pickled once per worker process.

    `eval_partitions` holds each client's own test examples where the dataset has them
    (FEMNIST writers); otherwise a client evaluates on its training partition.
    """

    model_fn: ModelFn
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    partitions: Parts
    train_config: TrainConfig
    test_x: npt.NDArray[np.float32] | None = None
    test_y: npt.NDArray[np.int64] | None = None
    eval_partitions: Parts | None = None


def make_client(data: ClientData, cid: int) -> TorchClient:
    """Build client `cid` over its partition of the training set."""
    idx = data.partitions[cid]
    eval_data = None
    if data.eval_partitions is not None and data.test_x is not None and data.test_y is not None:
        eval_idx = data.eval_partitions[cid]
        eval_data = (data.test_x[eval_idx], data.test_y[eval_idx])
    return TorchClient(
        data.model_fn, (data.x[idx], data.y[idx]), eval_data, train_config=data.train_config
    )


@dataclass(frozen=True, slots=True)
class Experiment:
    """What `simulate` needs, built from a RunConfig (with num_clients resolved)."""

    config: RunConfig
    split: DatasetSplit
    client_fn: ClientFn
    strategy: Strategy
    initial: Arrays
    partitions: Parts


def _require_dir(cfg: RunConfig) -> Path:
    assert cfg.data_dir is not None  # validate() requires it for every dataset but digits
    return Path(cfg.data_dir)


def _calculator(root: Path) -> DatasetSplit:
    mnist, symbols = root / "mnist", root / "math_symbols"
    if not mnist.is_dir() or not symbols.exists():
        raise ConfigError(
            f"--data-dir: {root} must hold mnist/ (MNIST IDX files) and math_symbols/ "
            "(the operator symbols zip or folder)"
        )
    zips = sorted(symbols.glob("*.zip")) if symbols.is_dir() else []
    # Framed like MNIST, as the handwriting calculator (federa predict) feeds its model.
    return load_calculator(mnist, zips[0] if len(zips) == 1 else symbols, mnist_framing=True)


def load_dataset(cfg: RunConfig) -> DatasetSplit:
    """Load the dataset `cfg` names."""
    if cfg.dataset == "digits":
        return load_digits()
    root = _require_dir(cfg)
    loaders = {
        "mnist": lambda: load_mnist(root),
        "emnist": lambda: load_emnist(root, split=cfg.emnist_split),
        "femnist": lambda: load_femnist(root),
        "cifar10": lambda: load_cifar10(root),
        "calculator": lambda: _calculator(root),
    }
    return loaders[cfg.dataset]()


def resolve_num_clients(cfg: RunConfig, split: DatasetSplit) -> int:
    """Return the number of clients: as given, else one per writer (natural) or the default."""
    if cfg.num_clients is not None:
        return cfg.num_clients
    if cfg.partition_name == "natural":
        groups = split.train.groups
        return 0 if groups is None else len(np.unique(groups))
    return DEFAULT_NUM_CLIENTS


def partition(cfg: RunConfig, split: DatasetSplit, num_clients: int) -> Parts:
    """Split the training set between `num_clients` clients with the configured scheme."""
    labels, seed = split.train.y, cfg.seed
    scheme = cfg.partition_name
    if scheme == "iid":
        return tuple(partition_iid(len(labels), num_clients, seed=seed))
    if scheme == "shards":
        return tuple(partition_shards(labels, num_clients, cfg.shards_per_client, seed=seed))
    if scheme == "quantity":
        return tuple(partition_quantity(len(labels), num_clients, sigma=cfg.sigma, seed=seed))
    if scheme == "natural":
        if split.train.groups is None:
            raise ConfigError(f"--partition natural: {cfg.dataset} has no natural clients")
        return tuple(partition_natural(split.train.groups, num_clients))
    return tuple(
        partition_dirichlet(
            labels, num_clients, alpha=cfg.alpha, seed=seed, min_size=cfg.min_partition_size
        )
    )


def own_test_splits(split: DatasetSplit, parts: Parts) -> Parts | None:
    """Return each natural client's own test examples (same group as its training data)."""
    train_groups, test_groups = split.train.groups, split.test.groups
    if train_groups is None or test_groups is None:
        return None
    out = []
    for idx in parts:
        members = np.unique(train_groups[idx])
        out.append(np.flatnonzero(np.isin(test_groups, members)).astype(np.int64))
    return tuple(out)


def build_experiment(cfg: RunConfig, split: DatasetSplit | None = None) -> Experiment:
    """Load data, partition it, and build the model, clients and FedAvg strategy."""
    split = split if split is not None else load_dataset(cfg)
    num_clients = resolve_num_clients(cfg, split)
    if num_clients > len(split.train):
        raise ConfigError(
            f"--num-clients {num_clients} is more than the {len(split.train)} training "
            f"examples of {cfg.dataset}; use at most {len(split.train)}"
        )
    cfg = resolve_dp(replace(cfg, num_clients=num_clients))
    model_fn: ModelFn = functools.partial(
        build_model, cfg.model_name, split.in_shape, split.num_classes
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        initial = module_to_arrays(model_fn())
    parts = partition(cfg, split, num_clients)
    eval_parts = own_test_splits(split, parts) if cfg.partition_name == "natural" else None
    train_config = TrainConfig(
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer="adam" if cfg.optimizer == "adam" else "sgd",
        momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0,
        weight_decay=cfg.weight_decay,
        augment=bool(cfg.augment),
    )
    data = ClientData(
        model_fn,
        split.train.x,
        split.train.y,
        parts,
        train_config,
        test_x=split.test.x if eval_parts is not None else None,
        test_y=split.test.y if eval_parts is not None else None,
        eval_partitions=eval_parts,
    )
    strategy = build_strategy(
        cfg,
        num_clients,
        fraction_train=cfg.fraction_train,
        min_train_clients=1,
        fraction_evaluate=cfg.evaluate_fraction,
        min_evaluate_clients=1,
        evaluate_fn=make_evaluate_fn(model_fn, (split.test.x, split.test.y)),
    )
    strategy = wrap_strategy(cfg, strategy)
    client_fn: ClientFn = wrap_clients(cfg, functools.partial(make_client, data))
    if cfg.attack is not None:
        attackers = choose_attackers(num_clients, cfg.attackers, cfg.seed)
        client_fn = with_attack(
            client_fn, Attack(name=cfg.attack, scale=cfg.attack_scale, attackers=attackers)
        )
    return Experiment(
        config=cfg,
        split=split,
        client_fn=client_fn,
        strategy=strategy,
        initial=initial,
        partitions=parts,
    )
