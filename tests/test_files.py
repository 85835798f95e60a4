"""Atomic outputs: a failure leaves no partial file and keeps the previous one."""

import hashlib

import numpy as np
import pytest

from exfil.files import atomic_path, save_json, save_npy, sha256_file


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_save_npy_keeps_exact_name_and_content(tmp_path):
    array = np.arange(12, dtype=np.int8).reshape(3, 4)
    save_npy(tmp_path / "labels.npy", array)
    save_npy(tmp_path / "weird.bin", array)
    assert np.array_equal(np.load(tmp_path / "labels.npy"), array)
    assert np.array_equal(np.load(tmp_path / "weird.bin"), array)
    save_json(tmp_path / "sub" / "meta.json", {"a": [1, 2]})
    assert (tmp_path / "sub" / "meta.json").read_text().startswith("{")


def test_sha256_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3_000_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path, block=4096) == hashlib.sha256(data).hexdigest()
