"""`federa run` settings: one frozen dataclass, filled from a TOML file and flags."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from federa.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DATASETS: dict[str, str] = {
    "calculator": "MNIST digits + handwritten operators: --data-dir holds mnist/ and math_symbols/",
    "cifar10": "CIFAR-10 binary version (cifar-10-batches-bin) in --data-dir",
    "digits": "scikit-learn's bundled 8x8 handwritten digits (no download)",
    "emnist": "EMNIST gzip IDX files in --data-dir (choose --emnist-split)",
    "femnist": "FEMNIST in LEAF format: --data-dir holds train/ and test/ (one client per writer)",
    "mnist": "MNIST IDX files in --data-dir",
}
DEFAULT_MODELS: dict[str, str] = {
    "calculator": "symbol_cnn",
    "cifar10": "cifar10_cnn",
    "digits": "simple_cnn",
    "emnist": "femnist_cnn",
    "femnist": "femnist_cnn",
    "mnist": "mnist_cnn",
}
MODELS = ("cifar10_cnn", "femnist_cnn", "mnist_2nn", "mnist_cnn", "simple_cnn", "symbol_cnn")
PARTITIONS = ("dirichlet", "iid", "natural", "quantity", "shards")
NATURAL_DATASETS = ("femnist",)
EMNIST_SPLITS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")
OPTIMIZERS = ("adam", "sgd")
STRATEGY_NAMES = (
    "bulyan",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fednova",
    "fedprox",
    "fedyogi",
    "krum",
    "median",
    "multikrum",
    "qfedavg",
    "scaffold",
    "trimmedmean",
)
# The strategies' own parameters; each applies to some strategies only.
STRATEGY_PARAMETERS = (
    "server_lr",
    "server_momentum",
    "beta_1",
    "beta_2",
    "tau",
    "proximal_mu",
    "num_byzantine",
    "num_selected",
    "trim_beta",
    "q",
    "lipschitz",
)
ATTACK_NAMES = ("constant", "labelflip", "noise", "scaled", "signflip")
DP_MODES = ("central", "local")
ACCOUNTANT_NAMES = ("pld", "rdp")
# Settings that only mean something with --dp.
DP_PARAMETERS = (
    "noise_multiplier",
    "clip_norm",
    "adaptive_clip",
    "target_delta",
    "target_epsilon",
    "accountant",
)
# Settings that only mean something with --secagg.
SECAGG_PARAMETERS = ("secagg_threshold", "secagg_degree", "secagg_clip")
# Where clients run (--executor); unset means serial, or process with --workers N.
EXECUTORS = ("process", "ray", "serial", "vectorized")
DEFAULT_NUM_CLIENTS = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """Everything `federa run` needs; the defaults are the embedded digits run."""

    dataset: str = "digits"
    data_dir: str | None = None
    model: str | None = None
    emnist_split: str = "balanced"
    partition: str | None = None
    alpha: float = 0.5
    min_partition_size: int = 2
    shards_per_client: int = 2
    sigma: float = 1.0
    num_clients: int | None = None
    rounds: int = 20
    fraction_train: float = 0.5
    fraction_evaluate: float | None = None
    local_epochs: int = 2
    batch_size: int = 16
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool | None = None
    strategy: str = "fedavg"
    server_lr: float | None = None
    server_momentum: float | None = None
    beta_1: float | None = None
    beta_2: float | None = None
    tau: float | None = None
    proximal_mu: float | None = None
    num_byzantine: int | None = None
    num_selected: int | None = None
    trim_beta: float | None = None
    q: float | None = None
    lipschitz: float | None = None
    attack: str | None = None
    attackers: float = 0.0
    attack_scale: float = 10.0
    dp: str | None = None
    noise_multiplier: float | None = None
    clip_norm: float | None = None
    adaptive_clip: bool | None = None
    target_delta: float | None = None
    target_epsilon: float | None = None
    accountant: str | None = None
    secagg: bool | None = None
    secagg_threshold: int | None = None
    secagg_degree: int | None = None
    secagg_clip: float | None = None
    stragglers: float = 0.0
    partial_work: bool | None = None
    seed: int = 0
    workers: int = 0
    executor: str | None = None
    ray_address: str | None = None
    out: str | None = None

    @property
    def model_name(self) -> str:
        """Return the model to train: the chosen one, or the dataset's default."""
        return self.model or DEFAULT_MODELS[self.dataset]

    @property
    def executor_name(self) -> str:
        """Return where clients run: --executor, else ray, process or serial as implied.

        Ray with --ray-address, process with --workers N, serial otherwise.
        """
        if self.executor is not None:
            return self.executor
        if self.ray_address is not None:
            return "ray"
        return "process" if self.workers else "serial"

    @property
    def evaluate_fraction(self) -> float:
        """Return the fraction of clients that evaluate locally each round.

        Unless set, every writer of a natural partition evaluates on its own test
        examples, and no client evaluates otherwise.
        """
        if self.fraction_evaluate is not None:
            return self.fraction_evaluate
        return 1.0 if self.partition_name == "natural" else 0.0

    @property
    def partition_name(self) -> str:
        """Return the partition scheme: the chosen one, or natural for FEMNIST, else dirichlet."""
        if self.partition is not None:
            return self.partition
        return "natural" if self.dataset in NATURAL_DATASETS else "dirichlet"

    def to_toml_dict(self) -> dict[str, Any]:
        """Return the resolved settings (model filled in, unset paths and `out` left out)."""
        data = asdict(self)
        data["model"] = self.model_name
        data["partition"] = self.partition_name
        data["fraction_evaluate"] = self.evaluate_fraction
        data.pop("out")
        return {k: v for k, v in data.items() if v is not None}


