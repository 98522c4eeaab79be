import json
import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federa.core.arrays import Arrays
from federa.errors import FederaError
from federa.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from federa.server.history import History, RoundRecord


def make_checkpoint(round_num: int) -> Checkpoint:
    arrays = Arrays(
        {
            "z.weight": np.full((3, 2), round_num, dtype=np.float32),
            "a.bias": np.arange(4, dtype=np.int64) + round_num,
            "step": np.array(round_num, dtype=np.int64),
        }
    )
    history = History(
        initial=RoundRecord(round_num=0, centralized_loss=2.5),
        rounds=[
            RoundRecord(round_num=r, is_accepted=True, train_metrics={"loss": 1.0 / r})
            for r in range(1, round_num + 1)
        ],
    )
    state = {
        "lr": 0.01,
        "t": round_num,
        "name": "adam",
        "is_warm": True,
        "missing": None,
        "best_loss": float("inf"),
        "betas": [0.9, 0.999],
        "m": Arrays({"layer2.weight": np.ones((2, 2), np.float16), "layer1.weight": np.zeros(3)}),
        "v": {
            "layer1.weight": np.linspace(0, 1, 5, dtype=np.float64) * round_num,
            "nested": {"count": np.int32(7), "flags": np.array([True, False])},
        },
        "history": [{"round": 1, "norm": np.array(0.5, dtype=np.float32)}],
    }
    return Checkpoint(
        round_num=round_num,
        arrays=arrays,
        strategy_state=state,
        history=history,
        seed=42,
        run_id="run-abc",
        config={"num_rounds": 10, "strategy": {"name": "fedadam", "eta": 0.1}},
    )


def assert_same(a: Any, b: Any) -> None:
    """Assert exact equality, including types, dtypes, shapes and Arrays order."""
    assert type(a) is type(b)
    if isinstance(a, Arrays):
        assert a.spec() == b.spec()
        assert a.equals(b)
    elif isinstance(a, np.ndarray | np.generic):
        assert a.dtype == b.dtype
        assert np.shape(a) == np.shape(b)
        assert np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def assert_checkpoints_equal(a: Checkpoint, b: Checkpoint) -> None:
    assert (a.round_num, a.seed, a.run_id, a.config) == (b.round_num, b.seed, b.run_id, b.config)
    assert_same(a.arrays, b.arrays)
    assert_same(a.strategy_state, b.strategy_state)
    assert a.history == b.history


def round_folders(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("round-"))


def test_checkpoint_round_trips_arrays_history_and_strategy_state_exactly(tmp_path: Path) -> None:
    original = make_checkpoint(3)
    folder = save_checkpoint(tmp_path, original)
    loaded = load_checkpoint(tmp_path)
    assert folder == tmp_path / "round-000003"
    assert loaded is not None
    assert_checkpoints_equal(loaded, original)
    assert list(loaded.arrays) == ["z.weight", "a.bias", "step"]
    assert loaded.arrays["step"].shape == ()
    assert loaded.history.rounds[-1].train_metrics == {"loss": pytest.approx(1 / 3)}


def test_checkpoint_files_hold_no_pickle(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path, make_checkpoint(1))
    assert sorted(p.name for p in folder.iterdir()) == [
        "arrays.npz",
        "history.json",
        "meta.json",
        "strategy.json",
        "strategy.npz",
    ]
    for name in ("arrays.npz", "strategy.npz"):
        with np.load(folder / name, allow_pickle=False) as npz:
            assert all(npz[key].dtype != object for key in npz.files)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["array_names"] == ["z.weight", "a.bias", "step"]
    assert set(meta["sha256"]) == {"arrays.npz", "history.json", "strategy.json", "strategy.npz"}


def test_load_checkpoint_of_missing_or_empty_directory_returns_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "nope") is None
    assert load_checkpoint(tmp_path) is None


def test_load_checkpoint_of_a_file_raises_federa_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(FederaError, match=r"cannot read checkpoint directory .*file"):
        load_checkpoint(path)
    with pytest.raises(FederaError, match=r"cannot write checkpoint to .*file"):
        save_checkpoint(path / "sub", make_checkpoint(1))


def test_save_keeps_only_the_newest_rounds(tmp_path: Path) -> None:
    for r in range(1, 6):
        save_checkpoint(tmp_path, make_checkpoint(r), keep=2)
    assert round_folders(tmp_path) == ["round-000004", "round-000005"]
    assert (tmp_path / "LATEST").read_text().strip() == "round-000005"
    save_checkpoint(tmp_path, make_checkpoint(6), keep=1)
    assert round_folders(tmp_path) == ["round-000006"]


def test_load_without_latest_uses_newest_complete_folder(tmp_path: Path) -> None:
    for r in range(1, 4):
        save_checkpoint(tmp_path, make_checkpoint(r), keep=3)
    (tmp_path / "LATEST").unlink()
    incomplete = tmp_path / "round-000009"
    incomplete.mkdir()
    (incomplete / "arrays.npz").write_bytes(b"partial")
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.round_num == 3


def test_latest_naming_a_missing_folder_falls_back_to_newest_folder(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, make_checkpoint(1))
    save_checkpoint(tmp_path, make_checkpoint(2))
    (tmp_path / "LATEST").write_text("round-000007\n")
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.round_num == 2


