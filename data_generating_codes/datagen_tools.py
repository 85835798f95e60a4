"""Real DNS tunnels for script_datagen.py --mode netns --tool iodine|dns2tcp.

Three roles, as on a real network, in two namespaces joined by a veth pair: the client side
(the tunnel client and a benign host) and the far side (Debian `dnsmasq` as the LAN resolver,
which forwards the tunnel domain to the tunnel server and everything else to benign.py's model
resolver; and the tunnel server). The client only ever asks dnsmasq, and the capture is taken on
the client's veth, where a LAN sensor would sit. One file goes up through the tunnel and one
comes down, each over a TCP connection carried by the tunnel; the truth records both files'
checksums as sent and as received. Everything is stopped and both namespaces are deleted at the
end, on errors and on Ctrl-C as well.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path
from typing import Literal, get_args

from data_generating_codes.datagen_live import _exchange, _resolver, inside, veth_pair
from data_generating_codes.datagen_plan import (
    ExfilPlan,
    RngState,
    SessionSettings,
    attacker_domain,
    exfil_files,
)
from data_generating_codes.datagen_tunnel import (
    ToolNet,
    Transfer,
    classify_frames,
    receive_file,
    send_file,
    start_resolver,
    start_tool,
)
from data_generating_codes.det_config import DetConfig
from exfil.cli import UserError
from exfil.pcapwrite import CaptureWriter
from exfil.sniff import Sniffer, check_permission

Tool = Literal["iodine", "dns2tcp"]
TOOLS = get_args(Tool)
BINARIES = {"iodine": ("iodine", "iodined"), "dns2tcp": ("dns2tcpc", "dns2tcpd")}
DOWNLOAD_BYTES = 65536  # what the server side pushes down to the client
BENIGN_GAP = 0.05  # seconds between the benign host's lookup sessions
BENIGN_LEAD = 1.0  # seconds of benign lookups alone before the tunnel starts and after it ends
UP_PORT, DOWN_PORT = 7001, 7002  # server-side TCP services the tunnel reaches


# ---------------------------------------------------------------------------
# checks and payloads


def check_machine(tool: str) -> None:
    """One clear line (exit 2) when this machine cannot run the tool's session."""
    if tool not in TOOLS:
        raise UserError(f"--tool {tool!r}: choose one of {', '.join(TOOLS)}")
    if os.geteuid() != 0:
        raise UserError(f"--tool {tool}: needs root (network namespaces, tun, raw capture)")
    missing = [b for b in (*BINARIES[tool], "dnsmasq", "ip") if shutil.which(b) is None]
    if missing:
        raise UserError(
            f"--tool {tool}: missing {', '.join(missing)} (apt-get install iodine dns2tcp dnsmasq)"
        )
    if tool == "iodine" and not os.path.exists("/dev/net/tun"):
        raise UserError("--tool iodine: no /dev/net/tun (mknod /dev/net/tun c 10 200)")
    check_permission()


