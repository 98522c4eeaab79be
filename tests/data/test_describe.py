import numpy as np

from federa.data import summarize_partition


def test_partition_summary_counts_examples_and_classes_per_client() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2, 1])
    parts = [np.array([0, 1, 2]), np.array([3, 4]), np.array([5, 6])]
    summary = summarize_partition(labels, parts, num_classes=4)
    np.testing.assert_array_equal(summary.counts, [[2, 1, 0, 0], [0, 0, 2, 0], [0, 1, 1, 0]])
    assert summary.stats() == {
        "clients": 3.0,
        "examples": 7.0,
        "examples_min": 2.0,
        "examples_median": 2.0,
        "examples_max": 3.0,
        "classes_min": 1.0,
        "classes_median": 2.0,
        "classes_max": 2.0,
    }
