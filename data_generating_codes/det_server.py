"""The DET server: a UDP authoritative responder that reassembles exfiltrated files.

Everything it reads is attacker-controlled, so every structure is bounded: open jobs (least
recently used evicted), bytes per job, pending pieces per job, finished job ids remembered, and
reports kept. Every dropped query is counted by reason and logged at a rate that cannot flood
(the first few of each reason, then at powers of two). A file is written only after its MD5
checks, atomically, under a sanitised name inside the output folder.
"""

from __future__ import annotations

import hashlib
import logging
import re
import select
import socket
import threading
import time
import zlib
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from data_generating_codes.det_codec import (
    COUNTER_DIGITS,
    ENCODINGS,
    JOB_ID_LEN,
    LAYOUTS,
    answer,
    decrypt_blob,
    piece_capacity,
)
from data_generating_codes.det_config import DetConfig
from exfil.dnsmsg import DnsError, parse_message
from exfil.files import atomic_path

log = logging.getLogger("det.server")

MAX_PENDING = 4096  # out-of-order pieces buffered per job (counter layouts)
OVERHEAD = 64  # bytes charged per buffered piece or chunk on top of its length
FINISHED_MEMORY = 8192  # finished job ids remembered, so late duplicates make no new job
LOG_FIRST = 5  # drops logged one by one per reason before falling back to powers of two

_JOB_ID = re.compile(rb"[A-Za-z0-9]{%d}" % JOB_ID_LEN)
_REGISTER = re.compile(rb"([A-Za-z0-9]{7})\|!\|(.*)\|!\|REGISTER\|!\|([0-9a-f]{32})", re.S)
_DONE = re.compile(rb"([A-Za-z0-9]{7})\|!\|(\d{1,9})\|!\|DONE")
_CHUNK = re.compile(rb"([A-Za-z0-9]{7})\|!\|(\d{1,9})\|!\|(.*)", re.S)


