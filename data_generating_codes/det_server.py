"""The DET server: a UDP authoritative responder that writes the files its queries carry.

`det_reassembly.Reassembler` rebuilds the files from the query names; this module owns the rest:
the socket loop, the answers (`det_codec.answer`), counts and a bounded list of reports, and the
files. Every dropped query is counted by reason and logged at a rate that cannot flood (the first
few of each reason, then at powers of two). A file is written only after its MD5 checks,
atomically, under a sanitised name inside the output folder.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import threading
import time
from collections import Counter, OrderedDict, deque
from pathlib import Path

from data_generating_codes.det_codec import answer, read_query
from data_generating_codes.det_config import DetConfig
from data_generating_codes.det_reassembly import CLOSING, Event, Job, Reassembler
from exfil.dnsmsg import DnsError
from exfil.files import atomic_path

log = logging.getLogger("det.server")

LOG_FIRST = 5  # drops logged one by one per reason before falling back to powers of two
MAX_FILE_NAME = 120  # characters (ASCII, so bytes) of a written file's name, collision suffix aside
MAX_SUFFIX = 16  # an extension up to this long survives the cut to MAX_FILE_NAME
# Windows opens a device, not a file, for these names, whatever their extension
RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{port}{n}" for port in ("COM", "LPT") for n in range(10)]
)


def safe_name(raw: bytes | str) -> str:
    """A file name the sender cannot aim: the basename, in [A-Za-z0-9._-], at most MAX_FILE_NAME
    long, never empty, never starting with "-" (an option to whoever types it) or "." (hidden,
    "." and ".."), never ending in "." (Windows drops it) and never a Windows device name."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    base = re.sub(r"[^A-Za-z0-9._-]", "_", re.split(r"[\\/]", text)[-1]).lstrip(".-")
    if len(base) > MAX_FILE_NAME:
        stem, dot, suffix = base.rpartition(".")
        keep = dot + suffix if stem and len(suffix) < MAX_SUFFIX else ""
        base = base[: MAX_FILE_NAME - len(keep)] + keep
    base = base.rstrip(".")
    if base.split(".")[0].upper() in RESERVED:
        base = "_" + base
    return base or "unnamed"


class DetServer:
    """Answer DNS queries for cfg.domain on UDP and write the files they carry to `out_dir`."""

    def __init__(
        self, cfg: DetConfig, out_dir: str | Path | None = None, *, bind: str | None = None,
        port: int | None = None,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.out_dir = Path(out_dir or cfg.output_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.reassembler = Reassembler(cfg)
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

    # the reassembler's state, as the server always showed it (tests check the bounds here)
    @property
    def jobs(self) -> OrderedDict[str, Job]:
        return self.reassembler.jobs

    @property
    def held(self) -> int:
        return self.reassembler.held

    @property
    def finished(self) -> OrderedDict[str, None]:
        return self.reassembler.finished

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
        self._apply(self.reassembler.close_all("never finished (server stopped)"))
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
            self._feed(datagram, now)
            reply = answer(datagram, self.cfg)
        except Exception:  # the server must stay up, and keep its jobs, whatever arrives
            if self.drops["internal-error"] < LOG_FIRST:
                log.exception("internal error on a datagram")
            self._drop("internal-error")
            return None
        self.answered += reply is not None
        return reply

    def _feed(self, datagram: bytes, now: float) -> None:
        """The reassembler sees the name of a well-formed one-question query; the rest: counted."""
        try:
            message = read_query(datagram)
        except DnsError as error:
            return self._drop(f"malformed-{error.reason}")
        if message.is_response or len(message.questions) != 1:
            return self._drop("not-a-query")
        self._apply(self.reassembler.feed(message.questions[0][0], now))
        return None

    def expire(self, now: float) -> None:
        """Report jobs idle for more than job_timeout as incomplete and free them."""
        self._apply(self.reassembler.expire(now))

    def _drop(self, reason: str, detail: str = "") -> None:
        self.drops[reason] += 1
        count = self.drops[reason]
        if count <= LOG_FIRST or count & (count - 1) == 0:
            log.warning(
                "dropped query: %s (%d so far)%s", reason, count, f" {detail}" * bool(detail)
            )

    # -- what the reassembler says -------------------------------------------

    def _apply(self, events: list[Event]) -> None:
        """Count drops, report closed jobs, write the files that checked."""
        for event in events:
            if event.kind == "dropped":
                self._drop(event.reason, event.detail)
            elif event.kind == "complete":
                path = self._write(event.filename, event.data)
                self.written.append(path)
                self._report(event, "written", path=str(path), bytes=len(event.data))
            elif event.kind in CLOSING:
                self._report(event, event.kind)

    def _write(self, filename: bytes, data: bytes) -> Path:
        """Atomically write under a sanitised, collision-free name inside out_dir."""
        name = Path(safe_name(filename))
        path = self.out_dir / name
        number = 0
        while path.is_symlink() or path.exists():  # a dangling link is taken too
            number += 1
            path = self.out_dir / f"{name.stem}-{number}{name.suffix}"
        root = self.out_dir.resolve()
        assert path.resolve().parent == root, path  # safe_name guarantees it; belt and braces
        with atomic_path(path) as temporary:
            temporary.write_bytes(data)
        return path

    def _report(self, event: Event, status: str, **extra: object) -> None:
        """Keep a bounded report of a closed job and log it (rate-limited, like drops)."""
        self.counts[status] += 1
        filename = safe_name(event.filename) if event.filename is not None else ""
        report = {
            "job_id": event.job_id,
            "status": status,
            "file": filename,
            "reason": event.reason,
            "queries": event.queries,
            "chunks": event.chunks,
            "count": event.count,
            **extra,
        }
        self.reports.append(report)
        level = logging.INFO if status == "written" else logging.WARNING
        number = self.counts[status]
        if status == "written" or number <= LOG_FIRST or number & (number - 1) == 0:
            log.log(
                level,
                "job %s %s %s %s (%d %s so far)",
                event.job_id,
                status,
                filename or "-",
                event.reason or extra.get("path", ""),
                number,
                status,
            )
