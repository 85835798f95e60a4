"""Per-packet features from DnsBatch rows: 256-bin byte histograms, name bytes, extras.

    from exfil.features import unigrams, qname_matrix
    vectors = unigrams(batch, scope="qname", transform="log1p")   # float32 (n, 256)
    names, lengths = qname_matrix(batch, width=256)                  # uint8 (n, 256), int32 (n,)

Scopes (which bytes are counted):
- `qname`: the question name in presentation form (labels joined by '.'); the default.
- `dns`: the whole DNS message with its id and every resource record's TTL zeroed, so neither
  the resolver's ids nor the TTLs a server chose can tell hosts apart (leakage).
- `udp`: the original's UDP header + DNS message, untouched; it leaks ports, ids, checksums and
  TTLs and is kept only to reproduce the original. For DNS over TCP the 2-byte length prefix
  stands in for the UDP header.
Transforms of a count c: `log1p` = the original's 1 + ln(c) for c > 0 else 0, `log2` and `log10`
the same with those bases, `raw` = c, `l1` = c / (bytes in scope). Nothing here depends on a
label. Every function works row by row, so chunked use gives exactly the one-shot result.
"""

from __future__ import annotations

import functools
from typing import Literal, get_args

import numpy as np

from exfil.dnsparse import PREFIX_MASK, QNAME_MAX, ragged, rr_ttl_offsets
from exfil.kernels import STATS, name_stats
from exfil.pcapformat import window

Scope = Literal["qname", "dns", "udp"]
Transform = Literal["log1p", "raw", "log2", "log10", "l1"]
SCOPES, TRANSFORMS = get_args(Scope), get_args(Transform)
BLOCK_ROWS = 512  # rows histogrammed together: the int64 count buffer (1 MiB) stays in cache
NAME_BLOCK_ROWS = 1024  # the same for names (at most 128 bins per row for ASCII names)
Extra = Literal[  # optional hand-made features (see `extras`)
    "name_len",  # bytes in the presentation name
    "labels",  # label count
    "longest_label",  # bytes in the longest label
    "digit_ratio",  # share of digits in the name (dots excluded)
    "upper_ratio",  # share of upper-case letters
    "other_ratio",  # share of bytes that are not letters, digits, '-' or '_'
    "entropy",  # Shannon entropy of the name's bytes, bits per byte
    "qtype",  # query type number
]
EXTRA_FEATURES = get_args(Extra)
# what ng.py writes and the unigram networks use by default: every name feature, not qtype
# (which query types appear is a choice of whoever made the traffic, not a property of names).
# With case folding (FeatureSettings.fold_case) upper_ratio is 0 and best left out.
NAME_FEATURES = EXTRA_FEATURES[:-1]
LOWER = np.arange(256, dtype=np.uint8)
LOWER[ord("A") : ord("Z") + 1] += 32  # ASCII case folding, a table lookup per byte


# --------------------------------------------------------------------------- bytes per scope
def scope_bytes(batch, scope: str = "qname") -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """(byte values, row of each value, bytes per row) of the scope, rows in batch order."""
    n = len(batch.qlen)
    if scope == "qname":
        width = batch.qname.shape[1]
        pos, row = ragged(np.arange(n, dtype=np.int64) * width, batch.qlen)
        return batch.qname.reshape(-1)[pos], row, batch.qlen.astype(np.int64)
    if scope == "udp":
        lengths = batch.msg_off + batch.msg_len - batch.l4_off
        pos, row = ragged(batch.l4_off, lengths)
        return batch.data.take(pos), row, lengths
    if scope != "dns":
        raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")
    lengths = np.asarray(batch.msg_len, dtype=np.int64)
    pos, row = ragged(batch.msg_off, lengths)
    values = batch.data.take(pos)  # a copy: the capture itself is never written
    first = np.cumsum(lengths) - lengths
    values[first[lengths >= 2]] = 0  # the id
    values[first[lengths >= 2] + 1] = 0
    ttl_row, ttl_pos = rr_ttl_offsets(batch.data, batch.msg_off, lengths)
    at = (first[ttl_row] + ttl_pos - batch.msg_off[ttl_row])[:, None] + np.arange(4)
    values[at.reshape(-1)] = 0
    return values, row, lengths