def safe_name(raw: bytes | str) -> str:
    """A basename that cannot leave the output folder: no separators, no leading dots."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    base = re.split(r"[\\/]", text)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:120]
    return base or "unnamed"


@dataclass
class _Job:
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


class DetServer:
    """Answer DNS queries for cfg.domain on UDP and write the files they carry to `out_dir`."""

    def __init__(
        self, cfg: DetConfig, out_dir: str | Path | None = None, *, bind: str | None = None,
        port: int | None = None,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.out_dir = Path(out_dir or cfg.output_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.layout = LAYOUTS[cfg.layout]
        self.encoding = ENCODINGS[cfg.encoding]
        self.capacity = piece_capacity(self.layout, cfg.domain)
        self.suffix = b"." + cfg.domain.encode()
        self.alphabet = self.encoding.alphabet.encode("latin-1")
        self.max_message = 8 * cfg.max_bytes + 4096  # encoded characters per message
        self.jobs: OrderedDict[str, _Job] = OrderedDict()
        self.held = 0  # bytes held by all open jobs (see _hold)
        self.finished: OrderedDict[str, None] = OrderedDict()
        self.drops: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.reports: deque[dict] = deque(maxlen=max(64, cfg.max_jobs))
        self.written: list[Path] = []
        self.answered = 0
        self._stop = threading.Event()
        host = bind or cfg.target
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind((host, cfg.port if port is None else port))
        self.address = self.sock.getsockname()

    # -- socket loop ---------------------------------------------------------

    def serve(self, max_seconds: float | None = None, exit_after_files: int | None = None) -> None:
        """Answer queries until stop(), `max_seconds`, or `exit_after_files` files written."""
        deadline = time.monotonic() + max_seconds if max_seconds else None
        next_sweep = time.monotonic() + 1.0
        while not self._stop.is_set():
            now = time.monotonic()
            if deadline and now >= deadline:
                break
            if exit_after_files and len(self.written) >= exit_after_files:
                break
            if now >= next_sweep:
                self.expire(now)
                next_sweep = now + 1.0
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            try:
                datagram, peer = self.sock.recvfrom(65535)
            except OSError as error:  # e.g. ICMP port unreachable surfaced on a later read
                log.debug("recvfrom: %s", error)
                continue
            reply = self.handle(datagram, time.monotonic())
            if reply is not None:
                try:
                    self.sock.sendto(reply, peer)
                except OSError as error:
                    self._drop("reply-failed", str(error))

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (tests, the live generator); stop() and close() end it."""
        thread = threading.Thread(target=self.serve, name="det-server", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop, report the jobs that never finished, close the socket (after serve returns)."""
        self._stop.set()
        for job in list(self.jobs.values()):
            self._report(job, "incomplete", "never finished (server stopped)")
        self.jobs.clear()
        self.sock.close()
        if self.drops:
            log.info("dropped queries by reason: %s", dict(self.drops))

    def __enter__(self) -> DetServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one datagram --------------------------------------------------------

    def handle(self, datagram: bytes, now: float | None = None) -> bytes | None:
        """Feed one datagram to the reassembler and return the answer to send (or None)."""
        now = time.monotonic() if now is None else now
        try:
            message = parse_message(datagram)
            if message.is_response or len(message.questions) != 1:
                self._drop("not-a-query")
            else:
                self._ingest(message.questions[0][0], now)
        except DnsError as error:
            self._drop(f"malformed-{error.reason}")
        except Exception:  # the server must stay up whatever arrives
            log.exception("internal error on a datagram")
            self._drop("internal-error")
        reply = answer(datagram, self.cfg)
        self.answered += reply is not None
        return reply

    def _drop(self, reason: str, detail: str = "") -> None:
        self.drops[reason] += 1
        count = self.drops[reason]
        if count <= LOG_FIRST or count & (count - 1) == 0:
            log.warning(
                "dropped query: %s (%d so far)%s", reason, count, f" {detail}" * bool(detail)
            )

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

    def _job(self, key: str, now: float) -> _Job:
        job = self.jobs.get(key)
        if job is None:
            while len(self.jobs) >= self.cfg.max_jobs:
                oldest = next(iter(self.jobs.values()))
                self._report(oldest, "evicted", f"job cap {self.cfg.max_jobs} reached")
            job = self.jobs[key] = _Job(key, now)
        self.jobs.move_to_end(key)
        job.seen = now
        return job

    def _length_piece(self, job: _Job, data: bytes) -> None:
        """DET framing: pieces arrive in order, a short one ends the message."""
        if data in job.piece_set or (not job.pieces and data in job.previous):
            return self._drop("duplicate-piece", job.job_id)
        job.pieces.append(data)
        job.piece_set.add(data)
        if not self._hold(job, len(data) + OVERHEAD):
            return None
        if len(job.pieces) * self.capacity > self.max_message:
            return self._report(job, "failed", "message too long")
        if len(data) < self.capacity:
            text = b"".join(job.pieces)
            self._hold(job, -len(text) - OVERHEAD * len(job.pieces))
            job.previous, job.pieces, job.piece_set = job.piece_set, [], set()
            self._message(job, text)
        return None

    def _counter_piece(self, job: _Job, counter: int, data: bytes) -> None:
        """Counter framing: buffer by sequence number, emit each run that ends in a last bit."""
        seq, last = divmod(counter, 2)
        if seq < job.next_seq or seq in job.pending:
            return self._drop("duplicate-piece", job.job_id)
        if len(job.pending) >= MAX_PENDING:
            return self._report(job, "failed", "too many out-of-order pieces")
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
                    return self._report(job, "failed", "message too long")
                self._message(job, text)
                if job.job_id not in self.jobs:
                    return None
        return None

    # -- messages and files --------------------------------------------------

    def _message(self, job: _Job, text: bytes) -> None:
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
        elif match.re is _DONE:
            job.count = int(parts[1])
        else:
            index, body = int(parts[1]), parts[2]
            if not body:
                return self._drop("bad-chunk", job.job_id)
            if index in job.chunks:
                return self._drop("duplicate-chunk", job.job_id)
            if self.cfg.encoding == "hex":
                try:
                    body = bytes.fromhex(body.decode("ascii"))
                except (ValueError, UnicodeDecodeError):
                    return self._drop("bad-chunk", job.job_id)
            job.chunks[index] = body
            if not self._hold(job, len(body) + OVERHEAD):
                return None
        self._try_finish(job)

    def _hold(self, job: _Job, size: int) -> bool:
        """Account bytes a job holds; fail it over max_job_bytes, evict others over the total."""
        job.size += size
        self.held += size
        if job.size > self.cfg.max_job_bytes:
            self._report(job, "failed", f"job holds over max_job_bytes={self.cfg.max_job_bytes}")
            return False
        while self.held > self.cfg.max_total_bytes and len(self.jobs) > 1:
            oldest = next(iter(self.jobs.values()))
            if oldest is job:  # only when touched out of order; never evict the caller
                self.jobs.move_to_end(job.job_id)
                continue
            self._report(oldest, "evicted", f"server holds over {self.cfg.max_total_bytes} bytes")
        return True

    def _try_finish(self, job: _Job) -> None:
        if job.filename is None or job.count is None or len(job.chunks) < job.count:
            return
        if any(index >= job.count for index in job.chunks):
            return self._report(job, "failed", "chunk index beyond DONE count")
        blob = b"".join(job.chunks[index] for index in range(job.count))
        try:
            data = decrypt_blob(blob, self.cfg.passphrase)
        except ValueError as error:
            return self._report(job, "failed", f"decrypt: {error}")
        if self.cfg.compression:
            inflater = zlib.decompressobj()
            try:
                data = inflater.decompress(data, self.cfg.max_job_bytes + 1)
            except zlib.error as error:
                return self._report(job, "failed", f"decompress: {error}")
            if len(data) > self.cfg.max_job_bytes or inflater.unconsumed_tail:
                return self._report(job, "failed", "decompressed file over max_job_bytes")
            if not inflater.eof:
                return self._report(job, "failed", "decompress: truncated stream")
        digest = hashlib.md5(data).hexdigest()
        if digest != job.md5:
            return self._report(job, "failed", f"md5 {digest} != registered {job.md5}")
        path = self._write(job.filename, data)
        self.written.append(path)
        self._report(job, "written", "", path=str(path), bytes=len(data))

    def _write(self, filename: bytes, data: bytes) -> Path:
        """Atomically write under a sanitised, collision-free name inside out_dir."""
        name = Path(safe_name(filename))
        path = self.out_dir / name
        number = 0
        while path.exists():
            number += 1
            path = self.out_dir / f"{name.stem}-{number}{name.suffix}"
        root = self.out_dir.resolve()
        assert path.resolve().parent == root, path  # safe_name guarantees it; belt and braces
        with atomic_path(path) as temporary:
            temporary.write_bytes(data)
        return path

    def _report(self, job: _Job, status: str, reason: str, **extra: object) -> None:
        """Close a job: remember its id, keep a bounded report, log it."""
        if self.jobs.pop(job.job_id, None) is not None:
            self.held -= job.size
        self.finished[job.job_id] = None
        while len(self.finished) > FINISHED_MEMORY:
            self.finished.popitem(last=False)
        self.counts[status] += 1
        filename = safe_name(job.filename) if job.filename is not None else ""
        report = {
            "job_id": job.job_id,
            "status": status,
            "file": filename,
            "reason": reason,
            "queries": job.queries,
            "chunks": len(job.chunks),
            "count": job.count,
            **extra,
        }
        self.reports.append(report)
        level = logging.INFO if status == "written" else logging.WARNING
        number = self.counts[status]
        if status == "written" or number <= LOG_FIRST or number & (number - 1) == 0:
            log.log(
                level,
                "job %s %s %s %s (%d %s so far)",
                job.job_id,
                status,
                filename or "-",
                reason or extra.get("path", ""),
                number,
                status,
            )

    def expire(self, now: float) -> None:
        """Report jobs idle for more than job_timeout as incomplete and free them."""
        limit = now - self.cfg.job_timeout
        while self.jobs:
            job = next(iter(self.jobs.values()))
            if job.seen > limit:
                break
            self._report(job, "incomplete", f"no query for {self.cfg.job_timeout:g} s")
