"""Training copies of exfiltration names with their per-session constants redrawn.

Every name of one exfiltration shares two constants: a leading session id (DET's job id; iodine,
dnscat2 and others carry one too) and the attacker's domain. A capture holds a dozen sessions, so
a network that reads the name's bytes learns those constants instead of the encoded payload: the
LSTM scored a test name `qh8fN2v6cp890cc9...paint-sand.net` 0.26, and 0.95 once its id was
replaced by a training session's (0.99 with that session's domain instead). The copies made
here keep everything the payload says (label lengths, alphabet, layout) and redraw the
constants per copy: the shared leading bytes become random characters of the same kind (lower
case, upper case, digit), and the shared trailing labels (the domain) become a registered
domain looked up in the capture's benign traffic, so the domain carries no label either.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np

from exfil.domains import registered_domain
from exfil.features import NAME_FEATURES, extras, unigrams
from models.data import Dataset

_KINDS = ((ord("a"), 26), (ord("A"), 26), (ord("0"), 10))  # (first byte, size) of each kind


def _names(qname_bytes: np.ndarray, qname_len: np.ndarray) -> list[bytes]:
    return [row[:n].tobytes() for row, n in zip(qname_bytes, qname_len, strict=True)]


def benign_domains(qname_bytes: np.ndarray, qname_len: np.ndarray) -> list[bytes]:
    """The distinct registered domains of these (benign) names, sorted (seeded draws repeat)."""
    distinct = set(_names(qname_bytes, qname_len))
    found = {registered_domain(name.decode("ascii", "replace")) for name in distinct}
    return sorted(d.encode("ascii", "replace") for d in found if d != "." and "." in d)


def shared_ends(names: list[bytes]) -> tuple[int, int]:
    """(bytes every name starts with, bytes of whole labels every name ends with).

    The two never overlap, so a name keeps at least one byte that is its own.
    """
    distinct = sorted(set(names))
    if len(distinct) < 2:  # one name: nothing tells its constants from its payload
        return 0, 0
    shortest = min(map(len, distinct))
    suffix = os.path.commonprefix([name[::-1] for name in distinct])[::-1]
    dot = suffix.find(b".")
    tail = len(suffix) - dot - 1 if dot >= 0 else 0  # after the first dot: whole labels only
    tail = min(tail, max(shortest - 1, 0))
    head = min(len(os.path.commonprefix(distinct)), shortest - tail - 1)
    return max(head, 0), tail


def _redraw_kinds(head: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each letter or digit of `head` (uint8) replaced by a random one of its kind."""
    out = head.copy()
    for first, size in _KINDS:
        kind = (head >= first) & (head < first + size)
        out[kind] = first + rng.integers(0, size, int(kind.sum()))
    return out


