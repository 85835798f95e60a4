"""Live capture sessions for script_datagen.py: real UDP on loopback, or between two namespaces.

`live`: the DET servers (one per exfiltrated file, each on its own 127.0.0.2xx:53), a benign
resolver on 127.0.0.153:53 answering with benign.py's model, benign clients on 127.0.0.1x and the
attacker (det.send_file) all talk over loopback while exfil.sniff records `lo`.
`netns`: the servers live in one network namespace, the clients and the capture in another,
joined by a veth pair like the original two VMs; both namespaces are deleted afterwards.

Ground truth is derived from the captured names: the exfil domains and job ids are known.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import random
import select
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data_generating_codes import benign
from data_generating_codes.datagen_plan import ExfilPlan, SessionSettings, plan_exfiltration
from data_generating_codes.datagen_truth import RecordTally
from data_generating_codes.det import send_file
from data_generating_codes.det_codec import read_query
from data_generating_codes.det_server import DetServer
from exfil import dnsmsg
from exfil.cli import UserError
from exfil.pcapwrite import CaptureWriter
from exfil.sniff import Sniffer, check_permission, udp_payload

CLONE_NEWNET = 0x40000000
REPLY_WAIT = 0.5  # seconds a client waits for an answer
MAX_HOSTS, MAX_SERVERS = 100, 50  # address plan: hosts .10-.109, DET servers .200-.249


# ---------------------------------------------------------------------------
# namespaces


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(namespace: str | None):
    """Run the block (this thread only) inside a named network namespace; sockets made there
    stay there after the block, which is all the session needs."""
    if namespace is None:
        yield
        return
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(f"/var/run/netns/{namespace}")
        yield
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns(original, CLONE_NEWNET)
        os.close(original)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode:
        raise UserError(f"ip {' '.join(args)}: {result.stderr.strip() or 'failed'}")


@contextlib.contextmanager
def veth_pair(tag: str, client_addresses: list[str], server_addresses: list[str]):
    """Two namespaces (attacker side, server side) joined by a veth pair; always removed."""
    client, server = f"exfil-a-{tag}", f"exfil-s-{tag}"
    try:
        _ip("netns", "add", client)
        _ip("netns", "add", server)
        _ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vs{tag}")
        _ip("link", "set", f"va{tag}", "netns", client)
        _ip("link", "set", f"vs{tag}", "netns", server)
        for namespace, link, addresses in ((client, f"va{tag}", client_addresses),
                                           (server, f"vs{tag}", server_addresses)):  # fmt: skip
            for address in addresses:
                _ip("-n", namespace, "addr", "add", f"{address}/16", "dev", link)
            _ip("-n", namespace, "link", "set", link, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield client, server, f"va{tag}"
    finally:
        for namespace in (client, server):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", f"va{tag}"], capture_output=True)


# ---------------------------------------------------------------------------
# the benign side: a resolver and its clients


def _exchange(sock: socket.socket, query: bytes, address: tuple[str, int]) -> None:
    sock.sendto(query, address)
    deadline = time.monotonic() + REPLY_WAIT
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return
        if sock.recv(65535)[:2] == query[:2]:
            return


def _resolver(
    sock: socket.socket, model: benign.BenignModel, names: dict, stop: threading.Event
) -> None:
    """Answer each query as benign.py's model says, for the class its client drew it from."""
    while not stop.is_set():
        if not select.select([sock], [], [], 0.05)[0]:
            continue
        try:
            query, peer = sock.recvfrom(65535)
            message = read_query(query)
            qname, qtype, _ = message.questions[0]
        except (OSError, dnsmsg.DnsError, IndexError):
            continue
        name = qname.decode("latin-1")
        cls = names.get((name, qtype), benign.ORDINARY)
        sock.sendto(model.response(message.id, cls, name, qtype), peer)


def _lookups(model: benign.BenignModel, rng: random.Random, socks: list, resolver: tuple,
             names: dict, count: int, gap: float, rows: list | None = None) -> int:  # fmt: skip
    """Run benign sessions until `count` lookups were made; return how many."""
    done = 0
    while done < count:
        time.sleep(rng.expovariate(1 / gap) if gap > 0 else 0)
        sock = rng.choice(socks)
        session = model.session()
        if rows is not None:
            rows.append(("benign", session[0][1], time.time()))
        for cls, qname, qtype, _ in session[: count - done]:
            names.setdefault((qname, qtype), cls)
            _exchange(sock, model.query(rng.getrandbits(16), qname, qtype), resolver)
            done += 1
    return done


