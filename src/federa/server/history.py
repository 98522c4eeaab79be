"""`History`: what happened in a run, round by round, with a JSON round-trip."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from federa.core.arrays import Arrays
from federa.core.messages import Failure
from federa.errors import FederaError

FORMAT_VERSION = 1


@dataclass(slots=True, kw_only=True)
class RoundRecord:
    """One round's outcome.

    Timings are wall-clock seconds and do not take part in equality: two runs with the
    same seed are equal when everything they computed is equal.
    """

    round_num: int
    num_sampled: int = 0
    num_results: int = 0
    failures: list[Failure] = field(default_factory=list)
    is_accepted: bool = False
    train_metrics: dict[str, float] = field(default_factory=dict)
    num_eval_sampled: int = 0
    num_eval_results: int = 0
    eval_loss: float | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    centralized_loss: float | None = None
    centralized_metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def train_loss(self) -> float | None:
        """Return the example-weighted mean of the clients' reported "loss" metric."""
        return self.train_metrics.get("loss")


@dataclass(slots=True, kw_only=True)
class History:
    """Per-round metrics of a run, plus the final arrays (not part of the JSON form).

    `initial` holds the centralized evaluation of the starting arrays as round 0 when
    the strategy evaluates centrally.
    """

    rounds: list[RoundRecord] = field(default_factory=list)
    initial: RoundRecord | None = None
    arrays: Arrays | None = field(default=None, compare=False, repr=False)

    def records(self) -> list[RoundRecord]:
        """Return round 0 (if any) followed by every round."""
        return ([self.initial] if self.initial is not None else []) + self.rounds

    def series(self, name: str) -> list[tuple[int, float]]:
        """Return (round_num, value) for a metric over the run.

        `name` is "train_loss", "eval_loss", "centralized_loss", or "<kind>_<metric>"
        with kind in {train, eval, centralized}, e.g. "centralized_accuracy".
        """
        out: list[tuple[int, float]] = []
        for rec in self.records():
            value = _lookup(rec, name)
            if value is not None:
                out.append((rec.round_num, value))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN and Inf become null)."""
        cleaned: dict[str, Any] = _clean(
            {
                "format_version": FORMAT_VERSION,
                "initial": asdict(self.initial) if self.initial is not None else None,
                "rounds": [asdict(r) for r in self.rounds],
            }
        )
        return cleaned

    def to_json(self, path: str | Path | None = None) -> str:
        """Return the JSON text; also write it to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Rebuild a History from `to_dict` output."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise FederaError(
                f"history format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            initial = data.get("initial")
            return cls(
                rounds=[_record(r) for r in data["rounds"]],
                initial=_record(initial) if initial is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FederaError(f"history JSON is malformed: {exc!r}") from None

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> History:
        """Parse JSON text, or read it from a path."""
        if isinstance(text_or_path, Path) or not text_or_path.lstrip().startswith("{"):
            path = Path(text_or_path)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise FederaError(f"cannot read history {path}: {exc.strerror}") from None
        else:
            text = text_or_path
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FederaError(f"history is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _lookup(rec: RoundRecord, name: str) -> float | None:
    direct = {
        "train_loss": rec.train_loss,
        "eval_loss": rec.eval_loss,
        "centralized_loss": rec.centralized_loss,
    }
    if name in direct:
        return direct[name]
    for kind, metrics in (
        ("train_", rec.train_metrics),
        ("eval_", rec.eval_metrics),
        ("centralized_", rec.centralized_metrics),
    ):
        if name.startswith(kind):
            return metrics.get(name[len(kind) :])
    return None


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {str(k): (math.nan if v is None else float(v)) for k, v in d.items()}


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def _record(d: dict[str, Any]) -> RoundRecord:
    return RoundRecord(
        round_num=int(d["round_num"]),
        num_sampled=int(d["num_sampled"]),
        num_results=int(d["num_results"]),
        failures=[Failure(**f) for f in d["failures"]],
        is_accepted=bool(d["is_accepted"]),
        train_metrics=_floats(d["train_metrics"]),
        num_eval_sampled=int(d["num_eval_sampled"]),
        num_eval_results=int(d["num_eval_results"]),
        eval_loss=_opt(d["eval_loss"]),
        eval_metrics=_floats(d["eval_metrics"]),
        centralized_loss=_opt(d["centralized_loss"]),
        centralized_metrics=_floats(d["centralized_metrics"]),
        timings=_floats(d.get("timings", {})),
    )
