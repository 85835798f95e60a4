"""Shared test setup: the repo root on sys.path, and the whole pipeline run once on small data."""

import contextlib
import fcntl
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_script(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    """Run a project script with the test interpreter, as a user would from the repo root."""
    done = subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, **kwargs
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


SNIFFING = ("test_datagen.py", "test_pcapwrite_sniff.py", "test_det.py")  # they record `lo`


def pytest_collection_modifyitems(items) -> None:  # noqa: ANN001
    """With `-n 2 --dist loadgroup` (make test): one worker should build the pipeline and run
    what needs it, and the loopback tests stay together. pytest 9.2 no longer reads the node id
    pytest-xdist 3.8 rewrites for its groups, so the groups are hints only; the locks below
    are what makes the pipeline built once and the sniffing tests take turns."""
    for item in items:
        if "pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("pipeline"))
        elif item.path.name in SNIFFING or item.get_closest_marker("loopback"):
            item.add_marker(pytest.mark.xdist_group("loopback"))


def shared_dir(tmp_path_factory) -> pathlib.Path:  # noqa: ANN001
    """A folder every xdist worker of this run sees (its base temp's parent), or the base temp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def exclusive(path: pathlib.Path):  # noqa: ANN201
    """Hold an exclusive lock on `path` (one worker at a time), released on exit."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _one_sniffer_at_a_time(request, tmp_path_factory):  # noqa: ANN001, ANN202
    """Tests that record loopback never overlap across workers (each would see the other's)."""
    if request.node.path.name not in SNIFFING and not request.node.get_closest_marker("loopback"):
        yield
        return
    with exclusive(shared_dir(tmp_path_factory) / "loopback.lock"):
        yield


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> dict:
    """The whole chain once per test session: captures, datasets, 3 checkpoints, few epochs.

    The training and the test capture come from different seeds and exfiltrate different files,
    as in `make demo`.
    """
    shared = shared_dir(tmp_path_factory)
    work = shared / "pipeline"
    with exclusive(shared / "pipeline.lock"):  # built by the first worker, read by both
        if not (work / "complete").exists():
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            _build_pipeline(work)
            (work / "complete").touch()
    return {"work": work, "checkpoints": {n: work / f"{n}.pt" for n in ("clf", "ae_clf", "lstm")}}


def _build_pipeline(work: pathlib.Path) -> None:
    files = {"train": ["report.txt", "photo-cat.png", "customers.csv", "diagram.png"],
             "test": ["firmware.bin", "chart.png", "photo-street.jpg"]}  # fmt: skip
    for name, seed, packets in (("train", 31, 30000), ("test", 32, 10000)):  # demo-sized training
        capture = work / f"{name}.pcap"
        run_script("data_generating_codes/script_datagen.py", "--mode", "offline",
                   "--packets", packets, "--seed", seed, "--files", *files[name],
                   "--out", capture)  # fmt: skip
        run_script("ld.py", capture, "--out", work / name)
        run_script("ng.py", capture, "--out", work / name)
    few_epochs = {"clf": [], "ae_clf": [], "lstm": ["--epochs", "3"]}  # the LSTM's costly ones
    for network in ("clf", "ae_clf", "lstm"):
        run_script(f"train_{network}.py", "--data", work / "train", "--out",
                   work / f"{network}.pt", *few_epochs[network],
                   env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip
