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

import numpy as np

from exfil.dnsparse import QNAME_MAX, ragged, rr_ttl_offsets

SCOPES = ("qname", "dns", "udp")
TRANSFORMS = ("log1p", "raw", "log2", "log10", "l1")
BLOCK_ROWS = 512  # rows histogrammed together: the int64 count buffer (1 MiB) stays in cache
EXTRA_FEATURES = (  # optional hand-made features (see `extras`)
    "name_len",  # bytes in the presentation name
    "labels",  # label count
    "longest_label",  # bytes in the longest label
    "digit_ratio",  # share of digits in the name (dots excluded)
    "upper_ratio",  # share of upper-case letters
    "other_ratio",  # share of bytes that are not letters, digits, '-' or '_'
    "entropy",  # Shannon entropy of the name's bytes, bits per byte
    "qtype",  # query type number
)


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
    return table.astype(np.float32)


def _fill(out: np.ndarray, counts: np.ndarray, table: np.ndarray, lengths, transform) -> None:  # noqa: ANN001
    """out (rows, 256) <- transformed counts (rows * 256,), touching only non-zero bins."""
    hit = np.flatnonzero(counts)
    flat = out.reshape(-1)
    flat[hit] = table[counts[hit]]
    if transform == "l1":
        flat[hit] /= lengths[hit // 256]


def histograms(values, row, lengths, transform: str = "log1p", out=None) -> np.ndarray:  # noqa: ANN001
    """Transformed 256-bin counts per row from flattened (value, row) pairs sorted by row."""
    n = len(lengths)
    out = np.zeros((n, 256), dtype=np.float32) if out is None else out
    table = _lookup(transform, int(lengths.max()) if n else 0)
    bounds = np.searchsorted(row, np.arange(0, n + BLOCK_ROWS, BLOCK_ROWS))
    for block, first in enumerate(range(0, n, BLOCK_ROWS)):
        a, b = bounds[block], bounds[block + 1]
        rows = min(BLOCK_ROWS, n - first)
        keys = (row[a:b] - first) * 256 + values[a:b]
        counts = np.bincount(keys, minlength=rows * 256)
        _fill(out[first : first + rows], counts, table, lengths[first : first + rows], transform)
    return out


_COMMON = b"\x00-.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BY_RANK = np.array(list(_COMMON) + [b for b in range(256) if b not in _COMMON], np.intp)
_RANK = np.argsort(_BY_RANK)  # byte -> rank: the usual name bytes come first
_SCATTER = (np.arange(BLOCK_ROWS)[:, None] * 256 + _BY_RANK[: len(_COMMON)]).reshape(-1)


def name_histograms(
    names: np.ndarray, qlen: np.ndarray, transform: str = "log1p", out=None
) -> np.ndarray:  # noqa: ANN001,E501
    """Histograms of zero-padded name rows, counted over the usual name alphabet when it fits.

    Bytes are mapped to ranks with the usual name bytes (letters, digits, '-', '.', padding)
    first; a block of names using only those needs a 65-bin count per row instead of 256, so
    the counting, table lookups and scatter cost a quarter. Blocks with other bytes take 256
    bins. Padding is counted as byte 0, then taken off.
    """
    n = len(qlen)
    out = np.zeros((n, 256), dtype=np.float32) if out is None else out
    table = _lookup(transform, QNAME_MAX)
    flat = out.reshape(-1)
    for first in range(0, n, BLOCK_ROWS):
        size = qlen[first : first + BLOCK_ROWS].astype(np.intp)
        rows, width = len(size), int(size.max()) if len(size) else 0
        if not width:
            continue
        rank = _RANK.take(np.ascontiguousarray(names[first : first + rows, :width]))
        bins = len(_COMMON) if rank.max() < len(_COMMON) else 256
        keys = rank + (np.arange(rows, dtype=np.intp) * bins)[:, None]
        counts = np.bincount(keys.reshape(-1), minlength=rows * bins).reshape(rows, bins)
        counts[:, 0] -= width - size  # rank 0 is byte 0: the padding
        values = table[counts]
        if transform == "l1":
            values /= np.maximum(size, 1)[:, None]
        if bins == 256:
            out[first : first + rows] = values.take(_RANK, axis=1)
        else:
            flat[_SCATTER[: rows * bins] + first * 256] = values.reshape(-1)
    return out


def unigrams(batch, scope: str = "qname", transform: str = "log1p", out=None) -> np.ndarray:  # noqa: ANN001
    """float32 (n, 256) byte histogram of each DNS packet (see the module docstring).

    `out`, if given, must be a zeroed float32 (n, 256) array; reusing one buffer across chunks
    saves the page faults of a fresh allocation (the dominant cost on some machines).
    """
    if scope == "qname":
        return name_histograms(batch.qname, batch.qlen, transform, out)
    values, row, lengths = scope_bytes(batch, scope)
    return histograms(values, row, lengths, transform, out)


def qname_matrix(batch, width: int = QNAME_MAX) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Question names as uint8 (n, width), zero-padded or cut, and their true lengths."""
    names = batch.qname[:, :width]
    if width > names.shape[1]:
        names = np.pad(names, ((0, 0), (0, width - names.shape[1])))
    return np.ascontiguousarray(names), batch.qlen.astype(np.int32)


# --------------------------------------------------------------------------- extras
_DIGIT = np.zeros(256, bool)
_DIGIT[ord("0") : ord("9") + 1] = True
_UPPER = np.zeros(256, bool)
_UPPER[ord("A") : ord("Z") + 1] = True
_WORDY = _DIGIT | _UPPER
_WORDY[ord("a") : ord("z") + 1] = True
_WORDY[[ord("-"), ord("_"), ord(".")]] = True


def extras(batch, names: tuple[str, ...] = EXTRA_FEATURES) -> np.ndarray:  # noqa: ANN001
    """float32 (n, len(names)) hand-made features of the question name (EXTRA_FEATURES)."""
    n, width = batch.qname.shape
    inside = np.arange(width) < batch.qlen[:, None]
    name = batch.qname
    dots = (name == ord(".")) & inside
    letters = np.maximum(batch.qlen - dots.sum(1), 1).astype(np.float32)
    # label lengths: distance between successive dots (and the ends)
    edges = np.where(dots, np.arange(width), -1)
    prev = np.maximum.accumulate(np.concatenate([np.full((n, 1), -1), edges], 1), 1)[:, :-1]
    run = np.where(inside & ~dots, np.arange(width) - prev, 0)
    values, row, lengths = scope_bytes(batch, "qname")
    counts = histograms(values, row, lengths, "raw")
    share = counts / np.maximum(batch.qlen, 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(share > 0, share * np.log2(share), 0).sum(1)
    table = {
        "name_len": lambda: batch.qlen,
        "labels": lambda: np.where(batch.qlen > 0, dots.sum(1) + 1, 0),
        "longest_label": lambda: run.max(1) if width else np.zeros(n),
        "digit_ratio": lambda: (_DIGIT[name] & inside).sum(1) / letters,
        "upper_ratio": lambda: (_UPPER[name] & inside).sum(1) / letters,
        "other_ratio": lambda: (~_WORDY[name] & inside).sum(1) / letters,
        "entropy": lambda: entropy,
        "qtype": lambda: batch.qtype,
    }
    unknown = set(names) - set(table)
    if unknown:
        raise ValueError(f"unknown extra features {sorted(unknown)}; known: {EXTRA_FEATURES}")
    return np.stack([np.asarray(table[key](), np.float32) for key in names], 1).reshape(n, -1)
