"""SecAgg+ through the one round loop: simulate(), serve() over gRPC, and the CLI."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import federa as fd
from federa.cli.main import main
from federa.client.secagg import SecAggPlusClient
from federa.errors import ConfigError
from federa.privacy.secagg import SecAggPlus
from federa.strategy import FedAdam, FedMedian, Krum
from tests.simulation.clients import LinearClient, linear_client

INITIAL = fd.Arrays({"w": np.zeros(3)})
CLIP = 4.0  # the linear clients' first updates reach about 2


def fedavg() -> fd.FedAvg:
    return fd.FedAvg(fraction_train=0.6, min_train_clients=3)


def simulate(secure: SecAggPlus | None, strategy: fd.Strategy | None = None) -> fd.History:
    return fd.simulate(
        linear_client,
        strategy or fedavg(),
        num_clients=8,
        num_rounds=3,
        initial=INITIAL,
        seed=5,
        secure_aggregation=secure,
    )


def test_simulated_fedavg_with_secagg_matches_plain_fedavg() -> None:
    plain = simulate(None)
    secure = simulate(SecAggPlus(clip=CLIP))
    assert plain.arrays is not None and secure.arrays is not None
    # Quantisation error per round: below n 2 clip / levels / sum(r) = 5 * 8 / 8.6e8 / 0.012
    # (r = num_examples / max_weight, about 25 / 10_000 per client), about 4e-6.
    np.testing.assert_allclose(secure.arrays["w"], plain.arrays["w"], atol=3 * 4e-6)
    for a, b in zip(plain.rounds, secure.rounds, strict=True):
        assert b.num_results == a.num_results == 5
        assert not b.failures
        assert b.train_metrics["loss"] == pytest.approx(a.train_metrics["loss"], rel=1e-5)


def test_secagg_composes_with_a_server_optimizer() -> None:
    plain = simulate(None, FedAdam(fraction_train=0.6, min_train_clients=3, server_lr=0.1))
    secure = simulate(
        SecAggPlus(clip=CLIP), FedAdam(fraction_train=0.6, min_train_clients=3, server_lr=0.1)
    )
    assert plain.arrays is not None and secure.arrays is not None
    np.testing.assert_allclose(secure.arrays["w"], plain.arrays["w"], atol=1e-5)


class Counting:
    """A client_fn that counts the clients it builds."""

    def __init__(self) -> None:
        self.built = 0

    def __call__(self, cid: int) -> fd.Client:
        self.built += 1
        return LinearClient(cid)


@pytest.mark.parametrize("strategy", [Krum(num_byzantine=0), FedMedian()])
def test_simulate_refuses_a_strategy_that_needs_individual_updates(strategy: fd.Strategy) -> None:
    client_fn = Counting()
    with pytest.raises(ConfigError, match=f"{type(strategy).__name__} needs every client's"):
        fd.simulate(
            client_fn,
            strategy,
            num_clients=8,
            num_rounds=1,
            initial=INITIAL,
            secure_aggregation=SecAggPlus(),
        )
    assert client_fn.built == 0  # refused before round 1


def test_grpc_deployment_with_secagg_gives_the_simulated_model() -> None:
    ports: list[int] = []
    ready = threading.Event()
    outcome: list[object] = []

    def on_ready(port: int) -> None:
        ports.append(port)
        ready.set()

    def run_server() -> None:
        try:
            outcome.append(
                fd.serve(
                    fedavg(),
                    address="127.0.0.1:0",
                    num_rounds=3,
                    initial=INITIAL,
                    seed=5,
                    min_clients=8,
                    round_timeout=60,
                    wait_timeout=60,
                    on_ready=on_ready,
                    secure_aggregation=SecAggPlus(clip=CLIP),
                )
            )
        except Exception as exc:  # surfaced by the assertion below
            outcome.append(exc)
            ready.set()

    server = threading.Thread(target=run_server, daemon=True)
    server.start()
    assert ready.wait(30) and ports, outcome
    clients = [
        threading.Thread(
            target=fd.connect,
            args=(SecAggPlusClient(LinearClient(cid)), f"127.0.0.1:{ports[0]}"),
            kwargs={"client_id": cid, "reconnect_timeout": 5},
            daemon=True,
        )
        for cid in range(8)
    ]
    for client in clients:
        client.start()
    server.join(120)
    for client in clients:
        client.join(30)
    [history] = outcome
    assert isinstance(history, fd.History), history
    simulated = simulate(SecAggPlus(clip=CLIP))
    assert history.arrays is not None and simulated.arrays is not None
    # The masks cancel exactly and the rounding is seeded per task: bit for bit.
    np.testing.assert_array_equal(history.arrays["w"], simulated.arrays["w"])
    assert [r.train_metrics for r in history.rounds] == [r.train_metrics for r in simulated.rounds]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_cli_secagg_options_need_secagg(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "run", "--secagg-threshold", "3")
    assert code == 2
    assert err.strip() == "federa: error: --secagg-threshold needs --secagg"


def test_cli_refuses_secagg_with_krum(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["run", "--secagg", "--strategy", "krum", "--num-byzantine", "0", "--rounds", "1"]
    code, err = run_cli(capsys, *args, "--out", str(tmp_path / "run"))
    assert code == 2
    assert err.startswith("federa: error: Krum needs every client's own update")
    assert len(err.strip().splitlines()) == 1


def test_cli_checks_the_threshold_against_the_cohort(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # 10 clients, fraction 0.5: cohorts of 5, so at most 4 neighbours.
    args = ["run", "--secagg", "--secagg-degree", "6", "--rounds", "1"]
    code, err = run_cli(capsys, *args, "--out", str(tmp_path / "run"))
    assert code == 2
    assert "--secagg-degree must be in [1, 4] for a round of 5 clients, got 6" in err


@pytest.mark.slow
def test_secagg_run_is_the_same_with_worker_processes() -> None:
    kwargs = {"num_clients": 8, "num_rounds": 2, "initial": INITIAL, "seed": 5}
    serial = fd.simulate(
        linear_client, fedavg(), secure_aggregation=SecAggPlus(clip=CLIP), **kwargs
    )
    pooled = fd.simulate(
        linear_client, fedavg(), secure_aggregation=SecAggPlus(clip=CLIP), executor=2, **kwargs
    )
    assert serial.arrays is not None and pooled.arrays is not None
    np.testing.assert_array_equal(serial.arrays["w"], pooled.arrays["w"])
