"""Compiled per-name loops (numba), each beside the pure-numpy code it must agree with.

A name's length, labels, longest label, character shares and entropy are a loop over its bytes;
numpy does them as a dozen whole-chunk passes over the names laid end to end, numba as one pass
per name: 0.05 s per 300,000 names against 0.34 s. Opt-in, with EXFIL_KERNELS=numba in the
environment: loading numba costs about 0.5 s and 90 MiB of RSS a process, which on a
1M-packet detect.py run ate most of what the loop saves (1.00-1.08x end to end, 12-16% in
process at steady state) and would break detect.py's flat memory (peak RSS 100,000 -> 2,000,000
packets: +19% in numpy, +41% with numba). Without numba, or without the variable, every caller
takes the numpy path; the tests hold the two to the same values and verdicts.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

KERNELS_ENV = "EXFIL_KERNELS"  # "numba": the compiled kernels; anything else: numpy
# the columns name_stats gives, in order (a subset of features.EXTRA_FEATURES)
STATS = ("name_len", "labels", "longest_label", "digit_ratio", "upper_ratio", "other_ratio",
         "entropy")  # fmt: skip

_compiled: dict[str, Callable] = {}


def _build() -> Callable | None:
    """The compiled name_stats loop, or None where numba is missing or turned off."""
    if os.environ.get(KERNELS_ENV, "").lower() != "numba":
        return None
    if "name_stats" in _compiled:
        return _compiled["name_stats"]
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=True, nogil=True)
    def name_stats(qname: np.ndarray, qlen: np.ndarray, out: np.ndarray) -> None:
        counts = np.zeros(256, np.int64)
        for i in range(qname.shape[0]):
            length = min(qlen[i], qname.shape[1])
            dots = digits = upper = other = run = longest = 0
            for j in range(length):
                byte = qname[i, j]
                counts[byte] += 1
                if byte == 46:  # "."
                    dots += 1
                    longest = max(longest, run)
                    run = 0
                    continue
                run += 1
                if 48 <= byte <= 57:
                    digits += 1
                elif 65 <= byte <= 90:
                    upper += 1
                elif not (97 <= byte <= 122 or byte == 45 or byte == 95):  # "-", "_"
                    other += 1
            longest = max(longest, run)
            size = max(length, 1)
            entropy = 0.0
            for j in range(length):  # each distinct byte once: its count is zeroed after
                count = counts[qname[i, j]]
                if count:
                    entropy += count * (np.log2(size) - np.log2(count)) / size
                    counts[qname[i, j]] = 0
            letters = max(length - dots, 1)
            out[i, 0] = length
            out[i, 1] = dots + 1 if length > 0 else 0
            out[i, 2] = longest
            out[i, 3] = digits / letters
            out[i, 4] = upper / letters
            out[i, 5] = other / letters
            out[i, 6] = entropy

    _compiled["name_stats"] = name_stats
    return name_stats


def compiled() -> bool:
    """Whether the compiled kernels are in use (numba importable and not turned off)."""
    return _build() is not None


def name_stats(qname: np.ndarray, qlen: np.ndarray) -> np.ndarray | None:
    """float64 (n, len(STATS)) of zero-padded name rows, or None where the compiled kernel is
    not in use: the caller then takes its numpy path."""
    kernel = _build()
    if kernel is None:
        return None
    out = np.empty((len(qlen), len(STATS)), np.float64)
    names = np.ascontiguousarray(qname, np.uint8)
    if names.ndim != 2 or names.shape[1] == 0:
        names = np.zeros((len(qlen), 1), np.uint8)
    kernel(names, np.asarray(qlen, np.int64), out)
    return out
