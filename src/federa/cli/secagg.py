"""`--secagg`: aggregate each round's training results with SecAgg+ secure aggregation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.cli.config import RunConfig
from federa.cli.strategies import cohort_size
from federa.strategy.base import Strategy

if TYPE_CHECKING:
    from federa.privacy.secagg import SecAggPlus

DEFAULT_CLIP = 1.0


def build_secure_aggregation(cfg: RunConfig, strategy: Strategy) -> SecAggPlus | None:
    """Return the SecAggPlus that `cfg` asks for, checked against its strategy and cohort.

    Raises:
        ConfigError: the strategy needs individual updates, or the cohort `cfg` samples
            is too small for the degree and threshold.
    """
    if not cfg.secagg:
        return None
    from federa.privacy.secagg import SecAggPlus  # needs the cryptography package

    secagg = SecAggPlus(
        threshold=cfg.secagg_threshold,
        degree=cfg.secagg_degree,
        clip=cfg.secagg_clip if cfg.secagg_clip is not None else DEFAULT_CLIP,
    )
    secagg.check_strategy(strategy)
    assert cfg.num_clients is not None  # resolved by build_experiment
    secagg.check_cohort(cohort_size(cfg.num_clients, cfg.fraction_train, 1))
    return secagg


def describe_secagg(cfg: RunConfig) -> str:
    """Return the run header's words on secure aggregation ("" without --secagg)."""
    if not cfg.secagg:
        return ""
    assert cfg.num_clients is not None
    from federa.privacy.secagg import default_degree, default_threshold

    n = cohort_size(cfg.num_clients, cfg.fraction_train, 1)
    degree = cfg.secagg_degree if cfg.secagg_degree is not None else default_degree(n)
    threshold = cfg.secagg_threshold or default_threshold(degree)
    clip = cfg.secagg_clip if cfg.secagg_clip is not None else DEFAULT_CLIP
    return f", SecAgg+ (degree {degree}, threshold {threshold}, clip {clip:g})"
