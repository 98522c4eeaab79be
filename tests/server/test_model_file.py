import pickle
from pathlib import Path

import numpy as np
import pytest

from federa.core.arrays import Arrays
from federa.errors import FederaError
from federa.server.model_file import MODEL_FORMAT, load_model_file, save_model_file

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def sample_arrays() -> Arrays:
    rng = np.random.default_rng(0)
    return Arrays(
        {
            "zeta.weight": rng.normal(size=(3, 4)).astype(np.float32),
            "alpha.bias": rng.normal(size=(4,)).astype(np.float64),
            "bn.num_batches_tracked": np.array(7, dtype=np.int64),
            "mask": np.array([[1, 0], [0, 1]], dtype=np.uint8),
        }
    )


def test_model_file_round_trips_arrays_in_order_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    arrays = sample_arrays()
    save_model_file(path, arrays, {"model": "symbol_cnn", "class_names": '["0", "÷"]'})
    loaded, metadata = load_model_file(path)
    assert loaded == arrays  # names, order, dtypes, shapes and every bit
    assert list(loaded) == ["zeta.weight", "alpha.bias", "bn.num_batches_tracked", "mask"]
    assert metadata == {"model": "symbol_cnn", "class_names": '["0", "÷"]', "format": MODEL_FORMAT}
    assert not list(tmp_path.glob("*.tmp"))


def test_model_file_is_plain_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_model_file(path, sample_arrays(), {"model": "m"})
    tensors = safetensors_numpy.load_file(str(path))
    np.testing.assert_array_equal(tensors["zeta.weight"], sample_arrays()["zeta.weight"])


def test_a_safetensors_file_from_elsewhere_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    safetensors_numpy.save_file({"w": np.zeros(3, dtype=np.float32)}, str(path))
    with pytest.raises(FederaError, match="not a federa model"):
        load_model_file(path)


def test_a_pickle_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (Path.write_text, (marker, "ran"))  # type: ignore[return-value]  # any callable

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(FederaError, match=str(path)):
        load_model_file(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"\xff" * 16, "damaged"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "damaged"),
    ],
)
def test_a_damaged_file_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(FederaError, match=message) as info:
        load_model_file(path)
    assert "\n" not in str(info.value)


def test_a_truncated_model_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_model_file(path, sample_arrays(), {"model": "m"})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FederaError, match="damaged"):
        load_model_file(path)


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FederaError, match=r"model file .*missing.safetensors does not exist"):
        load_model_file(tmp_path / "missing.safetensors")


def test_metadata_must_be_strings_and_not_reserved(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    with pytest.raises(FederaError, match="reserved"):
        save_model_file(path, sample_arrays(), {"format": "mine"})
    with pytest.raises(FederaError, match="must be strings"):
        save_model_file(path, sample_arrays(), {"rounds": 3})  # type: ignore[dict-item]  # the mistake under test
    assert not path.exists()