FIELD_TYPES: dict[str, type] = {
    "dataset": str,
    "data_dir": str,
    "model": str,
    "emnist_split": str,
    "partition": str,
    "alpha": float,
    "min_partition_size": int,
    "shards_per_client": int,
    "sigma": float,
    "num_clients": int,
    "rounds": int,
    "fraction_train": float,
    "fraction_evaluate": float,
    "local_epochs": int,
    "batch_size": int,
    "lr": float,
    "optimizer": str,
    "momentum": float,
    "weight_decay": float,
    "augment": bool,
    "strategy": str,
    "server_lr": float,
    "server_momentum": float,
    "beta_1": float,
    "beta_2": float,
    "tau": float,
    "proximal_mu": float,
    "num_byzantine": int,
    "num_selected": int,
    "trim_beta": float,
    "q": float,
    "lipschitz": float,
    "attack": str,
    "attackers": float,
    "attack_scale": float,
    "dp": str,
    "noise_multiplier": float,
    "clip_norm": float,
    "adaptive_clip": bool,
    "target_delta": float,
    "target_epsilon": float,
    "accountant": str,
    "secagg": bool,
    "secagg_threshold": int,
    "secagg_degree": int,
    "secagg_clip": float,
    "stragglers": float,
    "partial_work": bool,
    "seed": int,
    "workers": int,
    "executor": str,
    "ray_address": str,
    "out": str,
}
assert set(FIELD_TYPES) == {f.name for f in fields(RunConfig)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = FIELD_TYPES[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind in (int, float, bool) and type(value) is kind:
        return value
    expected = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[kind]
    raise ConfigError(f"{name} in {source} must be {expected}, got {value!r}")


def read_toml(path: str | Path, option: str) -> dict[str, Any]:
    """Parse a TOML file, turning every problem into a ConfigError naming `option`."""
    p = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{option}: {p} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{option}: {p} is not valid TOML: {exc}") from None
    return data


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a run config TOML file into field values (keys may use - or _).

    A `[run]` table is accepted as well as top-level keys.
    """
    p = Path(path)
    raw = read_toml(p, "--config")
    table = raw.get("run", raw) if isinstance(raw.get("run"), dict) else raw
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in FIELD_TYPES:
            allowed = ", ".join(sorted(FIELD_TYPES))
            raise ConfigError(f"unknown key {key!r} in {p}; allowed keys: {allowed}")
        values[name] = _coerce(name, value, str(p))
    return values


def _choice(option: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{option}: unknown value {value!r}; choose one of: {', '.join(allowed)}")


def _at_least(option: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(f"{option} must be >= {low:g}, got {value:g}")


def validate(cfg: RunConfig) -> RunConfig:
    """Check every setting and return `cfg`; raise ConfigError naming the first bad one."""
    _choice("--dataset", cfg.dataset, sorted(DATASETS))
    if cfg.model is not None:
        _choice("--model", cfg.model, MODELS)
    _choice("--partition", cfg.partition_name, PARTITIONS)
    _choice("--emnist-split", cfg.emnist_split, EMNIST_SPLITS)
    if cfg.partition_name == "natural" and cfg.dataset not in NATURAL_DATASETS:
        raise ConfigError(
            f"--partition natural needs a dataset with natural clients "
            f"({', '.join(NATURAL_DATASETS)}); {cfg.dataset} has none, choose another partition"
        )
    _choice("--optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("--strategy", cfg.strategy, STRATEGY_NAMES)
    if cfg.attack is not None:
        _choice("--attack", cfg.attack, ATTACK_NAMES)
        if not 0.0 < cfg.attackers < 1.0:
            raise ConfigError(f"--attackers must be a fraction in (0, 1), got {cfg.attackers:g}")
    elif cfg.attackers:
        raise ConfigError("--attackers needs --attack")
    validate_dp(cfg)
    validate_secagg(cfg)
    validate_stragglers(cfg)
    for option, value in (("--fraction-train", cfg.fraction_train),):
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"{option} must be in (0, 1], got {value:g}")
    if not 0.0 <= cfg.evaluate_fraction <= 1.0:
        raise ConfigError(f"--fraction-evaluate must be in [0, 1], got {cfg.evaluate_fraction:g}")
    if not (cfg.alpha > 0 and math.isfinite(cfg.alpha)):
        raise ConfigError(f"--alpha must be a positive number, got {cfg.alpha:g}")
    if cfg.num_clients is not None:
        _at_least("--num-clients", cfg.num_clients, 1)
    if not (cfg.sigma > 0 and math.isfinite(cfg.sigma)):
        raise ConfigError(f"--sigma must be a positive number, got {cfg.sigma:g}")
    for name in ("rounds", "local_epochs", "batch_size", "shards_per_client"):
        _at_least(_flag(name), getattr(cfg, name), 1)
    _at_least("--min-partition-size", cfg.min_partition_size, 0)
    for name in ("seed", "workers", "weight_decay"):
        _at_least(_flag(name), getattr(cfg, name), 0)
    validate_executor(cfg)
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"--lr must be a positive number, got {cfg.lr:g}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise ConfigError(f"--momentum must be in [0, 1), got {cfg.momentum:g}")
    if cfg.dataset != "digits":
        if cfg.data_dir is None:
            raise ConfigError(f"--data-dir is required for --dataset {cfg.dataset}")
        if not Path(cfg.data_dir).is_dir():
            raise ConfigError(f"--data-dir: {cfg.data_dir} does not exist or is not a folder")
    return cfg


def _positive(option: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{option} must be a positive number, got {value:g}")


def validate_dp(cfg: RunConfig) -> None:
    """Check the differential-privacy settings (they need --dp; each mode needs its own)."""
    if cfg.dp is None:
        for name in DP_PARAMETERS:
            if getattr(cfg, name) not in (None, False):
                raise ConfigError(f"{_flag(name)} needs --dp central or --dp local")
        return
    _choice("--dp", cfg.dp, DP_MODES)
    if cfg.accountant is not None:
        _choice("--accountant", cfg.accountant, ACCOUNTANT_NAMES)
    if cfg.noise_multiplier is not None and not (
        cfg.noise_multiplier >= 0 and math.isfinite(cfg.noise_multiplier)
    ):
        raise ConfigError(f"--noise-multiplier must be a number >= 0, got {cfg.noise_multiplier:g}")
    _positive("--clip-norm", cfg.clip_norm)
    _positive("--target-epsilon", cfg.target_epsilon)
    if cfg.target_delta is not None and not 0.0 < cfg.target_delta < 1.0:
        raise ConfigError(f"--target-delta must be in (0, 1), got {cfg.target_delta:g}")
    if cfg.noise_multiplier is None and cfg.target_epsilon is None:
        raise ConfigError(
            f"--dp {cfg.dp} needs --noise-multiplier, or --target-epsilon to size the noise"
        )
    if cfg.adaptive_clip and cfg.dp != "central":
        raise ConfigError("--adaptive-clip applies to --dp central only")
    if cfg.clip_norm is None and not cfg.adaptive_clip:
        raise ConfigError(f"--dp {cfg.dp} needs --clip-norm (or --adaptive-clip with --dp central)")


def validate_secagg(cfg: RunConfig) -> None:
    """Check the secure-aggregation settings (they need --secagg)."""
    if not cfg.secagg:
        for name in SECAGG_PARAMETERS:
            if getattr(cfg, name) is not None:
                raise ConfigError(f"{_flag(name)} needs --secagg")
        return
    for name in ("secagg_threshold", "secagg_degree"):
        if getattr(cfg, name) is not None:
            _at_least(_flag(name), getattr(cfg, name), 1)
    _positive("--secagg-clip", cfg.secagg_clip)


def validate_stragglers(cfg: RunConfig) -> None:
    """Check --stragglers and --partial-work (simulated systems heterogeneity)."""
    if not 0.0 <= cfg.stragglers <= 1.0:
        raise ConfigError(f"--stragglers must be a fraction in [0, 1], got {cfg.stragglers:g}")
    if cfg.stragglers and cfg.local_epochs < 2:
        raise ConfigError(
            "--stragglers make clients do 1 to E-1 local epochs; set --local-epochs 2 or more"
        )
    if cfg.partial_work and not cfg.stragglers:
        raise ConfigError("--partial-work needs --stragglers (the fraction that straggles)")


def validate_executor(cfg: RunConfig) -> None:
    """Check --executor against --workers and --ray-address."""
    name = cfg.executor_name
    _choice("--executor", name, EXECUTORS)
    if cfg.ray_address is not None and name != "ray":
        raise ConfigError(f"--ray-address needs --executor ray, not --executor {name}")
    if name in ("serial", "vectorized") and cfg.workers:
        raise ConfigError(f"--workers needs --executor process or ray; {name} runs in this process")
    if name == "process" and not cfg.workers:
        raise ConfigError("--executor process needs --workers N (N >= 1 worker processes)")


def resolve(file_values: dict[str, Any], flag_values: dict[str, Any]) -> RunConfig:
    """Merge defaults < TOML file < flags (None flags are unset) and validate."""
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    return validate(replace(RunConfig(), **merged))