# ---------------------------------------------------------------------------
# a session


@dataclass(frozen=True)
class _Network:
    """Where everyone sits: addresses, and the namespaces (None: this one) of each side."""

    hosts: list[str]  # benign clients; the first is the attacker
    servers: list[str]  # one DET server per plan
    resolver: str
    client_ns: str | None = None
    server_ns: str | None = None
    iface: str = "lo"  # what the sniffer records


def live_session(rng: random.Random, out: Path, mode: str, settings: SessionSettings) -> dict:
    """Run the session over real sockets, capture it, and return what the truth needs."""
    check_permission()  # before any work: --mode live/netns capture with an AF_PACKET socket
    plans = plan_exfiltration(rng, settings)
    if settings.hosts > MAX_HOSTS or len(plans) > MAX_SERVERS:
        raise UserError(f"--mode {mode}: at most {MAX_HOSTS} hosts and {MAX_SERVERS} files")
    prefix = "127.0.0" if mode == "live" else "10.99.0"  # loopback, or inside our namespaces
    hosts = [f"{prefix}.{10 + i}" for i in range(settings.hosts)]
    servers = [f"{prefix}.{200 + i}" for i in range(len(plans))]
    resolver = f"{prefix}.153"  # not .53: systemd-resolved's stub often holds 127.0.0.53:53
    if mode == "live":
        return _run(rng, out, settings, plans, _Network(hosts, servers, resolver))
    tag = f"{os.getpid() % 100000}"
    with veth_pair(tag, hosts, [*servers, resolver]) as (client_ns, server_ns, link):
        net = _Network(hosts, servers, resolver, client_ns, server_ns, link)
        return _run(rng, out, settings, plans, net)


def _listen(stack: contextlib.ExitStack, plans: list[ExfilPlan], net: _Network,
            received: Path) -> tuple[list[DetServer], socket.socket]:  # fmt: skip
    """The DET servers (one per plan) and the resolver's socket, bound in the server namespace."""
    try:
        with inside(net.server_ns):
            servers = []
            for number, plan in enumerate(plans):
                servers.append(DetServer(plan.cfg, received / str(number)))
                stack.callback(servers[-1].close)
            resolver_sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            resolver_sock.bind((net.resolver, 53))
    except OSError as error:
        raise UserError(
            f"cannot listen on {prefix_of(net.resolver)}.x:53 ({error.strerror or error}); "
            "is another live session running?"
        ) from None
    return servers, resolver_sock


def _clients(stack: contextlib.ExitStack, net: _Network) -> tuple[Sniffer, list[socket.socket]]:
    """The sniffer and one bound socket per host, in the client namespace."""
    with inside(net.client_ns):
        sniffer = stack.enter_context(Sniffer(net.iface, ports=(53,)))
        socks = []
        for host in net.hosts:
            socks.append(stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)))
            socks[-1].bind((host, 0))
    return sniffer, socks


def _run(rng: random.Random, out: Path, settings: SessionSettings, plans: list[ExfilPlan],
         net: _Network) -> dict:  # fmt: skip
    """Servers up, capture on, benign and exfil traffic sent, then what each server rebuilt."""
    for plan, address in zip(plans, net.servers, strict=True):
        plan.cfg = replace(plan.cfg, target=address, port=53, reply_timeout=REPLY_WAIT)
    stop, names, rows, keep = threading.Event(), {}, [], []
    with (
        tempfile.TemporaryDirectory(prefix="exfil-received-") as received,
        contextlib.ExitStack() as stack,
    ):
        stack.callback(stop.set)
        det_servers, resolver_sock = _listen(stack, plans, net, Path(received))
        sniffer, socks = _clients(stack, net)
        ours = {socket.inet_aton(a) for a in (*net.hosts, *net.servers, net.resolver)}
        writer = stack.enter_context(CaptureWriter(out, nanosecond=settings.nanosecond))
        sniffer.start(writer, keep, lambda f: f[26:30] in ours and f[30:34] in ours)
        for server in det_servers:
            server.start()
        answer_model = settings.benign_model(random.Random(rng.getrandbits(64)))
        threading.Thread(
            target=_resolver, args=(resolver_sock, answer_model, names, stop), daemon=True
        ).start()
        _traffic(rng, settings, plans, socks, (net.resolver, 53), names, rows)
        sniffer.drain(0.3)
        stop.set()
        for plan, server in zip(plans, det_servers, strict=True):
            digests = {hashlib.md5(path.read_bytes()).hexdigest() for path in server.written}
            plan.received = hashlib.md5(plan.data).hexdigest() in digests
    return _truth_from_frames(keep, plans, names, rows, net.hosts, net.servers)


