"""Inference speed of each network in packets/s, on CPU and (when present) CUDA.

    python bench/bench_models.py                       # default shapes, synthetic inputs
    python bench/bench_models.py --packets 200000 --batch-size 65536 --threads 2
    python bench/bench_models.py --checkpoints checkpoints/clf.pt checkpoints/lstm.pt

Inputs are synthetic (random unigrams; names with a realistic length mix: short benign names,
67-byte DET names); weights are random unless checkpoints are given. Timing covers the public
`models.predict_proba` path, so what is measured is what evaluate.py and detect.py get.
Targets on the 2-core dev machine: fully connected nets >= 1,000,000 pkt/s, LSTM >= 100,000.
"""

import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from exfil.cli import configure, format_config, run
from exfil.features import extras
from models import load_checkpoint, predict_proba
from models.nets import NETWORKS, build

# ----------------------------------------------------------------------------- config
PACKETS = 262144  # packets per timed pass
BATCH_SIZE = 65536  # packets per forward call
REPEATS = 3  # timed passes per network (the best is reported)
THREADS = 0  # torch CPU threads (0: torch's default, usually the core count)
DEVICES = ["cpu", "cuda"]  # devices to try (cuda skipped when absent)
CHECKPOINTS: list[str] = []  # checkpoints to time instead of random-weight default networks
SEED = 1  # seeds the synthetic inputs and weights
# -----------------------------------------------------------------------------


def synthetic_inputs(n: int, seed: int) -> dict:
    """Unigram-like rows and names 8..67 bytes long (the mix of benign and DET-style names)."""
    rng = np.random.default_rng(seed)
    unigrams = np.where(rng.random((n, 256)) < 0.08, 1 + rng.random((n, 256)), 0)
    qname_len = np.where(rng.random(n) < 0.2, 67, rng.integers(8, 40, n)).astype(np.int32)
    qname_bytes = rng.integers(45, 123, (n, 256), dtype=np.uint8)
    qname_bytes[np.arange(256) >= qname_len[:, None]] = 0
    return {
        "unigrams": unigrams.astype(np.float32),
        "qname_bytes": qname_bytes,
        "qname_len": qname_len,
    }


def with_extra_columns(data: dict, meta: dict) -> dict:
    """The extra features of the synthetic names, for a checkpoint trained with ng.py --extras.

    Computed by ng.py's own function, so their scale is realistic (random columns would
    saturate the sigmoids into subnormal floats and time something no capture produces).
    """
    names = tuple(meta.get("features", {}).get("extras") or [])
    if not names:
        return data
    batch = SimpleNamespace(qname=data["qname_bytes"], qlen=data["qname_len"].astype(np.int64))
    return {**data, "unigrams": np.hstack([data["unigrams"], extras(batch, names)])}


def time_model(model, meta: dict, data: dict, repeats: int) -> float:
    """Best packets/s over `repeats` passes, after one warm-up pass."""
    data = with_extra_columns(data, meta)
    best = float("inf")
    for i in range(repeats + 1):
        if data["device"] == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        predict_proba(
            model,
            meta,
            data["unigrams"],
            data["qname_bytes"],
            data["qname_len"],
            batch_size=BATCH_SIZE,
        )
        if data["device"] == "cuda":
            torch.cuda.synchronize()
        if i:  # the first pass warms up allocators and kernels
            best = min(best, time.perf_counter() - began)
    return len(data["unigrams"]) / best


def main() -> int:
    config = configure(globals())
    print(format_config(config))
    if THREADS > 0:
        torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    data = synthetic_inputs(PACKETS, SEED)
    models = []
    for path in CHECKPOINTS:
        models.append((Path(path).stem, *load_checkpoint(path)))
    if not CHECKPOINTS:
        for network, (_, cfg) in NETWORKS.items():
            models.append((network, build(network, asdict(cfg())), {"network": network}))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{PACKETS} packets, batch {BATCH_SIZE}"
    )
    print(f"{'network':<10} {'device':<6} {'packets/s':>14}")
    for device in DEVICES:
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda       (no CUDA device: skipped)")
            continue
        for name, model, meta in models:
            rate = time_model(model.to(device).eval(), meta, {**data, "device": device}, REPEATS)
            print(f"{name:<10} {device:<6} {rate:>14,.0f}")
    return 0


if __name__ == "__main__":
    run(main)
