"""The compiled name loop (exfil/kernels.py) against the numpy code it replaces, on hostile names,
and detect.py's verdicts with either path."""

import os

import numpy as np
import pandas as pd
import pytest
from conftest import run_script

from exfil import kernels
from exfil.features import EXTRA_FEATURES, extras, numpy_extras

numba = pytest.importorskip("numba", reason="numba not installed: the numpy path is the only one")


def hostile_names(rng: np.random.Generator, rows: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Name rows of every length 0..255 from bytes a hostile sender may put in a label: dots in
    runs, NUL, upper case, bytes >= 0x80, digits, '-' and '_'."""
    alphabet = np.frombuffer(b"..aZz09-_\x00\x7f\x80\xff Ab.", np.uint8)
    lengths = rng.integers(0, 256, rows)
    lengths[:20] = [0, 1, 1, 2, 63, 64, 253, 255, 3, 3, 1, 2, 5, 9, 17, 33, 65, 129, 254, 4]
    names = np.zeros((rows, 255), np.uint8)
    for i, length in enumerate(lengths.tolist()):
        pool = alphabet if i % 3 else np.arange(256, dtype=np.uint8)  # any byte at all
        names[i, :length] = rng.choice(pool, length)
    names[1, 0], names[2, 0] = ord("."), 0  # "." alone, one NUL
    return names, lengths.astype(np.int32)


def test_compiled_name_features_equal_numpy_on_hostile_names(monkeypatch) -> None:
    monkeypatch.setenv(kernels.KERNELS_ENV, "numba")
    names, lengths = hostile_names(np.random.default_rng(3))
    batch = type("Batch", (), {"qname": names, "qlen": lengths,
                               "qtype": np.arange(len(lengths), dtype=np.uint16)})  # fmt: skip
    compiled = extras(batch, EXTRA_FEATURES)
    assert kernels.compiled()
    reference = numpy_extras(batch, EXTRA_FEATURES)
    np.testing.assert_allclose(compiled, reference, rtol=1e-6, atol=1e-6)
    assert compiled[:, EXTRA_FEATURES.index("entropy")].max() > 5  # random bytes: high entropy
    # a subset, in another order, is the same columns
    picked = ("entropy", "qtype", "labels")
    columns = [EXTRA_FEATURES.index(p) for p in picked]
    np.testing.assert_array_equal(extras(batch, picked), compiled[:, columns])


def test_numpy_path_unless_the_compiled_one_is_asked_for(monkeypatch) -> None:
    names, lengths = hostile_names(np.random.default_rng(4), 50)
    for setting in ("", "numpy", "yes"):
        monkeypatch.setenv(kernels.KERNELS_ENV, setting)
        assert kernels.name_stats(names, lengths) is None and not kernels.compiled()
    monkeypatch.setenv(kernels.KERNELS_ENV, "numba")
    assert kernels.name_stats(names, lengths).shape == (50, len(kernels.STATS))


@pytest.mark.slow
def test_detect_gives_the_same_verdicts_compiled_and_in_numpy(pipeline, tmp_path) -> None:
    scores = {}
    for path in ("numba", "numpy"):
        out = tmp_path / path / "scores.csv"
        out.parent.mkdir()
        run_script("detect.py", pipeline["work"] / "test.pcap", "--model",
                   pipeline["checkpoints"]["ae_clf"], "--out", out, check=False,
                   env={**os.environ, kernels.KERNELS_ENV: path})  # fmt: skip
        scores[path] = pd.read_csv(out)
        assert (out.parent / "alerts.json").exists()
    numba_rows, numpy_rows = scores["numba"], scores["numpy"]
    assert len(numba_rows) == len(numpy_rows) > 5000
    np.testing.assert_allclose(numba_rows.score, numpy_rows.score, atol=1e-4)
    assert (numba_rows.malicious == numpy_rows.malicious).all()
    assert numba_rows.malicious.sum() > 100