def _traffic(rng: random.Random, settings: SessionSettings, plans: list[ExfilPlan], socks: list,
             resolver: tuple[str, int], names: dict, rows: list) -> None:  # fmt: skip
    """Benign lookups in the background while the attacker alternates lookups and files."""
    scale = settings.sleep_scale
    exfil_packets = sum(2 * plan.queries for plan in plans)
    lookups = max(0, settings.packets - exfil_packets) // 2
    client_model = settings.benign_model(random.Random(rng.getrandbits(64)))
    background_rng = random.Random(rng.getrandbits(64))
    per_action = lookups // (2 * len(plans) + 2)
    background = threading.Thread(target=_lookups, daemon=True, args=(
        client_model, background_rng, socks[1:] or socks, resolver, names,
        lookups - per_action * (len(plans) + 1), settings.duration * scale / 100))  # fmt: skip
    background.start()
    attacker_model = settings.benign_model(random.Random(rng.getrandbits(64)))
    deadline = time.monotonic() + settings.live_timeout
    for plan in plans:
        _lookups(attacker_model, rng, socks[:1], resolver, names, per_action, 0.0, rows)
        rows.append(("exfil", plan.path.name, time.time()))
        cfg = replace(plan.cfg, min_sleep=plan.cfg.min_sleep * scale,
                      max_sleep=plan.cfg.max_sleep * scale,
                      query_gap=plan.cfg.query_gap * scale)  # fmt: skip
        result = send_file(plan.path, cfg, rng=random.Random(rng.getrandbits(64)), sock=socks[0])
        plan.job_id = result.job_id
        if time.monotonic() > deadline:
            raise UserError(f"live session ran past --live-timeout {settings.live_timeout} s")
    _lookups(attacker_model, rng, socks[:1], resolver, names, per_action, 0.0, rows)
    background.join(max(0.0, deadline - time.monotonic()))


def frame_question(frame: bytes) -> tuple[bytes, int] | None:
    """(query name, qtype) of a captured UDP DNS frame; None for anything else."""
    try:
        payload = udp_payload(frame)[4]
        qname, end = dnsmsg.read_name(payload, 12)
    except (TypeError, dnsmsg.DnsError):
        return None
    return qname, int.from_bytes(payload[end : end + 2], "big")


def prefix_of(address: str) -> str:
    return address.rsplit(".", 1)[0]


def _truth_from_frames(keep: list, plans: list[ExfilPlan], names: dict, rows: list,
                       hosts: list[str], servers: list[str]) -> dict:  # fmt: skip
    """Classes per captured record, from its query name: exfil domain -> file, else benign class."""
    classes = [*benign.CLASSES, *dict.fromkeys(f"exfil/{p.style}" for p in plans)]
    suffixes = [(b"." + p.cfg.domain.encode(), p.cfg.domain.encode()) for p in plans]
    cls = np.zeros(len(keep), np.uint8)
    file = np.full(len(keep), -1, np.int32)
    for index, (_, frame) in enumerate(keep):
        question = frame_question(frame)
        if question is None:
            continue
        qname, qtype = question
        lower = qname.lower()
        for number, (suffix, bare) in enumerate(suffixes):
            if lower.endswith(suffix) or lower == bare:
                file[index], cls[index] = number, classes.index(f"exfil/{plans[number].style}")
                break
        else:
            cls[index] = classes.index(names.get((qname.decode("latin-1"), qtype), benign.ORDINARY))
    return session_truth(cls, file, keep, classes, plans, rows, hosts[:1], servers)


def session_truth(cls: np.ndarray, file: np.ndarray, keep: list, classes: list[str],
                  plans: list[ExfilPlan], rows: list, attackers: list[str],
                  servers: list[str]) -> dict:  # fmt: skip
    """What the truth sidecar is written from: per-record classes and files, tallied with the
    captured times, the plans, the attacker's log rows in time order, the hosts."""
    tally = RecordTally()
    tally.add(cls, file, np.array([round(t * 1e6) * 1000 for t, _ in keep], dtype=np.int64))
    return {
        "tally": tally,
        "classes": classes,
        "plans": plans,
        "rows": sorted(rows, key=lambda row: row[2]),
        "attacker_hosts": attackers,
        "server_hosts": servers,
    }
