"""SecAgg+: the secure sum equals the plain one, survives dropouts, detects tampering."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

import federa as fd
from federa.errors import AggregationError, ConfigError
from federa.privacy.secagg import AGGREGATE_ID, SecAggPlus, wire
from federa.strategy import FedAvg, FedMedian, Krum
from tests.privacy.secagg_harness import (
    Network,
    flip_byte,
    initial,
    make_clients,
    plain_mean,
    tolerance,
    train_tasks,
    with_array,
)

SIZE = 40


def run(
    n: int, network_options: dict[str, object] | None = None, **secagg_options: object
) -> tuple[SecAggPlus, Network, list[tuple[int, fd.TrainResult]], list[fd.Failure]]:
    clients = make_clients(n, SIZE)
    net = Network(dict(clients), **(network_options or {}))  # type: ignore[arg-type]
    secagg = SecAggPlus(**secagg_options)  # type: ignore[arg-type]
    results, failures = secagg.aggregate(train_tasks(range(n), initial(SIZE)), net.collect, seed=3)
    return secagg, net, results, failures


def assert_mean_of(
    n: int, secagg: SecAggPlus, results: list[tuple[int, fd.TrainResult]], ids: list[int]
) -> None:
    """Assert the one result is the weighted mean of `ids`' plain results."""
    clients = make_clients(n, SIZE)
    expected = plain_mean(clients, ids, initial(SIZE))
    [(cid, got)] = results
    assert cid == AGGREGATE_ID
    np.testing.assert_allclose(
        got.arrays["w"], expected.arrays["w"], rtol=0, atol=tolerance(secagg, clients, ids, n)
    )
    assert got.num_examples == expected.num_examples
    assert got.metrics["loss"] == pytest.approx(expected.metrics["loss"], rel=1e-9)


@pytest.mark.parametrize("n", [3, 10, pytest.param(100, marks=pytest.mark.slow)])
def test_secure_sum_equals_the_plain_weighted_mean(n: int) -> None:
    secagg, net, results, failures = run(n)
    assert not failures
    assert_mean_of(n, secagg, results, list(range(n)))
    assert net.stages_sent() == list(wire.STAGES)


def test_fedavg_of_the_secure_result_is_the_secure_mean() -> None:
    _, _, results, _ = run(5)
    ctx = fd.RoundContext(round_num=1, rng=np.random.default_rng(0))
    new, metrics = FedAvg().aggregate_train(ctx, initial(SIZE), results, [])
    assert new is not None
    np.testing.assert_array_equal(new["w"], results[0][1].arrays["w"])
    assert metrics == results[0][1].metrics


@pytest.mark.slow
def test_sparse_graph_gives_each_client_degree_neighbours() -> None:
    secagg, net, results, _ = run(100, degree=8, threshold=5)
    shares = net.replies_at(wire.SHARE)
    assert {len(arrays[wire.RECIPIENTS]) for arrays in shares.values()} == {8}
    assert_mean_of(100, secagg, results, list(range(100)))


@pytest.mark.parametrize("stage", list(wire.STAGES))
def test_round_completes_with_threshold_dropouts_at_each_stage(stage: str) -> None:
    # n = 10: complete graph of degree 9, threshold 7, so 2 clients may go.
    gone = {2, 7}
    secagg, _, results, failures = run(10, {"drop": {stage: gone}})
    assert sorted(f.client_id for f in failures) == sorted(gone)
    assert all(stage in f.message for f in failures)
    # Clients that sent their masked input are in the sum, even if gone while unmasking.
    kept = list(range(10)) if stage == wire.UNMASK else [c for c in range(10) if c not in gone]
    assert_mean_of(10, secagg, results, kept)


