"""DET's server side without the server: query names in, events about the files they carry out.

Pure (no sockets, no files, the caller passes the clock), so the framing, the bounds and the
checksum can be tested a name at a time and reused by anything that sees DET names. Everything it
reads is attacker-controlled, so every structure is bounded: open jobs (least recently used
evicted), bytes per job, pending pieces per job and finished job ids remembered.

`feed(name, now)` returns what happened, in order: a query ignored ("dropped", with the reason),
a message taken ("registered", "chunk", "done"), or a job closed: "complete" (MD5 checked, the
file's bytes attached), "failed", "evicted" or "incomplete". A closed job's id is remembered, so
late duplicates open no new job.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from data_generating_codes.det_codec import decrypt_blob
from data_generating_codes.det_config import DetConfig
from data_generating_codes.det_styles import (
    COUNTER_DIGITS,
    ENCODINGS,
    JOB_ID_LEN,
    LAYOUTS,
    piece_capacity,
)

log = logging.getLogger("det.server")

MAX_PENDING = 4096  # out-of-order pieces buffered per job (counter layouts)
OVERHEAD = 64  # bytes charged per buffered piece or chunk on top of its length
FINISHED_MEMORY = 8192  # finished job ids remembered, so late duplicates make no new job

_JOB_ID = re.compile(rb"[A-Za-z0-9]{%d}" % JOB_ID_LEN)
_REGISTER = re.compile(rb"([A-Za-z0-9]{7})\|!\|(.*)\|!\|REGISTER\|!\|([0-9a-f]{32})", re.S)
_DONE = re.compile(rb"([A-Za-z0-9]{7})\|!\|(\d{1,9})\|!\|DONE")
_CHUNK = re.compile(rb"([A-Za-z0-9]{7})\|!\|(\d{1,9})\|!\|(.*)", re.S)

Kind = Literal[
    "dropped", "registered", "chunk", "done", "complete", "failed", "evicted", "incomplete"
]
CLOSING: frozenset[str] = frozenset({"complete", "failed", "evicted", "incomplete"})


@dataclass(frozen=True)
class Event:
    """One thing that happened to a job (or to a query that was dropped), with the job's tally."""

    kind: Kind
    job_id: str = ""
    reason: str = ""  # dropped: the reason counted; failed/evicted/incomplete: why it ended
    detail: str = ""  # dropped: what to log with the reason
    filename: bytes | None = None  # as registered: raw, unsanitised
    queries: int = 0
    chunks: int = 0
    count: int | None = None  # chunks announced by DONE
    data: bytes = b""  # complete: the file, MD5 checked


@dataclass
class Job:
    """One file being received; `size` is what it counts against the memory caps."""

    job_id: str
    seen: float
    filename: bytes | None = None
    md5: str | None = None
    count: int | None = None
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0  # bytes held: chunks and buffered pieces, OVERHEAD each included
    queries: int = 0
    pieces: list[bytes] = field(default_factory=list)  # length framing: current message
    piece_set: set[bytes] = field(default_factory=set)
    previous: set[bytes] = field(default_factory=set)  # pieces of the last finished message
    pending: dict[int, tuple[bool, bytes]] = field(default_factory=dict)  # counter framing
    next_seq: int = 0


