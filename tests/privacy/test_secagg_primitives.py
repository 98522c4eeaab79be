"""SecAgg+ building blocks: Shamir sharing, the PRG, quantisation, the neighbour graph, and
the statistical independence of a masked input from the input."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from federa.privacy.secagg import SecAggPlus, crypto, graph, quantize, shamir, wire
from tests.privacy.secagg_harness import Network, VectorClient, initial, train_tasks

# ---- Shamir ----


@settings(max_examples=30, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=64),
    holders=st.lists(st.integers(0, 10_000), min_size=1, max_size=12, unique=True),
    data=st.data(),
)
def test_any_threshold_shares_recover_the_secret(
    secret: bytes, holders: list[int], data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(1, len(holders)))
    shares = list(zip(holders, shamir.split(secret, threshold, holders), strict=True))
    subset = data.draw(st.permutations(shares))[:threshold]
    assert shamir.combine(subset, len(secret)) == secret


def test_fewer_than_threshold_shares_do_not_give_the_secret() -> None:
    secret = os.urandom(32)
    shares = list(zip(range(6), shamir.split(secret, 4, list(range(6))), strict=True))
    for subset in itertools.combinations(shares, 3):
        assert combine_or_none(subset) != secret  # None: not even a valid secret
    assert shamir.combine(shares[2:], 32) == secret


def combine_or_none(
    shares: list[tuple[int, bytes]] | tuple[tuple[int, bytes], ...],
) -> bytes | None:
    try:
        return shamir.combine(shares, 32)
    except ValueError:
        return None


def test_a_tampered_share_changes_the_reconstruction() -> None:
    secret = os.urandom(32)
    shares = list(zip(range(3), shamir.split(secret, 3, [0, 1, 2]), strict=True))
    bad = bytearray(shares[1][1])
    bad[0] ^= 1
    shares[1] = (1, bytes(bad))
    assert combine_or_none(shares) != secret


# ---- PRG, keys, encryption ----


def test_masks_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    seed = os.urandom(32)
    first = crypto.expand_mask(seed, 1000)
    assert np.array_equal(first, crypto.expand_mask(seed, 1000))
    assert not np.array_equal(first, crypto.expand_mask(os.urandom(32), 1000))


def test_applying_masks_slice_by_slice_equals_adding_whole_masks() -> None:
    length = crypto.MASK_CHUNK + 4_465  # a partial last slice
    seeds = [os.urandom(32) for _ in range(3)]
    total = np.arange(length, dtype=np.uint32)
    crypto.apply_masks(total, [(seeds[0], 1), (seeds[1], -1), (seeds[2], 1)])
    expected = np.arange(length, dtype=np.uint32)
    expected += crypto.expand_mask(seeds[0], length)
    expected -= crypto.expand_mask(seeds[1], length)
    expected += crypto.expand_mask(seeds[2], length)
    np.testing.assert_array_equal(total, expected)
    crypto.apply_masks(total, [(seeds[0], -1), (seeds[1], 1), (seeds[2], -1)])
    np.testing.assert_array_equal(total, np.arange(length, dtype=np.uint32))


def test_key_stream_read_in_slices_is_the_mask() -> None:
    seed = os.urandom(32)
    stream = crypto.KeyStream(seed, chunk=1000)
    pieces = [stream.read(size).copy() for size in (1000, 3, 997, 1, 999)]
    np.testing.assert_array_equal(np.concatenate(pieces), crypto.expand_mask(seed, 3000))
    with pytest.raises(ValueError, match="at most 1000"):
        stream.read(1001)


def test_pairwise_mask_seeds_agree_on_both_sides() -> None:
    a_private, a_public = crypto.generate_keypair()
    b_private, b_public = crypto.generate_keypair()
    ab = crypto.agree(a_private, b_public, crypto.MASK_LABEL)
    assert ab == crypto.agree(b_private, a_public, crypto.MASK_LABEL)
    assert ab != crypto.agree(a_private, b_public, crypto.ENCRYPTION_LABEL)


def test_ciphertext_is_bound_to_its_parties() -> None:
    key = os.urandom(32)
    blob = crypto.encrypt(key, b"share", crypto.associated_data(1, 2, 3))
    assert crypto.decrypt(key, blob, crypto.associated_data(1, 2, 3)) == b"share"
    for aad in (crypto.associated_data(1, 3, 2), crypto.associated_data(2, 2, 3)):
        with pytest.raises(crypto.TamperedError, match="authentication failed"):
            crypto.decrypt(key, blob, aad)


# ---- quantisation ----


def test_quantised_sum_is_exact_to_one_step_per_client() -> None:
    rng = np.random.default_rng(0)
    n, clip = 100, 0.5
    levels = quantize.levels_for(n)
    values = rng.uniform(-clip, clip, (n, 1000))
    codes = np.sum([quantize.encode(v, -clip, clip, levels, rng) for v in values], axis=0)
    assert codes.max() < 2**32  # no wrap-around with n clients
    decoded = quantize.decode_sum(codes, -clip, clip, levels, n)
    step = quantize.step(-clip, clip, levels)
    assert np.max(np.abs(decoded - values.sum(axis=0))) < n * step


def test_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(1)
    levels = 4  # coarse on purpose: 0.3 lies between codes
    codes = quantize.encode(np.full(200_000, 0.3), 0.0, 1.0, levels, rng)
    assert codes.mean() / levels == pytest.approx(0.3, abs=2e-3)


def uniform_bits(seed: int) -> Callable[[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    return lambda n: rng.integers(0, 2**32, n, dtype=np.uint32)


def test_encoding_an_update_in_slices_matches_encoding_it_whole() -> None:
    rng = np.random.default_rng(2)
    size = quantize.ENCODE_CHUNK + 123  # a partial last slice
    old = [rng.standard_normal(size).astype(np.float32), np.arange(50, dtype=np.int64)]
    new = [old[0] + rng.uniform(-0.2, 0.2, size).astype(np.float32), old[1] + 3]
    clip, weight, levels = 0.1, 0.4, quantize.levels_for(100)
    out = np.empty(size + 50, np.uint32)
    quantize.encode_update(
        new, old, out, clip=clip, weight=weight, levels=levels, random_bits=uniform_bits(0)
    )
    difference = np.concatenate([(a.astype(np.float64) - b) for a, b in zip(new, old, strict=True)])
    exact = (weight * np.clip(difference, -clip, clip) + clip) * (levels / (2 * clip))
    assert np.all(out <= levels)
    assert np.all((out == np.floor(exact)) | (out == np.ceil(exact)))  # rounded, not biased off
    with pytest.raises(ValueError, match="room for"):
        quantize.encode_update(
            new,
            old,
            out[:-1],
            clip=clip,
            weight=weight,
            levels=levels,
            random_bits=uniform_bits(0),
        )


def test_stochastic_rounding_of_updates_is_unbiased() -> None:
    size = 200_000
    out = np.empty(size, np.uint32)
    old, new = [np.zeros(size)], [np.full(size, 0.3 - 0.5)]  # 0.3 of the way up [-0.5, 0.5]
    quantize.encode_update(
        new, old, out, clip=0.5, weight=1.0, levels=4, random_bits=uniform_bits(1)
    )
    assert out.mean() / 4 == pytest.approx(0.3, abs=2e-3)


def test_wide_encoding_sums_with_about_double_precision() -> None:
    levels = quantize.levels_for(10)
    values = [0.123456789012345, 1e-9, 0.5, 0.999999, 0.0, 0.7, 0.1, 0.2, 0.3, 0.4]
    digits = np.sum([quantize.encode_wide([v], 0.0, 1.0, levels) for v in values], axis=0)
    total = quantize.decode_wide_sum(digits, 0.0, 1.0, levels, len(values))
    assert total == pytest.approx(sum(values), abs=1e-13)


# ---- neighbour graph ----


@pytest.mark.parametrize(("n", "k"), [(10, 4), (11, 4), (10, 3), (11, 3), (100, 15), (5, 4)])
def test_neighbour_graph_is_symmetric_and_regular(n: int, k: int) -> None:
    ids = list(range(0, 3 * n, 3))
    g = graph.neighbour_graph(ids, k, seed=7)
    want = k + 1 if k % 2 and n % 2 and k < n - 1 else k
    for u, neighbours in g.items():
        assert len(neighbours) == want
        assert u not in neighbours
        assert all(u in g[v] for v in neighbours)
    assert g == graph.neighbour_graph(ids, k, seed=7)
    assert n < 10 or g != graph.neighbour_graph(ids, k, seed=8)


def test_default_degree_grows_with_log_n() -> None:
    assert [graph.default_degree(n) for n in (3, 5, 10, 100, 1000)] == [2, 4, 9, 15, 21]
    for n in (3, 10, 100, 1000):
        k = graph.default_degree(n)
        assert k / 2 < graph.default_threshold(k) <= k


# ---- the server's view of one client ----


def masked_view(update: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (the encoded input, the masked input the server receives) of client 0."""
    size = len(update)
    clients = {0: VectorClient(update, 100, 0.0)}
    clients |= {c: VectorClient(np.zeros(size), 100, 0.0) for c in (1, 2, 3)}
    net = Network(dict(clients))
    SecAggPlus().aggregate(train_tasks(range(4), initial(size)), net.collect, seed=0)
    masked = net.replies_at(wire.MASK)[0][wire.MASKED][:size]
    encoded = quantize.encode(
        update * 0.01, -1.0, 1.0, quantize.levels_for(4), np.random.default_rng(0)
    )
    return encoded, masked


def top_byte_histogram(values: np.ndarray) -> np.ndarray:
    return np.bincount((values >> 24).astype(np.int64), minlength=256)


def test_masked_input_is_uniform_whatever_the_input() -> None:
    size = 50_000
    low_encoded, low = masked_view(np.full(size, -1.0))  # every coordinate at -clip
    high_encoded, high = masked_view(np.full(size, 1.0))  # every coordinate at +clip
    for masked in (low, high):
        counts = top_byte_histogram(masked)
        assert stats.chisquare(counts).pvalue > 1e-6  # uniform over the ring
    # The two views are two samples of one distribution ...
    table = np.stack([top_byte_histogram(low), top_byte_histogram(high)])
    assert stats.chi2_contingency(table).pvalue > 1e-6
    assert stats.ks_2samp(low.astype(np.float64), high.astype(np.float64)).pvalue > 1e-6
    # ... while the inputs themselves are told apart at once by the same tests.
    assert stats.chisquare(top_byte_histogram(low_encoded)).pvalue < 1e-6
    assert stats.ks_2samp(low_encoded, high_encoded).pvalue < 1e-6