def upload_payload(settings: SessionSettings) -> tuple[str, bytes]:
    """The chosen EXFIL_DIR files as one tar (fixed mtimes: same files, same bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in exfil_files(settings):
            info = tarfile.TarInfo(path.name)
            info.size, info.mtime, info.mode = path.stat().st_size, 1767225600, 0o644
            tar.addfile(info, io.BytesIO(path.read_bytes()))
    return "exfil.tar", buffer.getvalue()


def _plan(name: str, data: bytes, tool: str, domain: str, direction: str) -> ExfilPlan:
    cfg = DetConfig(domain=domain, passphrase="unused")  # DET fields: unused by the tools
    plan = ExfilPlan(Path(name), data, tool, cfg, "", 0, 0.0, RngState.of(random.Random(0)))
    plan.extra = {"tool": tool, "direction": direction}
    return plan


# ---------------------------------------------------------------------------
# the session


def tool_session(rng: random.Random, out: Path, tool: str, settings: SessionSettings) -> dict:
    """Run the real tunnel between two namespaces, capture it; return what the truth needs."""
    check_machine(tool)
    domain = attacker_domain(rng, set())
    name, data = upload_payload(settings)
    plans = [
        _plan(name, data, tool, domain, "upload"),
        _plan("download.bin", rng.randbytes(DOWNLOAD_BYTES), tool, domain, "download"),
    ]
    net = ToolNet(tool=tool, domain=domain, password=settings.passphrase[:32] or "exfil")
    tag = f"{os.getpid() % 100000}"
    with veth_pair(tag, [net.client, net.host], [net.resolver, net.server, net.upstream]) as (
        client_ns,
        server_ns,
        link,
    ):
        net = net.placed(client_ns, server_ns, link)
        return _run(rng, out, settings, plans, net)


def _run(rng: random.Random, out: Path, settings: SessionSettings, plans: list[ExfilPlan],
         net: ToolNet) -> dict:  # fmt: skip
    """Capture on, resolver and tunnel up, files across, then classify what was captured."""
    stop, names, rows, keep = threading.Event(), {}, [], []
    deadline = time.monotonic() + settings.live_timeout
    with contextlib.ExitStack() as stack:
        stack.callback(stop.set)
        with inside(net.server_ns):
            upstream = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            upstream.bind((net.upstream, 53))
        with inside(net.client_ns):
            sniffer = stack.enter_context(Sniffer(net.iface, ports=(53,)))
            host = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            host.bind((net.host, 0))
        ours = {socket.inet_aton(a) for a in (net.client, net.host, net.resolver)}
        writer = stack.enter_context(CaptureWriter(out, nanosecond=settings.nanosecond))
        sniffer.start(writer, keep, lambda f: f[26:30] in ours and f[30:34] in ours)
        model = settings.benign_model(random.Random(rng.getrandbits(64)))
        threading.Thread(target=_resolver, args=(upstream, model, names, stop), daemon=True).start()
        logs = start_resolver(stack, net, deadline)
        background = threading.Thread(
            target=_benign_host, daemon=True,
            args=(settings, rng.getrandbits(64), host, (net.resolver, 53), names, stop),
        )  # fmt: skip
        rows.append(("benign", "lookups", time.time()))
        background.start()
        time.sleep(BENIGN_LEAD)
        rows.append(("exfil", f"{net.tool}-connect", time.time()))
        with contextlib.ExitStack() as tunnel:  # stopped before the benign tail
            ports = start_tool(tunnel, net, logs, (UP_PORT, DOWN_PORT), deadline)
            transfers = _transfers(net, plans, ports, rows, deadline)
        rows.append(("benign", f"{net.tool}-done", time.time()))
        stop.wait(BENIGN_LEAD)
        stop.set()
        background.join(2)
        sniffer.drain(0.3)
    for plan, transfer in zip(plans, transfers, strict=True):
        plan.received = transfer.md5_received == transfer.md5_sent
        plan.extra.update(md5_received=transfer.md5_received, seconds=transfer.seconds)
    return classify_frames(keep, plans, transfers, names, rows, net)


def _transfers(net: ToolNet, plans: list[ExfilPlan], ports: tuple[int, int], rows: list,
               deadline: float) -> list[Transfer]:  # fmt: skip
    """The upload (client -> server side) then the download, one TCP connection each."""
    up, down = plans
    with inside(net.server_ns):
        listeners = [socket.create_server((net.service, port)) for port in (UP_PORT, DOWN_PORT)]
    for listener in listeners:
        listener.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        rows.append(("exfil", up.path.name, time.time()))
        upload = Transfer.run(
            lambda: receive_file(listeners[0].accept()[0], deadline),
            lambda: send_file(net.connect(ports[0], deadline), up.data, deadline),
            up.data,
        )
        rows.append(("exfil", down.path.name, time.time()))
        download = Transfer.run(
            lambda: send_file(listeners[1].accept()[0], down.data, deadline),
            lambda: receive_file(net.connect(ports[1], deadline), deadline),
            down.data,
        )
    finally:
        for listener in listeners:
            listener.close()
    if time.monotonic() > deadline:
        raise UserError(f"--tool {net.tool}: session ran past --live-timeout")
    return [upload, download]


def _benign_host(
    settings: SessionSettings,
    seed: int,
    sock: socket.socket,
    resolver: tuple[str, int],
    names: dict,
    stop: threading.Event,
) -> None:
    """Ordinary lookups through the same dnsmasq while the tunnel runs."""
    rng = random.Random(seed)
    model = settings.benign_model(random.Random(rng.getrandbits(64)))
    while not stop.wait(rng.expovariate(1 / BENIGN_GAP)):
        for cls, qname, qtype, _ in model.session():
            names.setdefault((qname, qtype), cls)
            _exchange(sock, model.query(rng.getrandbits(16), qname, qtype), resolver)
            if stop.is_set():
                return