@pytest.mark.parametrize(
    ("drop", "kept"),
    [
        ({wire.SHARE: {4}, wire.MASK: {0}}, [1, 2, 3, 5, 6, 7, 8, 9]),
        ({wire.SETUP: {4}, wire.UNMASK: {9}}, [0, 1, 2, 3, 5, 6, 7, 8, 9]),
    ],
)
def test_round_completes_with_dropouts_spread_over_stages(
    drop: dict[str, set[int]], kept: list[int]
) -> None:
    secagg, _, results, failures = run(10, {"drop": drop})
    assert [f.client_id for f in failures] == sorted(set().union(*drop.values()))
    assert_mean_of(10, secagg, results, kept)


@pytest.mark.parametrize("stage", [wire.SETUP, wire.SHARE])
def test_too_many_dropouts_before_masking_fail_the_round(stage: str) -> None:
    with pytest.raises(AggregationError, match="secure aggregation of round 1 failed"):
        run(10, {"drop": {stage: {1, 2, 3}}})


def test_too_many_dropouts_after_masking_fail_before_any_share_is_asked_for() -> None:
    clients = make_clients(10, SIZE)
    net = Network(dict(clients), drop={wire.MASK: {1, 2, 3}})
    with pytest.raises(AggregationError, match="nothing was revealed"):
        SecAggPlus().aggregate(train_tasks(range(10), initial(SIZE)), net.collect, seed=0)
    assert wire.UNMASK not in net.stages_sent()


def test_too_many_dropouts_while_unmasking_fail_without_a_sum() -> None:
    clients = make_clients(10, SIZE)
    net = Network(dict(clients), drop={wire.UNMASK: {1, 2, 3}})
    with pytest.raises(AggregationError, match="only 6 of the 7 shares"):
        SecAggPlus().aggregate(train_tasks(range(10), initial(SIZE)), net.collect, seed=0)
    # No mask key share was ever revealed: nobody dropped before unmasking.
    for arrays in net.replies_at(wire.UNMASK).values():
        assert len(arrays[wire.KEY_OWNERS]) == 0


def tamper_ciphertext(victim: int) -> object:
    def hook(task: fd.TrainTask) -> fd.TrainTask:
        if wire.stage_of(task.config) != wire.MASK or task.client_id != victim:
            return task
        blobs = flip_byte(task.arrays[wire.CIPHERTEXTS], (0, 40))
        return replace(task, arrays=with_array(task.arrays, wire.CIPHERTEXTS, blobs))

    return hook


def test_tampered_ciphertext_is_detected_and_its_recipient_drops_out() -> None:
    secagg, _, results, failures = run(10, {"on_task": tamper_ciphertext(5)})
    [failure] = failures
    assert failure.client_id == 5
    assert "failed authentication" in failure.message
    assert "TamperedError" in failure.message
    assert_mean_of(10, secagg, results, [c for c in range(10) if c != 5])


def test_ciphertext_relabelled_as_from_another_sender_is_detected() -> None:
    def swap(task: fd.TrainTask) -> fd.TrainTask:
        if wire.stage_of(task.config) != wire.MASK or task.client_id != 0:
            return task
        blobs = task.arrays[wire.CIPHERTEXTS][[1, 0, *range(2, 9)]]  # senders 1 and 2 swapped
        return replace(task, arrays=with_array(task.arrays, wire.CIPHERTEXTS, blobs))

    _, _, _, failures = run(10, {"on_task": swap})
    assert [f.client_id for f in failures] == [0]
    assert "from client 1 failed authentication" in failures[0].message


def tamper_share(holder: int, field: str) -> object:
    def hook(task: fd.TrainTask, result: fd.TrainResult) -> fd.TrainResult:
        if wire.stage_of(task.config) != wire.UNMASK or task.client_id != holder:
            return result
        shares = flip_byte(result.arrays[field], (0, 3))
        return replace(result, arrays=with_array(result.arrays, field, shares))

    return hook


def test_tampered_share_is_detected_and_outvoted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="federa.privacy.secagg.recover")
    hook = tamper_share(4, wire.SEED_SHARES)
    secagg, _, results, failures = run(10, {"on_result": hook})
    assert not failures
    assert_mean_of(10, secagg, results, list(range(10)))
    assert "client 4 sent a share of client 0's self-mask seed" in caplog.text


