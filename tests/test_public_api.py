import federa

EXPECTED = [
    "AggregationError",
    "Arrays",
    "Client",
    "ClientError",
    "ClientFn",
    "Config",
    "ConfigError",
    "EvalResult",
    "EvalTask",
    "Failure",
    "FedAvg",
    "FederaError",
    "History",
    "Metrics",
    "RoundContext",
    "RoundRecord",
    "Strategy",
    "TrainResult",
    "TrainTask",
    "TransportError",
    "__version__",
    "connect",
    "run_rounds",
    "serve",
    "simulate",
    "strategy",
]


def test_public_api_is_pinned_and_sorted() -> None:
    assert federa.__all__ == EXPECTED
    assert sorted(federa.__all__) == federa.__all__
    for name in federa.__all__:
        assert hasattr(federa, name), name


def test_every_error_is_a_federa_error() -> None:
    for name in ("AggregationError", "ClientError", "ConfigError", "TransportError"):
        assert issubclass(getattr(federa, name), federa.FederaError)
