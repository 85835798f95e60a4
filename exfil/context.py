"""What each packet's registered domain has been doing: causal per-domain context features.

    context = DomainContext()
    for batch in read_dns(path):                  # capture order
        columns = context.update(batch)           # float32 (n, len(CONTEXT_FEATURES))

A name alone cannot tell a tunnel's short poll from a benign lookup; the domain it sits under can:
a tunnel's domain receives thousands of distinct names, mostly of one length, often TXT / NULL /
CNAME / MX, with large answers. Row i describes packet i and the packets before it only (never a
later one), so a file read in chunks, a file read at once and a live interface give the same
values. Time never enters: counts over the domain's own packets, not rates, so the generator's
synthetic timing cannot leak into a feature (and a slow beacon looks like a fast one).

Memory is bounded: at most `max_domains` domains are tracked (the least recently seen eighth is
evicted when full), and the names already seen are remembered as 64-bit fingerprints of
(domain, name, direction) in one fixed-size table (a new fingerprint overwrites the old one at
its place, so a name not looked up for millions of packets may count as new again). Counts
saturate at CAP and the new-name share is a running average over the domain's own packets, so
values do not drift with the capture's length (a validation block at the end of a capture looks
like its start). Names are case-folded first: DNS 0x20 changes no value here.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Literal

import numpy as np

from exfil.domains import registered_domain_of
from exfil.features import LOWER, extras

CONTEXT_FEATURES = (
    "ctx_packets",  # log(1 + packets under the domain so far), counted up to CAP
    "ctx_names",  # log(1 + distinct names under it so far, up to CAP): new fingerprints
    "ctx_new_share",  # recent packets with a name new to the domain: ~1 a tunnel, ~0 reuse
    "ctx_sub_len",  # mean length of its subdomain parts (the name minus the registered domain)
    "ctx_sub_len_sd",  # their standard deviation: a tunnel's chunks are mostly one length
    "ctx_entropy",  # mean name entropy, bits per byte
    "ctx_a",  # share of A / AAAA queries
    "ctx_txt",  # share of TXT
    "ctx_null",  # share of NULL (iodine's favourite)
    "ctx_cname_mx",  # share of CNAME / MX / SRV (downstream data in a name)
    "ctx_nxdomain",  # share of its responses that are NXDOMAIN
    "ctx_answer_bytes",  # log(1 + mean bytes after the question in its responses)
)
ContextFeature = Literal[CONTEXT_FEATURES]  # the names, for constants that list some
# what the networks read by default: all but the two that describe the answering server. Left
# out, leave-one-family-out recall rose on every family (DET 0.85 -> 0.98, beacon 0.03 -> 0.09,
# DGA 0.27 -> 0.36 for clf): our generator's servers answer in their own way (DET's NXDOMAIN),
# and the networks had learned it. ng.py still writes them.
DEFAULT_CONTEXT = tuple(
    f for f in CONTEXT_FEATURES if f not in ("ctx_nxdomain", "ctx_answer_bytes")
)
TABLE_BITS = 21  # 2^21 fingerprints remembered (16 MB), shared by all domains
CAP = 256  # counts saturate here: a long capture then looks like a short one (stationary)
ALPHA = 1 / 32  # weight of the newest packet in the domain's running new-name share
MAX_DOMAINS = 65_536  # domains tracked at once (about 16 MB of state)
# running sums per domain, in this order (one cumulative sum per chunk updates them all)
_SUMS = ("packets", "responses", "new_queries", "new_responses", "sub_len", "sub_len2", "entropy",
         "a", "txt", "null", "cname_mx", "nxdomain", "answer_bytes")  # fmt: skip
_COLUMN = {name: i for i, name in enumerate(_SUMS)}
_ROUND = 256  # rows per group per step of the vectorised running average
_M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def name_hashes(names: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """uint64 hash of each zero-padded name row (stable across processes, unlike hash()).

    Only the words a name reaches are mixed in, so the matrix's width (the longest name of the
    chunk) does not change a name's hash.
    """
    rows, width = names.shape
    padded = np.zeros((rows, -(-width // 8) * 8), np.uint8)
    padded[:, :width] = names
    words = padded.view("<u8")
    h = np.full(rows, 0x243F6A8885A308D3, np.uint64)
    with np.errstate(over="ignore"):
        for column in range(words.shape[1]):
            mixed = (h ^ words[:, column]) * _M1
            h = np.where(lengths > column * 8, mixed ^ (mixed >> np.uint64(29)), h)
        h = (h ^ (h >> np.uint64(31))) * _M2
    return h ^ (h >> np.uint64(32))


def _running_average(
    x: np.ndarray, groups: np.ndarray, state: np.ndarray, order: np.ndarray
) -> np.ndarray:
    """y = (1 - ALPHA) * y + ALPHA * x over each group's rows in order, from state[group].

    Vectorised with the closed form y_k = d^(k+1) y_start + ALPHA d^k sum_j d^-j x_j, taken
    in rounds of _ROUND rows per group so that d^-j stays small (no overflow, no lost digits).
    `state` is updated; chunking changes the values by rounding only (~1e-12). `order` is
    the stable argsort of `groups`.
    """
    n, decay = len(x), 1.0 - ALPHA
    sorted_groups, values = groups[order], x[order]
    start = np.ones(n, bool)
    start[1:] = sorted_groups[1:] != sorted_groups[:-1]
    rank = np.arange(n) - np.flatnonzero(start)[np.cumsum(start) - 1]
    out = np.empty(n)
    for low in range(0, int(rank.max()) + 1 if n else 0, _ROUND):
        rows = np.flatnonzero((rank >= low) & (rank < low + _ROUND))
        step, group = (rank[rows] - low).astype(np.float64), sorted_groups[rows]
        sums = _sorted_cumsum((values[rows] * decay**-step)[:, None], group)[:, 0]
        y = decay ** (step + 1) * state[group] + ALPHA * decay**step * sums
        out[rows] = y
        last = np.append(group[1:] != group[:-1], True)
        state[group[last]] = y[last]
    result = np.empty(n)
    result[order] = out
    return result


def _digest(domain: str) -> np.uint64:
    """A stable 64-bit digest of a domain (the same whatever the chunking or the process)."""
    return np.uint64(int.from_bytes(hashlib.blake2b(domain.encode(), digest_size=8).digest()))


def _fingerprints(names: np.ndarray, domains: np.ndarray, response: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint of each (name hash, domain id, direction), never 0 (an empty place)."""
    with np.errstate(over="ignore"):
        h = names ^ (domains * _M1) ^ (response.astype(np.uint64) * _M2)
        h = (h ^ (h >> np.uint64(30))) * _M2
        h ^= h >> np.uint64(31)
    return h | np.uint64(1)


