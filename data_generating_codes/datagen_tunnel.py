"""The parts of datagen_tools' tunnel session: the address plan, the real processes (dnsmasq and
the tunnel's server and client, each in its namespace), the file transfers over the tunnel and
the per-record classes of the capture. The processes are stopped by the caller's ExitStack."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data_generating_codes import benign
from data_generating_codes.datagen_live import frame_question, inside, session_truth
from data_generating_codes.datagen_plan import ExfilPlan
from exfil.cli import UserError

CLIENT_PORTS = (5001, 5002)  # dns2tcpc's local ports in the client namespace
READY_MARKS = {  # a line each process logs once it is ready
    "dnsmasq": "started",
    "iodined": "Listening to dns",
    "iodine": "Connection setup complete",
    "dns2tcpd": "Listening on",
    "dns2tcpc": "Listening on port",
}


@dataclass(frozen=True)
class ToolNet:
    """Where everyone sits; client/host on the client side, the rest on the far side."""

    tool: str
    domain: str  # the tunnel's domain, forwarded by dnsmasq to the tunnel server
    password: str
    client: str = "10.99.0.10"  # the tunnel client (the attacker)
    host: str = "10.99.0.11"  # a benign host using the same resolver
    resolver: str = "10.99.0.153"  # dnsmasq
    upstream: str = "10.99.0.154"  # benign.py's model resolver, dnsmasq's default upstream
    server: str = "10.99.0.200"  # the tunnel server (iodined / dns2tcpd)
    tunnel: str = "192.168.213"  # iodine's tun network: server .1, client .2
    client_ns: str = ""
    server_ns: str = ""
    iface: str = ""

    def placed(self, client_ns: str, server_ns: str, iface: str) -> ToolNet:
        return replace(self, client_ns=client_ns, server_ns=server_ns, iface=iface)

    @property
    def service(self) -> str:
        """Where the far side's TCP services listen (the tunnel's end of iodine's tun)."""
        return f"{self.tunnel}.1" if self.tool == "iodine" else "127.0.0.1"

    def connect(self, port: int, deadline: float) -> socket.socket:
        """A TCP connection from the client namespace into the tunnel (retried until deadline)."""
        address = self.service if self.tool == "iodine" else "127.0.0.1"
        while True:
            try:
                with inside(self.client_ns):
                    return socket.create_connection((address, port), timeout=2)
            except OSError as error:
                if time.monotonic() > deadline:
                    raise UserError(f"--tool {self.tool}: cannot connect ({error})") from None
                time.sleep(0.2)


# ---------------------------------------------------------------------------
# processes


def _spawn(stack: contextlib.ExitStack, namespace: str, argv: list[str], log: Path,
           deadline: float) -> None:  # fmt: skip
    """Start argv inside the namespace; wait for its ready line; stop it when the stack closes."""
    handle = open(log, "wb")  # noqa: SIM115 (closed by the stack)
    stack.callback(handle.close)
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, *argv],
        stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    stack.callback(_stop, process)
    mark = READY_MARKS[argv[0]].encode()
    while mark not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_bytes().decode("latin-1").strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"{argv[0]} did not start: {tail[0]}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(2)
            return
        except subprocess.TimeoutExpired:
            continue


def start_resolver(stack: contextlib.ExitStack, net: ToolNet, deadline: float) -> Path:
    """dnsmasq on the far side; returns the folder where every process logs."""
    logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="exfil-tool-")))
    os.chmod(logs, 0o755)  # dnsmasq and dns2tcpd drop root, but read nothing from here
    dnsmasq = ["dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts", "--pid-file=",
               "--log-facility=-", f"--listen-address={net.resolver}", "--bind-interfaces",
               f"--server=/{net.domain}/{net.server}", f"--server={net.upstream}"]  # fmt: skip
    _spawn(stack, net.server_ns, dnsmasq, logs / "dnsmasq.log", deadline)
    return logs


