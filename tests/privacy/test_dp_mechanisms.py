"""Clipping and the Gaussian mechanism: the invariants DP's sensitivity bound rests on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from federa.core.arrays import Arrays
from federa.errors import ConfigError
from federa.privacy import (
    add_gaussian_noise,
    clip_arrays,
    clip_update,
    gaussian_noise,
    mean_noise_std,
    model_update,
    update_norm,
)


def updates(dtype: type) -> st.SearchStrategy[Arrays]:
    width = 32 if dtype is np.float32 else 64
    elements = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=width)
    shapes = hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)
    return st.builds(
        lambda w, b: Arrays({"w": w, "b": b}),
        hnp.arrays(dtype, shapes, elements=elements),
        hnp.arrays(dtype, (3,), elements=elements),
    )


@settings(max_examples=60, deadline=None)
@given(update=updates(np.float64), clip_norm=st.floats(1e-3, 1e3))
def test_clipping_never_raises_a_norm_and_bounds_it_by_the_clip_norm(
    update: Arrays, clip_norm: float
) -> None:
    before = update_norm(update)
    clipped = clip_update(update, clip_norm)
    after = update_norm(clipped)
    assert after <= before
    assert after <= clip_norm * (1 + 1e-12)
    if before <= clip_norm:
        assert clipped == update  # already within the bound: untouched
    else:
        assert after == pytest.approx(clip_norm, rel=1e-9)
        scale = clip_norm / before
        for name in update:  # same direction
            np.testing.assert_allclose(clipped[name], update[name] * scale, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(update=updates(np.float32), clip_norm=st.floats(1e-3, 1e3))
def test_clipping_float32_keeps_the_dtype_and_never_raises_any_coordinate(
    update: Arrays, clip_norm: float
) -> None:
    clipped = clip_update(update, clip_norm)
    assert clipped.same_spec(update)
    for name in update:
        assert np.all(np.abs(clipped[name]) <= np.abs(update[name]))


def test_integer_arrays_are_not_part_of_the_update() -> None:
    update = Arrays({"w": np.full(4, 3.0), "count": np.array([100], np.int64)})
    assert update_norm(update) == pytest.approx(6.0)
    clipped = clip_update(update, 1.0)
    assert clipped["count"][0] == 100
    np.testing.assert_allclose(clipped["w"], np.full(4, 0.5))


def test_clip_arrays_bounds_the_change_and_keeps_integer_arrays_global() -> None:
    reference = Arrays({"w": np.ones(100, np.float32), "steps": np.array([7], np.int64)})
    sent = Arrays({"w": np.full(100, 4.0, np.float32), "steps": np.array([9], np.int64)})
    out = clip_arrays(sent, reference, 2.0)
    assert out.same_spec(reference)
    assert update_norm(model_update(out, reference)) == pytest.approx(2.0, rel=1e-6)
    assert out["steps"][0] == 7


def test_updates_of_other_arrays_are_refused() -> None:
    with pytest.raises(ConfigError, match="must return the arrays it was sent"):
        model_update(Arrays({"w": np.zeros(3)}), Arrays({"w": np.zeros(4)}))
    with pytest.raises(ConfigError, match="clip_norm must be a positive number"):
        clip_update(Arrays({"w": np.zeros(3)}), 0.0)
    with pytest.raises(ConfigError, match="NaN or Inf"):
        clip_update(Arrays({"w": np.array([np.nan])}), 1.0)


def test_gaussian_noise_is_deterministic_by_seed_and_follows_array_order() -> None:
    like = Arrays({"a": np.zeros((2, 3)), "b": np.zeros(4, np.float32), "n": np.zeros(2, int)})
    first = gaussian_noise(like, 0.5, np.random.default_rng(3))
    second = gaussian_noise(like, 0.5, np.random.default_rng(3))
    other = gaussian_noise(like, 0.5, np.random.default_rng(4))
    assert list(first) == ["a", "b"]  # integer arrays get no noise
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not np.array_equal(first["a"], other["a"])
    noised = add_gaussian_noise(like, 0.5, np.random.default_rng(3))
    np.testing.assert_array_equal(noised["a"], first["a"])
    np.testing.assert_array_equal(noised["n"], like["n"])


def test_gaussian_noise_has_the_calibrated_standard_deviation() -> None:
    std = mean_noise_std(noise_multiplier=1.5, clip_norm=2.0, cohort_size=4)
    assert std == pytest.approx(0.75)
    draws = gaussian_noise({"w": np.zeros(200_000)}, std, np.random.default_rng(0))["w"]
    # The sample std of 2e5 normals is within 0.5% of sigma with overwhelming probability.
    assert draws.std() == pytest.approx(std, rel=5e-3)
    assert abs(draws.mean()) < 5 * std / np.sqrt(draws.size)


def test_noise_parameters_are_checked() -> None:
    with pytest.raises(ConfigError, match="cohort_size must be >= 1"):
        mean_noise_std(1.0, 1.0, 0)
    with pytest.raises(ConfigError, match="standard deviation"):
        gaussian_noise({"w": np.zeros(2)}, -1.0, np.random.default_rng(0))