def test_half_written_tmp_folder_is_ignored_and_cleaned_by_next_save(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, make_checkpoint(2))
    crashed = tmp_path / ".round-000003.tmp-999999"
    crashed.mkdir()
    (crashed / "arrays.npz").write_bytes(b"half")
    (crashed / "meta.json").write_text("{}")
    (tmp_path / ".LATEST.tmp-999999").write_text("round-000003")
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.round_num == 2
    save_checkpoint(tmp_path, make_checkpoint(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "round-000002", "round-000003"]


def test_corrupt_arrays_in_newest_folder_falls_back_to_previous(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, make_checkpoint(1))
    newest = save_checkpoint(tmp_path, make_checkpoint(2))
    data = bytearray((newest / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (newest / "arrays.npz").write_bytes(bytes(data))
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert_checkpoints_equal(loaded, make_checkpoint(1))


def test_all_corrupt_folders_raise_federa_error_naming_directory(tmp_path: Path) -> None:
    for r in (1, 2):
        folder = save_checkpoint(tmp_path, make_checkpoint(r))
        (folder / "strategy.json").write_text("{}")
    with pytest.raises(FederaError, match=f"checkpoint in {tmp_path} is corrupt.*sha256"):
        load_checkpoint(tmp_path)


def test_checkpoint_from_a_newer_format_asks_to_upgrade(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path, make_checkpoint(1))
    meta = json.loads((folder / "meta.json").read_text())
    meta["format_version"] = 99
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FederaError, match=r"format_version 99.*upgrade federa"):
        load_checkpoint(tmp_path)


def test_save_after_load_continues_numbering(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, make_checkpoint(1))
    save_checkpoint(tmp_path, make_checkpoint(2))
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    save_checkpoint(tmp_path, make_checkpoint(loaded.round_num + 1))
    again = load_checkpoint(tmp_path)
    assert again is not None
    assert again.round_num == 3
    assert round_folders(tmp_path) == ["round-000002", "round-000003"]


def test_resaving_a_round_replaces_it_and_drops_newer_folders(tmp_path: Path) -> None:
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, make_checkpoint(r), keep=3)
    save_checkpoint(tmp_path, replace(make_checkpoint(2), run_id="second"), keep=3)
    assert round_folders(tmp_path) == ["round-000001", "round-000002"]
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    assert loaded.run_id == "second"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"shape": (2, 3)}, "at shape is a tuple"),
        ({"m": {1: 0.5}}, "at m has a non-string key"),
        ({"m": {"__ndarray__": "v0"}}, "reserved key"),
        ({"m": [np.array([object()])]}, r"at m\[0\] has an object array"),
    ],
)
def test_unsupported_strategy_state_raises_and_writes_nothing(
    tmp_path: Path, state: dict[str, Any], message: str
) -> None:
    bad = replace(make_checkpoint(1), strategy_state=state)
    with pytest.raises(FederaError, match=message):
        save_checkpoint(tmp_path / "ckpt", bad)
    assert not (tmp_path / "ckpt").exists()


def test_keep_below_one_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FederaError, match="keep must be >= 1"):
        save_checkpoint(tmp_path, make_checkpoint(1), keep=0)


CHILD = """
import sys
import numpy as np
from federa.core.arrays import Arrays
from federa.server.checkpoint import Checkpoint, save_checkpoint
from federa.server.history import History, RoundRecord

for r in range(1, 1_000_000):
    save_checkpoint(sys.argv[1], Checkpoint(
        round_num=r,
        arrays=Arrays({"w": np.full(20_000, r, dtype=np.float64)}),
        strategy_state={"t": r, "m": np.full(500, r, dtype=np.int32)},
        history=History(rounds=[RoundRecord(round_num=i) for i in range(1, r + 1)]),
        seed=0, run_id="crash", config={},
    ))
    print(r, flush=True)
"""


def test_killed_writer_leaves_last_fully_saved_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(1234)
    dirs = [tmp_path / f"run{i}" for i in range(5)]
    src = str(Path(__file__).parents[2] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(d)], stdout=subprocess.PIPE, text=True, env=env
        )
        for d in dirs
    ]
    try:
        for proc, directory in zip(procs, dirs, strict=True):
            assert proc.stdout is not None
            first = proc.stdout.readline()  # at least one save has completed
            assert first.strip() == "1", "child failed before its first save"
            time.sleep(rng.uniform(0.0, 0.15))  # land anywhere in a later save
            proc.kill()
            rest = proc.stdout.read()  # not communicate(): it would skip readline's buffer
            proc.wait(timeout=10)
            last_saved = int((first + rest).split()[-1])
            loaded = load_checkpoint(directory)
            assert loaded is not None
            # The save after the last printed one may have finished just before the kill.
            assert loaded.round_num in (last_saved, last_saved + 1)
            n = loaded.round_num
            assert np.all(loaded.arrays["w"] == n)
            assert loaded.strategy_state["t"] == n
            assert np.all(loaded.strategy_state["m"] == n)
            assert [rec.round_num for rec in loaded.history.rounds] == list(range(1, n + 1))
            save_checkpoint(directory, make_checkpoint(n + 1))
            names = sorted(p.name for p in directory.iterdir())
            assert names == ["LATEST", f"round-{n:06d}", f"round-{n + 1:06d}"]
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