def start_tool(stack: contextlib.ExitStack, net: ToolNet, logs: Path, services: tuple[int, int],
               deadline: float) -> tuple[int, int]:  # fmt: skip
    """The tunnel server, then its client; the two ports the client connects to."""
    if net.tool == "iodine":
        server = ["iodined", "-f", "-c", "-l", net.server, "-P", net.password,
                  f"{net.tunnel}.1/27", net.domain]  # fmt: skip
        _spawn(stack, net.server_ns, server, logs / "iodined.log", deadline)
        client = ["iodine", "-f", "-r", "-m", "1200", "-P", net.password, net.resolver,
                  net.domain]  # fmt: skip
        _spawn(stack, net.client_ns, client, logs / "iodine.log", deadline)
        return services
    up, down = services
    (logs / "dns2tcpd.conf").write_text(
        f"listen = {net.server}\nport = 53\nuser = nobody\ndomain = {net.domain}\n"
        f"key = {net.password}\nresources = up:127.0.0.1:{up} , down:127.0.0.1:{down}\n"
    )
    server = ["dns2tcpd", "-F", "-d", "1", "-f", str(logs / "dns2tcpd.conf")]
    _spawn(stack, net.server_ns, server, logs / "dns2tcpd.log", deadline)
    for resource, port in zip(("up", "down"), CLIENT_PORTS, strict=True):
        client = ["dns2tcpc", "-z", net.domain, "-k", net.password, "-r", resource,
                  "-l", str(port), net.resolver]  # fmt: skip
        _spawn(stack, net.client_ns, client, logs / f"dns2tcpc-{resource}.log", deadline)
    return CLIENT_PORTS


# ---------------------------------------------------------------------------
# transfers: an 8-byte length, the bytes, a one-byte receipt


def send_file(sock: socket.socket, data: bytes, deadline: float) -> None:
    """Send length and data, then wait for the receipt so nothing is cut off by the close.
    A broken tunnel is not an error here: the receiver's checksum then tells."""
    with sock, contextlib.suppress(OSError):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        sock.sendall(len(data).to_bytes(8, "big") + data)
        sock.recv(1)


def receive_file(sock: socket.socket, deadline: float) -> str:
    """MD5 of what arrived (all of it, or what came before the connection broke)."""
    digest, want, head = hashlib.md5(), None, b""
    with sock:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        got = 0
        with contextlib.suppress(OSError):
            while want is None or got < want:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                if want is None:
                    head += chunk
                    if len(head) < 8:
                        continue
                    want, chunk = int.from_bytes(head[:8], "big"), head[8:]
                digest.update(chunk)
                got += len(chunk)
            sock.sendall(b"k")
    return digest.hexdigest()


@dataclass(frozen=True)
class Transfer:
    """One file across the tunnel: checksums on both ends and when it ran."""

    md5_sent: str
    md5_received: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return round(self.end - self.start, 3)

    @classmethod
    def run(cls, far_side: Callable, client_side: Callable, data: bytes) -> Transfer:
        """Run the far side in a thread and the client side here; whichever receives, counts."""
        start, results = time.time(), []
        thread = threading.Thread(target=lambda: results.append(far_side()), daemon=True)
        thread.start()
        results.append(client_side())
        thread.join(5)
        received = next((r for r in results if isinstance(r, str)), "")
        return cls(hashlib.md5(data).hexdigest(), received, start, time.time())


# ---------------------------------------------------------------------------
# truth


def classify_frames(keep: list, plans: list[ExfilPlan], transfers: list[Transfer], names: dict,
                    rows: list, net: ToolNet) -> dict:  # fmt: skip
    """Classes per captured record: the tunnel domain's records go to the upload until it ended,
    then to the download (setup and keep-alives included); the rest are benign by name."""
    classes = [*benign.CLASSES, f"exfil/{net.tool}"]
    suffix, bare = b"." + net.domain.encode(), net.domain.encode()
    cls = np.zeros(len(keep), np.uint8)
    file = np.full(len(keep), -1, np.int32)
    for index, (stamp, frame) in enumerate(keep):
        question = frame_question(frame)
        if question is None:
            continue
        qname, qtype = question
        lower = qname.lower()
        if lower.endswith(suffix) or lower == bare:
            file[index] = 0 if stamp <= transfers[0].end else 1
            cls[index] = len(classes) - 1
        else:
            cls[index] = classes.index(names.get((qname.decode("latin-1"), qtype), benign.ORDINARY))
    truth = session_truth(cls, file, keep, classes, plans, rows, [net.client], [net.server])
    return {**truth, "tools": [net.tool]}
