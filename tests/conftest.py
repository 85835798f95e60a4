"""Shared test setup: the repo root on sys.path, and the whole pipeline run once on small data."""

import os
import pathlib
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


def pytest_collection_modifyitems(items) -> None:  # noqa: ANN001
    """With `-n 2 --dist loadgroup` (make test): one worker builds the pipeline and runs what
    needs it, the other runs the rest; tests that sniff loopback stay on one worker together."""
    sniffing = ("test_datagen.py", "test_pcapwrite_sniff.py", "test_det.py")
    for item in items:
        if "pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("pipeline"))
        elif item.path.name in sniffing:
            item.add_marker(pytest.mark.xdist_group("loopback"))


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> dict:
    """The whole chain once per test session: captures, datasets, 3 checkpoints, few epochs.

    The training and the test capture come from different seeds and exfiltrate different files,
    as in `make demo`.
    """
    work = tmp_path_factory.mktemp("pipeline")
    files = {"train": ["report.txt", "photo-cat.png", "customers.csv", "diagram.png"],
             "test": ["firmware.bin", "chart.png", "photo-street.jpg"]}  # fmt: skip
    for name, seed, packets in (("train", 31, 30000), ("test", 32, 10000)):  # demo-sized training
        capture = work / f"{name}.pcap"
        run_script("data_generating_codes/script_datagen.py", "--mode", "offline",
                   "--packets", packets, "--seed", seed, "--files", *files[name],
                   "--out", capture)  # fmt: skip
        run_script("ld.py", capture, "--out", work / name)
        run_script("ng.py", capture, "--out", work / name)
    checkpoints = {}
    few_epochs = {"clf": [], "ae_clf": [], "lstm": ["--epochs", "3"]}  # the LSTM's costly ones
    for network in ("clf", "ae_clf", "lstm"):
        checkpoints[network] = work / f"{network}.pt"
        run_script(f"train_{network}.py", "--data", work / "train", "--out",
                   checkpoints[network], *few_epochs[network],
                   env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip
    return {"work": work, "checkpoints": checkpoints}
