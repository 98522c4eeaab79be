import numpy as np
import pytest
import torch
from torch import nn

import federa as fd
from federa.torch import (
    TorchClient,
    TrainConfig,
    arrays_to_module,
    evaluate,
    make_evaluate_fn,
    module_to_arrays,
    shared_model,
    train,
)
from federa.torch.models import build_model


def bn_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return x, y


def test_module_to_arrays_carries_parameters_and_buffers_by_name() -> None:
    model = bn_model()
    arrays = module_to_arrays(model)
    assert list(arrays) == list(model.state_dict())
    assert "1.running_mean" in arrays
    assert "1.num_batches_tracked" in arrays
    assert arrays["1.num_batches_tracked"].dtype == np.int64
    assert arrays.num_params == sum(t.numel() for t in model.state_dict().values())


def test_arrays_round_trip_into_another_module_and_are_copies() -> None:
    source, target = bn_model(), bn_model()
    arrays = module_to_arrays(source)
    arrays_to_module(target, arrays)
    assert module_to_arrays(target) == arrays
    with torch.no_grad():
        source[0].weight.add_(1.0)
    assert module_to_arrays(source) != arrays  # the arrays did not alias the model


def test_arrays_that_do_not_fit_the_model_are_refused_with_names() -> None:
    model = bn_model()
    arrays = module_to_arrays(model).to_dict()
    arrays["0.weight"] = np.zeros((4, 1, 2, 2), np.float32)
    with pytest.raises(fd.ClientError, match=r"'0.weight' has shape \(4, 1, 2, 2\)"):
        arrays_to_module(model, fd.Arrays(arrays))
    arrays.pop("0.weight")
    with pytest.raises(fd.ClientError, match=r"missing \['0.weight'\]"):
        arrays_to_module(model, fd.Arrays(arrays))
    wrong_dtype = module_to_arrays(model).to_dict()
    wrong_dtype["0.bias"] = wrong_dtype["0.bias"].astype(np.float64)
    with pytest.raises(fd.ClientError, match="dtype"):
        arrays_to_module(model, fd.Arrays(wrong_dtype))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_is_deterministic_for_a_seed_and_learns(optimizer: str) -> None:
    x, y = data()
    cfg = TrainConfig(
        epochs=5,
        batch_size=8,
        lr=0.05 if optimizer == "sgd" else 0.01,
        optimizer=optimizer,
        momentum=0.9 if optimizer == "sgd" else 0.0,
    )  # type: ignore[arg-type]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Sequential(bn_model(), nn.Dropout(0.3))
        before, _ = evaluate(model, x, y)
        metrics = train(model, x, y, cfg, seed=123)
        after, _ = evaluate(model, x, y)
        runs.append(module_to_arrays(model))
        assert after < before
        assert metrics["num_steps"] == 5 * 5
    assert runs[0] == runs[1]
    torch.manual_seed(0)
    other = nn.Sequential(bn_model(), nn.Dropout(0.3))
    train(other, x, y, cfg, seed=124)
    assert module_to_arrays(other) != runs[0]


def test_train_leaves_the_global_torch_rng_alone() -> None:
    x, y = data()
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3), nn.Dropout(0.5))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    train(model, x, y, TrainConfig(), seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_server_config_overrides_local_hyperparameters() -> None:
    cfg = TrainConfig(lr=0.1, epochs=1).updated({"lr": 0.5, "epochs": 3, "seed": 9, "round_num": 2})
    assert (cfg.lr, cfg.epochs) == (0.5, 3)
    with pytest.raises(fd.ConfigError, match="local epochs must be >= 1"):
        TrainConfig().updated({"epochs": 0})


def test_torch_client_fit_and_evaluate_report_examples_and_metrics() -> None:
    x, y = data(30)
    client = TorchClient(bn_model, (x, y), (x[:10], y[:10]), share_model=False)
    initial = module_to_arrays(bn_model())
    result = client.fit(initial, {"seed": 1, "round_num": 1})
    assert result.num_examples == 30
    assert result.arrays.same_spec(initial)
    assert result.arrays != initial
    assert set(result.metrics) == {"loss", "accuracy", "num_steps"}
    evaluation = client.evaluate(result.arrays, {"seed": 1, "round_num": 1})
    assert evaluation.num_examples == 10
    assert 0.0 <= evaluation.metrics["accuracy"] <= 1.0


def test_clients_in_one_process_share_one_model_per_model_fn() -> None:
    x, y = data(10)
    a = TorchClient(bn_model, (x, y))
    b = TorchClient(bn_model, (x, y))
    assert a.model is b.model is shared_model(bn_model)
    assert TorchClient(bn_model, (x, y), share_model=False).model is not a.model


def test_shared_model_gives_the_same_result_as_a_fresh_model() -> None:
    x, y = data(20)
    initial = module_to_arrays(bn_model())
    shared = TorchClient(bn_model, (x, y))
    shared.fit(module_to_arrays(bn_model()), {"seed": 3})  # leaves state behind in the model
    fresh = TorchClient(bn_model, (x, y), share_model=False)
    config = {"seed": 7, "round_num": 1}
    assert shared.fit(initial, config).arrays == fresh.fit(initial, config).arrays


def test_make_evaluate_fn_scores_arrays_on_held_out_data() -> None:
    x, y = data(50)
    model = bn_model()
    evaluate_fn = make_evaluate_fn(bn_model, (x, y))
    loss, metrics = evaluate_fn(1, module_to_arrays(model))
    expected_loss, expected_acc = evaluate(model, x, y)
    assert loss == pytest.approx(expected_loss)
    assert metrics["accuracy"] == pytest.approx(expected_acc)


def test_make_evaluate_fn_on_a_cnn_loads_each_rounds_arrays_into_its_channels_last_model() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g)
    evaluate_fn = make_evaluate_fn(lambda: build_model("mnist_cnn", (1, 28, 28), 10), (x, y))
    for seed in (0, 1):  # two rounds' arrays: the second overwrites the first
        torch.manual_seed(seed)
        model = build_model("mnist_cnn", (1, 28, 28), 10)
        loss, metrics = evaluate_fn(seed, module_to_arrays(model))
        expected_loss, expected_acc = evaluate(model, x, y)
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        assert metrics["accuracy"] == expected_acc