class Reassembler:
    """Rebuild the files of one DET channel (cfg) from its query names, within cfg's caps."""

    def __init__(self, cfg: DetConfig) -> None:
        self.cfg = cfg
        self.layout = LAYOUTS[cfg.layout]
        self.encoding = ENCODINGS[cfg.encoding]
        self.capacity = piece_capacity(self.layout, cfg.domain)
        self.suffix = b"." + cfg.domain.encode()
        self.alphabet = self.encoding.alphabet.encode("latin-1")
        self.max_message = 8 * cfg.max_bytes + 4096  # encoded characters per message
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.held = 0  # bytes held by all open jobs (see _hold)
        self.finished: OrderedDict[str, None] = OrderedDict()
        self._events: list[Event] = []

    # -- what the caller sees ------------------------------------------------

    def feed(self, name: bytes, now: float) -> list[Event]:
        """Take one query name seen at `now`; whatever arrives, this returns (never raises)."""
        try:
            self._ingest(name, now)
        except Exception:  # the server must stay up whatever arrives
            log.exception("internal error on a datagram")
            self._drop("internal-error")
        return self._take()

    def expire(self, now: float) -> list[Event]:
        """Close jobs idle for more than job_timeout as incomplete."""
        limit = now - self.cfg.job_timeout
        while self.jobs:
            job = next(iter(self.jobs.values()))
            if job.seen > limit:
                break
            self._close(job, "incomplete", f"no query for {self.cfg.job_timeout:g} s")
        return self._take()

    def close_all(self, reason: str) -> list[Event]:
        """Close every open job as incomplete (the server is stopping)."""
        for job in list(self.jobs.values()):
            self._close(job, "incomplete", reason)
        self.jobs.clear()
        return self._take()

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _event(self, kind: Kind, job: Job, reason: str = "", data: bytes = b"") -> None:
        self._events.append(Event(kind, job.job_id, reason, "", job.filename, job.queries,
                                  len(job.chunks), job.count, data))  # fmt: skip

    def _drop(self, reason: str, detail: str = "") -> None:
        self._events.append(Event("dropped", reason=reason, detail=detail))

    # -- one query name ------------------------------------------------------

    def _ingest(self, name: bytes, now: float) -> None:
        if not name.lower().endswith(self.suffix):
            return self._drop("outside-domain", repr(name[:80]))
        labels = name[: -len(self.suffix)].split(b".")
        head = labels[0]
        job_id = head[:JOB_ID_LEN]
        if not _JOB_ID.fullmatch(job_id):
            return self._drop("bad-job-id", repr(name[:80]))
        key = job_id.decode()
        if key in self.finished:
            return self._drop("finished-job", key)
        if self.layout.counter:
            counter, data = head[JOB_ID_LEN:], b"".join(labels[1:])
            if len(counter) != COUNTER_DIGITS or not counter.isalnum():
                return self._drop("bad-counter", repr(name[:80]))
        else:
            data = head[JOB_ID_LEN:] + b"".join(labels[1:])
        if self.encoding.case_insensitive:
            data = data.lower()
        if len(data) > self.capacity or data.translate(None, self.alphabet):
            return self._drop("bad-piece", repr(name[:80]))
        job = self._job(key, now)
        job.queries += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("query %s piece %r", key, data[:40])
        if self.layout.counter:
            self._counter_piece(job, int(counter, 36), data)
        else:
            self._length_piece(job, data)

    def _job(self, key: str, now: float) -> Job:
        job = self.jobs.get(key)
        if job is None:
            while len(self.jobs) >= self.cfg.max_jobs:
                oldest = next(iter(self.jobs.values()))
                self._close(oldest, "evicted", f"job cap {self.cfg.max_jobs} reached")
            job = self.jobs[key] = Job(key, now)
        self.jobs.move_to_end(key)
        job.seen = now
        return job

    def _length_piece(self, job: Job, data: bytes) -> None:
        """DET framing: pieces arrive in order, a short one ends the message."""
        if data in job.piece_set or (not job.pieces and data in job.previous):
            return self._drop("duplicate-piece", job.job_id)
        job.pieces.append(data)
        job.piece_set.add(data)
        if not self._hold(job, len(data) + OVERHEAD):
            return None
        if len(job.pieces) * self.capacity > self.max_message:
            return self._close(job, "failed", "message too long")
        if len(data) < self.capacity:
            text = b"".join(job.pieces)
            self._hold(job, -len(text) - OVERHEAD * len(job.pieces))
            job.previous, job.pieces, job.piece_set = job.piece_set, [], set()
            self._message(job, text)
        return None

    def _counter_piece(self, job: Job, counter: int, data: bytes) -> None:
        """Counter framing: buffer by sequence number, emit each run that ends in a last bit."""
        seq, last = divmod(counter, 2)
        if seq < job.next_seq or seq in job.pending:
            return self._drop("duplicate-piece", job.job_id)
        if len(job.pending) >= MAX_PENDING:
            return self._close(job, "failed", "too many out-of-order pieces")
        job.pending[seq] = (bool(last), data)
        if not self._hold(job, len(data) + OVERHEAD):
            return None
        seq, parts = job.next_seq, []
        while seq in job.pending:
            is_last, piece = job.pending[seq]
            parts.append(piece)
            seq += 1
            if is_last:
                for done in range(job.next_seq, seq):
                    del job.pending[done]
                self._hold(job, -sum(map(len, parts)) - OVERHEAD * len(parts))
                job.next_seq, text, parts = seq, b"".join(parts), []
                if len(text) > self.max_message:
                    return self._close(job, "failed", "message too long")
                self._message(job, text)
                if job.job_id not in self.jobs:
                    return None
        return None

    # -- messages and files --------------------------------------------------

    def _message(self, job: Job, text: bytes) -> None:
        try:
            raw = self.encoding.decode(text.decode("latin-1"))
        except (ValueError, KeyError) as error:
            return self._drop("undecodable-message", f"{job.job_id}: {error}")
        match = _REGISTER.fullmatch(raw) or _DONE.fullmatch(raw) or _CHUNK.fullmatch(raw)
        if match is None:
            return self._drop("bad-message", f"{job.job_id}: {raw[:60]!r}")
        parts = match.groups()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("message %s %r", job.job_id, raw[:60])
        if parts[0].decode() != job.job_id:
            return self._drop("job-id-mismatch", job.job_id)
        if match.re is _REGISTER:
            job.filename, job.md5 = parts[1], parts[2].decode()
            self._event("registered", job)
        elif match.re is _DONE:
            job.count = int(parts[1])
            self._event("done", job)
        elif not self._chunk(job, int(parts[1]), parts[2]):
            return None
        self._try_finish(job)

    def _chunk(self, job: Job, index: int, body: bytes) -> bool:
        """Store one chunk; False when it was dropped or failed the job."""
        if not body:
            self._drop("bad-chunk", job.job_id)
            return False
        if index in job.chunks:
            self._drop("duplicate-chunk", job.job_id)
            return False
        if self.cfg.encoding == "hex":
            try:
                body = bytes.fromhex(body.decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                self._drop("bad-chunk", job.job_id)
                return False
        job.chunks[index] = body
        self._event("chunk", job)
        return self._hold(job, len(body) + OVERHEAD)

    def _hold(self, job: Job, size: int) -> bool:
        """Account bytes a job holds; fail it over max_job_bytes, evict others over the total."""
        job.size += size
        self.held += size
        if job.size > self.cfg.max_job_bytes:
            self._close(job, "failed", f"job holds over max_job_bytes={self.cfg.max_job_bytes}")
            return False
        while self.held > self.cfg.max_total_bytes and len(self.jobs) > 1:
            oldest = next(iter(self.jobs.values()))
            if oldest is job:  # only when touched out of order; never evict the caller
                self.jobs.move_to_end(job.job_id)
                continue
            self._close(oldest, "evicted", f"server holds over {self.cfg.max_total_bytes} bytes")
        return True

    def _try_finish(self, job: Job) -> None:
        if job.filename is None or job.count is None or len(job.chunks) < job.count:
            return
        if any(index >= job.count for index in job.chunks):
            return self._close(job, "failed", "chunk index beyond DONE count")
        blob = b"".join(job.chunks[index] for index in range(job.count))
        try:
            data = decrypt_blob(blob, self.cfg.passphrase)
        except ValueError as error:
            return self._close(job, "failed", f"decrypt: {error}")
        if self.cfg.compression:
            inflater = zlib.decompressobj()
            try:
                data = inflater.decompress(data, self.cfg.max_job_bytes + 1)
            except zlib.error as error:
                return self._close(job, "failed", f"decompress: {error}")
            if len(data) > self.cfg.max_job_bytes or inflater.unconsumed_tail:
                return self._close(job, "failed", "decompressed file over max_job_bytes")
            if not inflater.eof:
                return self._close(job, "failed", "decompress: truncated stream")
        digest = hashlib.md5(data).hexdigest()
        if digest != job.md5:
            return self._close(job, "failed", f"md5 {digest} != registered {job.md5}")
        self._close(job, "complete", "", data)

    def _close(self, job: Job, kind: Kind, reason: str, data: bytes = b"") -> None:
        """End a job: free what it holds, remember its id (bounded), say why."""
        if self.jobs.pop(job.job_id, None) is not None:
            self.held -= job.size
        self.finished[job.job_id] = None
        while len(self.finished) > FINISHED_MEMORY:
            self.finished.popitem(last=False)
        self._event(kind, job, reason, data)