# --------------------------------------------------------------------------- histograms
@functools.lru_cache(maxsize=8)
def _lookup(transform: str, largest: int) -> np.ndarray:
    """Value of each count 0..largest under the transform (l1 is divided later)."""
    counts = np.arange(largest + 1, dtype=np.float64)
    if transform in ("raw", "l1"):
        return counts.astype(np.float32)
    log = {"log1p": np.log, "log2": np.log2, "log10": np.log10}.get(transform)
    if log is None:
        raise ValueError(f"unknown transform {transform!r}; expected one of {TRANSFORMS}")
    table = np.zeros(largest + 1, dtype=np.float64)
    table[1:] = 1.0 + log(counts[1:])
    table = table.astype(np.float32)
    table.flags.writeable = False  # shared between calls
    return table


def _transform(out: np.ndarray, counts: np.ndarray, table: np.ndarray, lengths, transform) -> None:  # noqa: ANN001
    """out (rows, 256) <- transformed counts (rows, 256): every cell written, zeros included.

    One table lookup per cell (`take` with mode="wrap" skips the per-index bounds check; the
    counts are always inside the table) costs less than finding and scattering the non-zero
    cells, and it leaves no need to zero `out` first.
    """
    np.take(table, counts, out=out, mode="wrap")
    if transform == "l1":
        out /= np.maximum(lengths, 1)[:, None]


def _output(out: np.ndarray | None, n: int) -> np.ndarray:
    return np.empty((n, 256), dtype=np.float32) if out is None else out


def transform_counts(counts: np.ndarray, transform: str) -> np.ndarray:
    """float32 (n, 256) unigrams from stored raw counts (ng.py's compact unigrams.npy): the same
    table lookup (and l1 division by the row's byte count) as computing them from packets."""
    counts = np.asarray(counts)
    out = np.empty(counts.shape, np.float32)
    largest = int(counts.max()) if counts.size else 0
    table = _lookup(transform, largest)
    for first in range(0, len(counts), 1 << 16):  # bounded temporaries
        part = slice(first, first + (1 << 16))
        block = counts[part].astype(np.intp)
        _transform(out[part], block, table, block.sum(axis=1), transform)
    return out


def histograms(values, row, lengths, transform: str = "log1p", out=None) -> np.ndarray:  # noqa: ANN001
    """Transformed 256-bin counts per row from flattened (value, row) pairs sorted by row."""
    n = len(lengths)
    out = _output(out, n)
    table = _lookup(transform, int(lengths.max()) if n else 0)
    bounds = np.searchsorted(row, np.arange(0, n + BLOCK_ROWS, BLOCK_ROWS))
    for block, first in enumerate(range(0, n, BLOCK_ROWS)):
        a, b = bounds[block], bounds[block + 1]
        rows = min(BLOCK_ROWS, n - first)
        keys = (row[a:b] - first) * 256 + values[a:b]
        counts = np.bincount(keys, minlength=rows * 256).reshape(rows, 256)
        part = slice(first, first + rows)
        _transform(out[part], counts, table, lengths[part], transform)
    return out


_BANDS = ((0, 32), (32, 64), (64, 128), (128, 256))  # name columns counted together
_COVER = np.repeat([32, 64, 128, 256], [33, 32, 64, 128])  # name length -> columns counted
_BASES = {bins: np.arange(NAME_BLOCK_ROWS, dtype=np.intp)[:, None] * bins for bins in (128, 256)}


def name_histograms(
    names: np.ndarray, qlen: np.ndarray, transform: str = "log1p", out=None
) -> np.ndarray:  # noqa: ANN001,E501
    """Histograms of zero-padded name rows, straight from the (n, W) name matrix.

    Per block of rows, one bincount of row * bins + byte keys. Column bands (0-32, 32-64, ...)
    are only counted for the rows long enough to reach them, so one long name does not make
    every short name of its block pay for its padding; the padding that is counted (as byte
    0) is taken off afterwards. Blocks of ASCII names count 128 bins, not 256.
    """
    n = len(qlen)
    out = _output(out, n)
    table = _lookup(transform, QNAME_MAX)
    for first in range(0, n, NAME_BLOCK_ROWS):
        size = qlen[first : first + NAME_BLOCK_ROWS].astype(np.intp)
        rows, width = len(size), int(size.max()) if len(size) else 0
        part = slice(first, first + rows)
        if not width:
            out[part] = 0
            continue
        block = names[part]
        bins = 128 if int(block[:, :width].max()) < 128 else 256
        base = _BASES[bins][:rows]
        keys = []
        for lo, hi in _BANDS:
            if width <= lo:
                break
            if lo:
                sub = np.flatnonzero(size > lo)
                keys.append(np.add(block[sub, lo : min(hi, width)], base[sub], dtype=np.intp))
            else:
                keys.append(np.add(block[:, : min(hi, width)], base, dtype=np.intp))
        keys = np.concatenate([k.reshape(-1) for k in keys])
        counts = np.bincount(keys, minlength=rows * bins).reshape(rows, bins)
        counts[:, 0] -= np.minimum(_COVER[size], width) - size  # byte 0 in the padding
        if bins == 256:
            _transform(out[part], counts, table, size, transform)
        else:
            low = np.empty((rows, bins), dtype=np.float32)  # contiguous: a faster take
            _transform(low, counts, table, size, transform)
            out[part, :bins] = low
            out[part, bins:] = 0
    return out