def test_tampered_mask_key_share_is_detected(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="federa.privacy.secagg.recover")
    options = {"drop": {wire.MASK: {0}}, "on_result": tamper_share(6, wire.KEY_SHARES)}
    secagg, _, results, _ = run(10, options)
    assert_mean_of(10, secagg, results, list(range(1, 10)))
    assert "client 6 sent a share of client 0's mask key" in caplog.text


def test_tampered_share_fails_the_round_when_no_honest_quorum_remains() -> None:
    # threshold = degree: every share is needed, so one bad share cannot be outvoted.
    with pytest.raises(AggregationError, match="were tampered with"):
        run(5, {"on_result": tamper_share(1, wire.SEED_SHARES)}, threshold=4)


def test_client_refuses_to_reveal_both_secrets_of_one_client() -> None:
    def both(task: fd.TrainTask) -> fd.TrainTask:
        if wire.stage_of(task.config) != wire.UNMASK or task.client_id != 3:
            return task
        survivors = task.arrays[wire.SURVIVORS]
        return replace(task, arrays=with_array(task.arrays, wire.DROPPED, survivors[:1]))

    _, _, results, failures = run(10, {"on_task": both})
    assert [f.client_id for f in failures] == [3]
    assert "asked for both secrets of clients [0]" in failures[0].message
    assert results  # the other nine holders are enough


def test_client_refuses_a_second_unmask_in_the_same_round() -> None:
    clients = make_clients(4, SIZE)
    net = Network(dict(clients))
    SecAggPlus().aggregate(train_tasks(range(4), initial(SIZE)), net.collect, seed=0)
    unmask = next(t for t in net.sent if wire.stage_of(t.config) == wire.UNMASK)
    results, failures = net.collect([unmask])
    assert not results
    assert "after the unmask stage" in failures[0].message


def test_client_refuses_an_unsafe_threshold() -> None:
    def lower(task: fd.TrainTask) -> fd.TrainTask:
        if wire.stage_of(task.config) != wire.SHARE:
            return task
        return replace(task, config={**task.config, wire.THRESHOLD: 2})

    with pytest.raises(AggregationError):  # every client refuses, the round cannot go on
        run(6, {"on_task": lower})


@pytest.mark.parametrize(
    ("options", "n", "message"),
    [
        ({}, 2, "at least 3 clients per round"),
        ({"degree": 10}, 10, "--secagg-degree must be in \\[1, 9\\]"),
        ({"degree": 8, "threshold": 4}, 10, "more than half the degree"),
        ({"threshold": 9, "degree": 8}, 10, "more than half the degree"),
    ],
)
def test_degree_and_threshold_are_checked_against_the_cohort(
    options: dict[str, int], n: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SecAggPlus(**options).check_cohort(n)  # type: ignore[arg-type]


def test_strategies_that_need_individual_updates_are_refused() -> None:
    secagg = SecAggPlus()
    for strategy in (Krum(num_byzantine=1), FedMedian()):
        with pytest.raises(ConfigError, match="needs every client's own update"):
            secagg.check_strategy(strategy)
    secagg.check_strategy(FedAvg())


def test_clients_must_all_be_sent_the_same_arrays() -> None:
    tasks = train_tasks(range(4), initial(SIZE))
    tasks[2] = replace(tasks[2], arrays=fd.Arrays({"w": np.zeros(SIZE)}))
    with pytest.raises(ConfigError, match="the same arrays"):
        SecAggPlus().aggregate(tasks, Network(dict(make_clients(4, SIZE))).collect, seed=0)


def test_clients_without_examples_give_no_result() -> None:
    clients = make_clients(4, SIZE)
    for client in clients.values():
        client.num_examples = 0
    results, failures = SecAggPlus().aggregate(
        train_tasks(range(4), initial(SIZE)), Network(dict(clients)).collect, seed=0
    )
    assert results == []
    assert failures == []