def _sorted_cumsum(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Inclusive running sums of `values` (n, k) within each group, rows already grouped."""
    sums = np.cumsum(values, axis=0)
    start = np.ones(len(groups), bool)
    start[1:] = groups[1:] != groups[:-1]
    first = np.flatnonzero(start)
    before = np.zeros_like(sums[first])
    before[1:] = sums[first[1:] - 1]
    sums -= np.repeat(before, np.diff(np.append(first, len(groups))), axis=0)
    return sums


def _grouped_cumsum(values: np.ndarray, groups: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Inclusive running sums of `values` (n, k) within each group, rows in their own order;
    `order` is the stable argsort of `groups` (shared with the running average)."""
    out = np.empty((len(groups), values.shape[1]), values.dtype)
    out[order] = _sorted_cumsum(values[order], groups[order])
    return out


class DomainContext:
    """Streaming per-registered-domain state; `update(batch)` gives each packet's context row."""

    def __init__(self, max_domains: int = MAX_DOMAINS) -> None:
        self.max_domains = max_domains
        self.slot_of: dict[str, int] = {}
        self.domain_in: list[str | None] = [None] * max_domains
        self.free = list(range(max_domains - 1, -1, -1))
        self.domain_id = np.zeros(max_domains, np.uint64)  # a digest of the slot's domain
        self.seen = np.zeros(1 << TABLE_BITS, np.uint64)  # fingerprints of names seen
        self.sums = np.zeros((max_domains, len(_SUMS)), np.float64)
        self.fresh = np.zeros(max_domains, np.float64)  # exponential average of "name is new"
        self.last_seen = np.zeros(max_domains, np.int64)
        self.clock = 0
        # the last batch's registered domains (distinct, and each row's index into them): the
        # alert book groups by the same domains, so detect.py hands these on (no second look-up)
        self.row_domains: tuple[list[str], np.ndarray] = ([], np.zeros(0, np.int64))

    # ------------------------------------------------------------------ domains and slots
    def _evict(self) -> None:
        """Free the least recently seen eighth of the slots (their state starts again)."""
        used = np.flatnonzero(np.array([d is not None for d in self.domain_in]))
        count = max(len(used) // 8, 1)
        oldest = used[np.argpartition(self.last_seen[used], count - 1)[:count]]
        for slot in oldest.tolist():
            del self.slot_of[self.domain_in[slot]]
            self.domain_in[slot] = None
            self.free.append(slot)
        self.sums[oldest] = 0
        self.fresh[oldest] = 0

    def _slots(self, unique_names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slot, registered-domain length) of each unique folded name row."""
        width = unique_names.shape[1]
        keys = unique_names.view(f"S{width}").ravel().tolist() if width else [b""]
        slots = np.empty(len(keys), np.int64)
        lengths = np.empty(len(keys), np.int64)
        pinned: set[int] = set()  # slots of this chunk: never evicted while it is processed
        for i, key in enumerate(keys):
            domain = registered_domain_of(key)
            slot = self.slot_of.get(domain)
            if slot is None:
                if not self.free:
                    self._evict_keeping(pinned)
                slot = self.free.pop()
                self.slot_of[domain] = slot
                self.domain_in[slot] = domain
                self.domain_id[slot] = _digest(domain)
            pinned.add(slot)
            slots[i], lengths[i] = slot, len(domain) if domain != "." else 0
        return slots, lengths

    def _evict_keeping(self, pinned: set[int]) -> None:
        saved = self.last_seen[list(pinned)].copy() if pinned else None
        if pinned:
            self.last_seen[list(pinned)] = np.iinfo(np.int64).max  # newest: kept
        self._evict()
        if pinned:
            self.last_seen[list(pinned)] = saved

    def _remember(self, fingerprint: np.ndarray) -> np.ndarray:
        """Rows whose fingerprint was not in its place; every row then writes its own there.

        Exactly the packet-by-packet table, vectorised: rows sorted by place (stable), each
        compared with the row before it at the same place (the first with the table).
        """
        place = (fingerprint >> np.uint64(64 - TABLE_BITS)).astype(np.intp)
        order = np.argsort(place, kind="stable")
        at, prints = place[order], fingerprint[order]
        start = np.ones(len(order), bool)
        start[1:] = at[1:] != at[:-1]
        before = np.empty_like(prints)
        before[1:] = prints[:-1]
        before[start] = self.seen[at[start]]
        last = np.append(start[1:], True)
        self.seen[at[last]] = prints[last]
        return np.sort(order[before != prints])

    # ------------------------------------------------------------------ the update
    def update(self, batch, folded: np.ndarray | None = None) -> np.ndarray:  # noqa: ANN001
        """Fold in one batch (capture order); float32 (n, len(CONTEXT_FEATURES)) rows.

        `batch` is a DnsBatch or its name columns; `folded`, if the caller has it, is
        LOWER[batch.qname] (the recipe folds case anyway: no second pass over the names)."""
        n = len(batch.qlen)
        if n == 0:
            self.row_domains = ([], np.zeros(0, np.int64))
            return np.zeros((0, len(CONTEXT_FEATURES)), np.float32)
        if n > self.max_domains // 2:  # a chunk's domains must fit beside the kept ones
            half = n // 2
            parts = (slice(0, half), slice(half, n))
            first = self.update(_rows(batch, parts[0]), None if folded is None else folded[:half])
            names, ids = self.row_domains
            second = self.update(_rows(batch, parts[1]), None if folded is None else folded[half:])
            more, more_ids = self.row_domains
            self.row_domains = (names + more, np.concatenate([ids, more_ids + len(names)]))
            return np.vstack([first, second])
        qlen = np.asarray(batch.qlen, np.int64)
        folded = LOWER[batch.qname] if folded is None else folded
        width = folded.shape[1]
        if width:
            unique, inverse = np.unique(folded.view(f"S{width}").ravel(), return_inverse=True)
            unique_rows = unique.view(np.uint8).reshape(len(unique), width)
        else:
            inverse, unique_rows = np.zeros(n, np.intp), np.zeros((1, 0), np.uint8)
        inverse = inverse.ravel()
        unique_len = np.zeros(len(unique_rows), np.int64)
        unique_len[inverse] = qlen
        unique_slots, domain_len = self._slots(unique_rows)
        slot = unique_slots[inverse]
        used, at = np.unique(slot, return_inverse=True)
        self.row_domains = ([self.domain_in[k] for k in used.tolist()], at.ravel())
        self.clock += 1
        self.last_seen[slot] = self.clock
        # a name is new to its domain (in its direction) when its place in the table holds
        # another fingerprint
        response = np.asarray(getattr(batch, "response", np.zeros(n, bool)), bool)
        fingerprint = _fingerprints(name_hashes(unique_rows, unique_len)[inverse],
                                    self.domain_id[slot], response)  # fmt: skip
        fresh = self._remember(fingerprint)
        entropy = extras(SimpleNamespace(qname=unique_rows, qlen=unique_len), ("entropy",))
        values = self._per_packet(batch, n, qlen, domain_len[inverse], entropy[inverse, 0])
        is_new = np.zeros(n)
        is_new[fresh] = 1.0
        values[:, _COLUMN["new_queries"]] = is_new * ~response
        values[:, _COLUMN["new_responses"]] = is_new * response
        order = np.argsort(slot, kind="stable")  # one sort for the sums and the average
        running = _grouped_cumsum(values, slot, order) + self.sums[slot]
        touched, from_end = np.unique(slot[::-1], return_index=True)
        self.sums[touched] = running[n - 1 - from_end]  # each slot's last row: its new totals
        fresh_share = _running_average(is_new, slot, self.fresh, order)
        return _features(running, fresh_share)

    def _per_packet(self, batch, n: int, qlen, domain_len, entropy) -> np.ndarray:  # noqa: ANN001
        """(n, len(_SUMS)) what each packet adds to its domain's sums."""
        values = np.zeros((n, len(_SUMS)), np.float64)
        response = np.asarray(getattr(batch, "response", np.zeros(n, bool)), bool)
        qtype = np.asarray(getattr(batch, "qtype", np.zeros(n, np.uint16)))
        sub = np.maximum(qlen - domain_len - 1, 0).astype(np.float64)
        c = _COLUMN
        values[:, c["packets"]] = 1.0
        values[:, c["responses"]] = response
        values[:, c["sub_len"]] = sub
        values[:, c["sub_len2"]] = sub * sub
        values[:, c["entropy"]] = entropy
        values[:, c["a"]] = (qtype == 1) | (qtype == 28)
        values[:, c["txt"]] = qtype == 16
        values[:, c["null"]] = qtype == 10
        values[:, c["cname_mx"]] = (qtype == 5) | (qtype == 15) | (qtype == 33)
        data, off = getattr(batch, "data", None), getattr(batch, "msg_off", None)
        if data is not None and off is not None:
            length = np.asarray(batch.msg_len, np.int64)
            whole = response & (length >= 12)
            rows = np.flatnonzero(whole)
            rcode = data[np.asarray(off)[rows] + 3] & 0x0F
            values[rows, c["nxdomain"]] = rcode == 3
            after = length[rows] - 12 - (qlen[rows] + 2) - 4  # bytes after the question
            values[rows, c["answer_bytes"]] = np.maximum(after, 0)
        return values


def _rows(batch, rows: slice) -> SimpleNamespace:  # noqa: ANN001
    """The columns `update` reads, for some rows of a batch."""
    out = SimpleNamespace(qname=batch.qname[rows], qlen=batch.qlen[rows])
    for name in ("qtype", "response", "msg_off", "msg_len"):
        if getattr(batch, name, None) is not None:
            setattr(out, name, getattr(batch, name)[rows])
    if getattr(batch, "data", None) is not None:
        out.data = batch.data
    return out


def _features(running: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """Context rows from the running sums and new-name averages (inclusive of each packet)."""
    c = _COLUMN
    packets = np.maximum(running[:, c["packets"]], 1.0)
    responses = np.maximum(running[:, c["responses"]], 1.0)
    bits = np.maximum(running[:, c["new_queries"]], running[:, c["new_responses"]])
    names = bits
    share = fresh / -np.expm1(packets * np.log1p(-ALPHA))  # unbiased from the first packet
    mean_sub = running[:, c["sub_len"]] / packets
    sd_sub = np.sqrt(np.maximum(running[:, c["sub_len2"]] / packets - mean_sub**2, 0.0))
    columns = {
        "ctx_packets": np.log1p(np.minimum(packets, CAP)),
        "ctx_names": np.log1p(np.minimum(names, CAP)),
        "ctx_new_share": np.clip(share, 0.0, 1.0),
        "ctx_sub_len": mean_sub,
        "ctx_sub_len_sd": sd_sub,
        "ctx_entropy": running[:, c["entropy"]] / packets,
        "ctx_a": running[:, c["a"]] / packets,
        "ctx_txt": running[:, c["txt"]] / packets,
        "ctx_null": running[:, c["null"]] / packets,
        "ctx_cname_mx": running[:, c["cname_mx"]] / packets,
        "ctx_nxdomain": running[:, c["nxdomain"]] / responses,
        "ctx_answer_bytes": np.log1p(running[:, c["answer_bytes"]] / responses),
    }
    return np.stack([columns[name] for name in CONTEXT_FEATURES], 1).astype(np.float32)