def _span_cover(size: np.ndarray) -> np.ndarray:
    """Columns counted for a row of `size` bytes in span_histograms' bands."""
    small = np.maximum(-(-size // 64), 1) * 64
    return np.where(size > 256, -(-size // 256) * 256, small)


def span_histograms(
    data: np.ndarray, starts, lengths, transform: str = "log1p", out=None, zeroed=None
) -> np.ndarray:  # noqa: ANN001
    """Transformed 256-bin counts of data[start : start + length] per row, as `histograms`.

    `zeroed` (rows, positions), if given, names bytes counted as 0 (ids, TTLs). The bytes are
    read as row copies in bands of columns (64 wide up to 256, then 256 wide), each band only
    for the rows that reach it; bytes past a row's end are masked to 0 and taken off byte 0's
    count afterwards. Nothing is flattened byte by byte; the capture itself is never written.
    """
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    n = len(lengths)
    out = _output(out, n)
    table = _lookup(transform, int(lengths.max()) if n else 0)
    z_row, z_pos = (np.zeros(0, np.int64),) * 2 if zeroed is None else zeroed
    order = np.argsort(z_row, kind="stable")
    z_row, z_pos = z_row[order], z_pos[order]
    z_bounds = np.searchsorted(z_row, np.arange(0, n + BLOCK_ROWS, BLOCK_ROWS))
    for block, first in enumerate(range(0, n, BLOCK_ROWS)):
        size, begin = lengths[first : first + BLOCK_ROWS], starts[first : first + BLOCK_ROWS]
        rows, width = len(size), int(size.max())
        zr = z_row[z_bounds[block] : z_bounds[block + 1]] - first
        zp = z_pos[z_bounds[block] : z_bounds[block + 1]] - begin[zr]  # offset in its row
        keys, edges = [], [*range(0, 256, 64), *range(256, max(width, 1), 256)]
        for lo, hi in zip(edges, [*edges[1:], 1 << 62], strict=True):
            if lo >= max(width, 1):
                break
            sub = np.arange(rows) if not lo else np.flatnonzero(size > lo)
            span = min(hi, max(width, 1)) - lo
            rows_here = window(data, begin[sub] + lo, span)
            rows_here &= PREFIX_MASK[:, :span][np.clip(size[sub] - lo, 0, span)]
            inside = (zp >= lo) & (zp < lo + span)
            at = np.searchsorted(sub, zr[inside]) * span + zp[inside] - lo
            rows_here.reshape(-1)[at] = 0
            keys.append(np.add(rows_here, _BASES[256][sub], dtype=np.intp).reshape(-1))
        counts = np.bincount(np.concatenate(keys), minlength=rows * 256).reshape(rows, 256)
        covered = np.minimum(_span_cover(size), max(width, 1))
        counts[:, 0] -= covered - size  # byte 0 in the masked padding
        _transform(out[first : first + rows], counts, table, size, transform)
    return out


def unigrams(batch, scope: str = "qname", transform: str = "log1p", out=None) -> np.ndarray:  # noqa: ANN001
    """float32 (n, 256) byte histogram of each DNS packet (see the module docstring).

    `out`, if given, is a float32 (n, 256) array that is overwritten (it need not be zeroed);
    reusing one buffer across chunks saves the page faults of a fresh allocation (the dominant
    cost on some machines).
    """
    if scope == "qname":
        return name_histograms(batch.qname, batch.qlen, transform, out)
    if scope == "udp":
        lengths = batch.msg_off + batch.msg_len - batch.l4_off
        return span_histograms(batch.data, batch.l4_off, lengths, transform, out)
    if scope != "dns":
        raise ValueError(f"unknown scope {scope!r}; expected one of {SCOPES}")
    lengths = np.asarray(batch.msg_len, dtype=np.int64)
    ids = np.flatnonzero(lengths >= 2)
    ttl_row, ttl_pos = rr_ttl_offsets(batch.data, batch.msg_off, lengths)
    rows = np.concatenate([ids, ids, np.repeat(ttl_row, 4)])
    at = (ttl_pos[:, None] + np.arange(4)).reshape(-1)
    positions = np.concatenate([batch.msg_off[ids], batch.msg_off[ids] + 1, at])
    return span_histograms(batch.data, batch.msg_off, lengths, transform, out, (rows, positions))


def qname_matrix(batch, width: int = QNAME_MAX) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Question names as uint8 (n, width), zero-padded or cut, and their true lengths."""
    names = batch.qname[:, :width]
    if width > names.shape[1]:
        padded = np.empty((len(names), width), dtype=np.uint8)
        padded[:, : names.shape[1]] = names
        padded[:, names.shape[1] :] = 0
        names = padded
    return np.ascontiguousarray(names), batch.qlen.astype(np.int32)


# --------------------------------------------------------------------------- extras
_DIGIT = np.zeros(256, bool)
_DIGIT[ord("0") : ord("9") + 1] = True
_UPPER = np.zeros(256, bool)
_UPPER[ord("A") : ord("Z") + 1] = True
_WORDY = _DIGIT | _UPPER
_WORDY[ord("a") : ord("z") + 1] = True
_WORDY[[ord("-"), ord("_"), ord(".")]] = True


def _log2_table(top: int) -> np.ndarray:
    """log2(0..top), with 0 for 0: counts and lengths are small integers, so look them up."""
    return np.log2(np.maximum(np.arange(top + 1), 1))


_LOG2 = _log2_table(1024)


def extras(batch, names: tuple[str, ...] = EXTRA_FEATURES) -> np.ndarray:  # noqa: ANN001
    """float32 (n, len(names)) hand-made features of the question name (EXTRA_FEATURES).

    This runs on every packet detect.py scores: `numpy_extras`, or one compiled pass per name
    with EXFIL_KERNELS=numba (exfil/kernels.py); the two agree (tests/test_kernels.py).
    """
    unknown = set(names) - set(EXTRA_FEATURES)
    if unknown:
        raise ValueError(f"unknown extra features {sorted(unknown)}; known: {EXTRA_FEATURES}")
    stats = name_stats(batch.qname, batch.qlen) if set(names) & set(STATS) else None
    if stats is None:
        return numpy_extras(batch, names)
    columns = [batch.qtype if key == "qtype" else stats[:, STATS.index(key)] for key in names]
    return np.stack([np.asarray(c, np.float32) for c in columns], 1)


def numpy_extras(batch, names: tuple[str, ...] = EXTRA_FEATURES) -> np.ndarray:  # noqa: ANN001
    """extras in whole-chunk numpy: over the names' bytes laid end to end (no (n, width)
    matrices), so the cost follows the bytes actually present."""
    n = len(batch.qlen)
    qlen = np.asarray(batch.qlen, dtype=np.int64)
    values, row, _ = scope_bytes(batch, "qname")
    dot = values == ord(".")
    dots = np.bincount(row, weights=dot, minlength=n)
    letters = np.maximum(qlen - dots, 1)
    # labels: a run starts at each name's first byte and after each dot
    first = np.ones(len(values), bool)
    first[1:] = (row[1:] != row[:-1]) | dot[:-1]
    run = np.cumsum(first) - 1
    run_len = np.bincount(run, weights=~dot) if len(values) else np.zeros(0)
    longest = np.zeros(n)
    np.maximum.at(longest, row[first], run_len)
    # entropy: a byte seen c times in a name of L bytes adds -(c/L) log2(c/L); spread over its
    # c occurrences that is -log2(c/L) / L each, so no per-name histogram is ever scanned
    key = row * 256 + values
    seen = np.bincount(key, minlength=n * 256)[key]
    size = np.maximum(qlen, 1)[row]
    log2 = _LOG2 if n == 0 or qlen.max() < len(_LOG2) else _log2_table(int(qlen.max()))
    entropy = np.bincount(row, weights=(log2[size] - log2[seen]) / size, minlength=n)
    table = {
        "name_len": lambda: qlen,
        "labels": lambda: np.where(qlen > 0, dots + 1, 0),
        "longest_label": lambda: longest,
        "digit_ratio": lambda: np.bincount(row, weights=_DIGIT[values], minlength=n) / letters,
        "upper_ratio": lambda: np.bincount(row, weights=_UPPER[values], minlength=n) / letters,
        "other_ratio": lambda: np.bincount(row, weights=~_WORDY[values], minlength=n) / letters,
        "entropy": lambda: entropy,
        "qtype": lambda: batch.qtype,
    }
    unknown = set(names) - set(table)
    if unknown:
        raise ValueError(f"unknown extra features {sorted(unknown)}; known: {EXTRA_FEATURES}")
    columns = [np.asarray(table[key](), np.float32) for key in names]
    return np.stack(columns, 1) if columns else np.zeros((n, 0), np.float32)