def session_copies(
    qname_bytes: np.ndarray,
    qname_len: np.ndarray,
    sessions: np.ndarray,
    domains: list[bytes],
    copies: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """`copies` redrawn copies of each row (all rows of one exfiltration share a `sessions` key).

    Returns (qname_bytes, qname_len) of the copies, `copies` * len(rows) of them, in the order
    copy 0 of every row, copy 1 of every row, ... (so labels are the rows' labels tiled).
    Rows of sessions whose names are all one name are copied unchanged.
    """
    width = qname_bytes.shape[1]
    names = _names(qname_bytes, qname_len)
    out_bytes = np.zeros((copies * len(names), width), np.uint8)
    out_len = np.zeros(copies * len(names), np.int32)
    ends = {
        k: shared_ends([names[i] for i in np.flatnonzero(sessions == k)]) for k in set(sessions)
    }
    for copy in range(copies):
        for i, (name, key) in enumerate(zip(names, sessions, strict=True)):
            head, tail = ends[key]
            start = np.frombuffer(name[:head], np.uint8)
            middle = name[head : len(name) - tail]
            end = name[len(name) - tail :]  # the shared labels, after a dot kept in `middle`
            if tail and domains:
                end = domains[rng.integers(len(domains))]
            new = (_redraw_kinds(start, rng).tobytes() + middle + end)[:width]
            row = copy * len(names) + i
            out_bytes[row, : len(new)] = np.frombuffer(new, np.uint8)
            out_len[row] = len(new)
    return out_bytes, out_len


def session_keys(data: Dataset, rows: np.ndarray) -> np.ndarray:
    """One key per row of `rows` for the exfiltration it belongs to: its file id (files.npy) or,
    for rows without one (labels made by another tool), its registered domain."""
    files = data.files[rows] if data.files is not None else np.full(len(rows), -1)
    keys = files.astype(np.int64)
    loose = np.flatnonzero(keys < 0)
    if len(loose):
        names = _names(data.qname_bytes[rows[loose]], data.qname_len[rows[loose]])
        domains = [registered_domain(name.decode("ascii", "replace")) for name in names]
        _, index = np.unique(np.array(domains, dtype=object), return_inverse=True)
        keys[loose] = -1 - index
    return keys


def with_session_copies(data: Dataset, index: np.ndarray, copies: int, seed: int) -> Dataset:
    """The rows `index` of `data` (question names, labels, files), then `copies` redrawn copies
    of its malicious rows, grouped into exfiltrations by session_keys. Donor domains come from
    the same rows' benign traffic, so validation rows never leak into training."""
    part = data.subset(index)
    if copies <= 0:
        return part
    malicious = np.flatnonzero(part.labels == 1)
    benign = part.labels == 0
    domains = benign_domains(part.qname_bytes[benign], part.qname_len[benign])
    rng = np.random.default_rng(seed)
    keys = session_keys(part, malicious)
    qbytes, qlen = session_copies(
        part.qname_bytes[malicious], part.qname_len[malicious], keys, domains, copies, rng
    )
    files = part.files if part.files is not None else np.full(len(part), -1, np.int32)
    side = None  # the context columns: a copy keeps its original's (its domain's history)
    if part.extras is not None:
        side = np.concatenate([part.extras, np.tile(part.extras[malicious], (copies, 1))])
    return Dataset(
        data.folder,
        np.concatenate([part.labels, np.tile(part.labels[malicious], copies)]),
        data.features,
        data.info,
        qname_bytes=np.concatenate([part.qname_bytes, qbytes]),
        qname_len=np.concatenate([part.qname_len, qlen]),
        files=np.concatenate([files, np.tile(files[malicious], copies)]),
        extras=side,
    )


def with_unigram_session_copies(
    data: Dataset, index: np.ndarray, copies: int, seed: int
) -> Dataset:
    """with_session_copies for the unigram networks: the copies' histograms and name features
    are computed from their redrawn names with the dataset's own recipe (features.json), and
    every other column (the per-domain context, qtype) is the original row's.

    Only where the histogram counts the name (scope "qname"): a histogram of the whole message
    cannot be redrawn from the name alone, so `data`'s rows come back as they are.
    """
    if copies <= 0 or data.features.get("scope", "qname") != "qname" or data.qname_bytes is None:
        return data.subset(index)
    names = with_session_copies(data, index, copies, seed)  # labels, files: originals + copies
    originals = data.unigrams[index]
    rows = np.tile(originals[data.labels[index] == 1], (copies, 1))
    batch = SimpleNamespace(
        qname=names.qname_bytes[len(index) :], qlen=names.qname_len[len(index) :]
    )
    bins = int(data.features.get("dim", 256))
    rows[:, :bins] = unigrams(batch, "qname", data.features.get("transform", "log1p"))
    chosen = list(data.features.get("extras") or [])
    redrawn = [name for name in chosen if name in NAME_FEATURES]  # qtype, ctx_*: the original's
    if redrawn:
        columns = [bins + chosen.index(name) for name in redrawn]
        rows[:, columns] = extras(batch, tuple(redrawn))
    return Dataset(
        data.folder,
        names.labels,
        data.features,
        data.info,
        files=names.files,
        unigrams=np.concatenate([originals, rows]).astype(np.float32),
    )
