from pathlib import Path

import numpy as np
import pytest

from federa.cli.config import RunConfig, validate
from federa.cli.experiment import build_experiment, own_test_splits
from federa.cli.main import main
from federa.data import Dataset, DatasetSplit

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (SHARED / "mnist").is_dir(), reason="../shared/data/mnist not present (real MNIST files)"
)
needs_femnist = pytest.mark.skipif(
    not (SHARED / "femnist").is_dir(),
    reason="../shared/data/femnist not present (real FEMNIST files)",
)


def test_describe_prints_client_statistics_and_writes_a_heat_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "labels.png"
    args = ["data", "describe", "--partition", "shards", "--num-clients", "20", "--plot", str(plot)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "digits: 1437 train / 360 test examples, 10 classes" in out
    assert "partition shards over 20 clients" in out
    assert "examples" in out
    assert "classes" in out
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_describe_rejects_natural_partition_without_writers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["data", "describe", "--partition", "natural"]) == 2
    assert "--partition natural needs a dataset with natural clients" in capsys.readouterr().err


def test_natural_clients_evaluate_on_their_own_test_examples() -> None:
    x = np.zeros((6, 1, 4, 4), np.float32)
    train = Dataset(
        x=x, y=np.arange(6) % 2, num_classes=2, name="t", groups=np.array([0, 0, 1, 1, 2, 2])
    )
    test = Dataset(
        x=x[:3], y=np.array([0, 1, 0]), num_classes=2, name="s", groups=np.array([2, 0, 2])
    )
    parts = (np.array([0, 1]), np.array([2, 3]), np.array([4, 5]))
    own = own_test_splits(DatasetSplit(train=train, test=test), parts)
    assert own is not None
    assert [p.tolist() for p in own] == [[1], [], [0, 2]]


@needs_mnist
def test_mnist_shards_give_each_client_at_most_two_labels() -> None:
    cfg = validate(
        RunConfig(
            dataset="mnist",
            data_dir=str(SHARED / "mnist"),
            partition="shards",
            num_clients=100,
            model="mnist_2nn",
        )
    )
    experiment = build_experiment(cfg)
    labels = experiment.split.train.y
    assert len(experiment.partitions) == 100
    assert all(560 <= len(p) <= 680 for p in experiment.partitions)
    assert max(len(np.unique(labels[p])) for p in experiment.partitions) <= 2


@needs_femnist
@pytest.mark.slow
def test_femnist_run_trains_the_leaf_cnn_on_writers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = SHARED / "femnist" / "slz-ai__leaf-torch"
    out = tmp_path / "run"
    args = ["run", "--dataset", "femnist", "--data-dir", str(folder), "--rounds", "2"]
    args += ["--fraction-train", "0.05", "--out", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "femnist_cnn, 105 clients (natural" in stdout
    from federa import History

    history = History.from_json(out / "history.json")
    last = history.rounds[-1]
    assert last.num_sampled == 6
    assert last.num_eval_sampled == 105  # every writer, on its own test examples
    assert last.num_eval_results == 105
    assert last.eval_loss is not None
    assert 0 < last.centralized_metrics["accuracy"] <= 1
