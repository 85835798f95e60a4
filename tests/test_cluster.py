"""--scheduler: ld.py, ng.py and detect.py run their per-capture work on a Dask distributed
cluster (a real LocalCluster on loopback here) and write exactly the outputs of a local run;
a scheduler that is not there is a one-line error. Also --flagged-only."""

import json
import os
import sys

import numpy as np
import pytest
from conftest import ROOT, run_script

distributed = pytest.importorskip("distributed", reason="dask.distributed not installed")


@pytest.fixture(scope="module")
def cluster():
    # the scheduler and workers import the project's code, as on a real cluster
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), before or ""])
    sys.path.insert(0, str(ROOT))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as local:  # fmt: skip
        yield local.scheduler_address
    if before is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("captures")
    paths = []
    for seed, name in ((5, "report.txt"), (6, "chart.png")):
        path = folder / f"c{seed}.pcap"
        run_script("data_generating_codes/script_datagen.py", "--mode", "offline", "--packets",
                   2500, "--seed", seed, "--files", name, "--out", path)  # fmt: skip
        paths.append(path)
    return paths


def _without_config(path) -> dict:  # noqa: ANN001
    report = json.loads(path.read_text())
    report.pop("config")
    return report


@pytest.mark.slow
def test_cluster_runs_give_the_outputs_of_local_runs(cluster, captures, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    for out, extra in ((local, []), (remote, ["--scheduler", cluster])):
        out.mkdir()
        run_script("ld.py", *captures, "--out", out / "ds", *extra)
        run_script("ng.py", *captures, "--out", out / "ds", *extra)
        done = run_script("detect.py", *captures, "--out", out / "s.csv", *extra, check=False)
        assert done.returncode == 1, done.stderr  # the captures hold tunnels: alerts
    assert (local / "s.csv").read_bytes() == (remote / "s.csv").read_bytes()
    assert _without_config(local / "alerts.json") == _without_config(remote / "alerts.json")
    assert (local / "ds" / "packets.csv").read_bytes() == (
        remote / "ds" / "packets.csv"
    ).read_bytes()
    for name in ("labels", "unigrams", "extras", "qname_bytes"):
        assert np.array_equal(np.load(local / "ds" / f"{name}.npy"),
                              np.load(remote / "ds" / f"{name}.npy")), name  # fmt: skip
    for meta in ("labels.json", "features.json"):
        assert _without_config(local / "ds" / meta) == _without_config(remote / "ds" / meta)
    assert str(captures[0]) in (remote / "s.csv").read_text()  # captures named as given


def test_an_absent_scheduler_is_a_one_line_error(captures, tmp_path):
    done = run_script("detect.py", captures[0], "--out", tmp_path / "s.csv", "--scheduler",
                      "tcp://127.0.0.1:9", check=False)  # fmt: skip
    assert done.returncode == 2 and "Dask scheduler" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.csv").exists()


def test_flagged_only_writes_the_flagged_rows_and_the_same_alerts(captures, tmp_path):
    every, flagged = tmp_path / "every", tmp_path / "flagged"
    for out, extra in ((every, []), (flagged, ["--flagged-only"])):
        out.mkdir()
        run_script("detect.py", captures[0], "--out", out / "s.csv", *extra, check=False)
    lines = (every / "s.csv").read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line.endswith(",1")]
    assert (flagged / "s.csv").read_text().splitlines() == kept and 1 < len(kept) < len(lines)
    assert _without_config(every / "alerts.json") == _without_config(flagged / "alerts.json")
