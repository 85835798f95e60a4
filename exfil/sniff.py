"""Capture DNS frames live from a Linux interface with an AF_PACKET raw socket.

The live generator records its own loopback traffic with this, and `detect.py --iface` reuses it.
The kernel drops everything but UDP/TCP on the chosen ports (a classic BPF program attached with
SO_ATTACH_FILTER), and the same test runs again in Python for frames queued before the filter
was attached. On `lo` the kernel shows every packet twice (once leaving, once arriving), so the
PACKET_OUTGOING copy is dropped there.

    with Sniffer("lo", ports=(53,)) as sniffer:
        for timestamp, frame in sniffer.frames(seconds=5):
            ...
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from exfil.cli import UserError
from exfil.pcapwrite import CaptureWriter

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772
SO_ATTACH_FILTER = 26
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD

# classic BPF opcodes (linux/filter.h)
_LDH_ABS, _LDB_ABS, _LDH_IND, _LDXB_MSH = 0x28, 0x30, 0x48, 0xB1
_JEQ, _JSET, _RET = 0x15, 0x45, 0x06


# ---------------------------------------------------------------------------
# filters


def bpf_program(ports: Iterable[int]) -> list[tuple[int, int, int, int]]:
    """Classic BPF: accept IPv4/IPv6 UDP or TCP frames whose source or destination port is listed.

    Jumps are resolved from labels, so the port list can be any length.
    """
    ports = sorted(set(ports))
    code: list[tuple] = []  # (opcode, true-label or 0, false-label or 0, k)

    def port_checks(offset_sport: int, indexed: bool) -> None:
        load = _LDH_IND if indexed else _LDH_ABS
        for field in (offset_sport, offset_sport + 2):
            code.append((load, 0, 0, field))
            code.extend((_JEQ, "accept", 0, port) for port in ports)
        code.append((_RET, 0, 0, 0))

    code += [(_LDH_ABS, 0, 0, 12), (_JEQ, 0, "ipv6", ETH_P_IP)]
    code += [(_LDB_ABS, 0, 0, 23), (_JEQ, "l4v4", 0, 17), (_JEQ, "l4v4", "reject", 6)]
    code += [("l4v4",), (_LDH_ABS, 0, 0, 20), (_JSET, "reject", 0, 0x1FFF), (_LDXB_MSH, 0, 0, 14)]
    port_checks(14, indexed=True)
    code += [("ipv6",), (_JEQ, 0, "reject", ETH_P_IPV6), (_LDB_ABS, 0, 0, 20)]
    code += [(_JEQ, "l4v6", 0, 17), (_JEQ, "l4v6", "reject", 6), ("l4v6",)]
    port_checks(54, indexed=False)
    code += [("reject",), (_RET, 0, 0, 0), ("accept",), (_RET, 0, 0, 0xFFFF)]
    labels, position = {}, 0
    for item in code:
        if len(item) == 1:
            labels[item[0]] = position
        else:
            position += 1
    program, position = [], 0
    for item in code:
        if len(item) == 1:
            continue
        op, true, false, k = item
        jt = labels[true] - position - 1 if isinstance(true, str) else true
        jf = labels[false] - position - 1 if isinstance(false, str) else false
        program.append((op, jt, jf, k))
        position += 1
    return program


def frame_ports(frame: bytes) -> tuple[int, int, int] | None:
    """(protocol, source port, destination port) of an Ethernet IPv4/IPv6 UDP/TCP frame."""
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETH_P_IP and len(frame) >= 34:
        start, proto = 14 + 4 * (frame[14] & 0x0F), frame[23]
        if int.from_bytes(frame[20:22], "big") & 0x1FFF:
            return None
    elif ethertype == ETH_P_IPV6 and len(frame) >= 54:
        start, proto = 54, frame[20]
    else:
        return None
    if proto not in (6, 17) or len(frame) < start + 4:
        return None
    return proto, *struct.unpack_from("!HH", frame, start)


def udp_payload(frame: bytes) -> tuple[str, str, int, int, bytes] | None:
    """(src, dst, sport, dport, payload) of an Ethernet/IPv4/UDP frame, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    start = 14 + 4 * (frame[14] & 0x0F)
    sport, dport, length = struct.unpack_from("!HHH", frame, start)
    src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
    return src, dst, sport, dport, frame[start + 8 : start + length]


# ---------------------------------------------------------------------------
# the socket


def check_permission() -> None:
    """Raise UserError now, before any other work, if this process may not capture."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except PermissionError:
        raise UserError(
            f"live capture needs root or CAP_NET_RAW (an AF_PACKET socket; uid {os.geteuid()})"
        ) from None


class Sniffer:
    """An AF_PACKET socket on one interface, filtered to UDP/TCP on `ports`."""

    def __init__(self, iface: str, ports: Iterable[int] = (53,), *, bpf: bool = True) -> None:
        try:  # asks the kernel of this thread's network namespace (sysfs may show another)
            socket.if_nametoindex(iface)
        except OSError:
            raise UserError(f"no such network interface: {iface}") from None
        self.iface, self.ports = iface, frozenset(ports)
        check_permission()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
            if bpf:
                self._attach(bpf_program(self.ports))
            self.sock.bind((iface, 0))
        except OSError as error:
            self.sock.close()
            raise UserError(f"cannot capture on {iface}: {error.strerror or error}") from None
        self._stop = threading.Event()

    def _attach(self, program: list[tuple[int, int, int, int]]) -> None:
        raw = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
        self._filter = ctypes.create_string_buffer(raw)  # kept alive with the socket
        fprog = struct.pack("HL", len(program), ctypes.addressof(self._filter))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def wanted(self, frame: bytes, pkttype: int, hatype: int = 0) -> bool:
        if hatype == ARPHRD_LOOPBACK and pkttype == PACKET_OUTGOING:
            return False
        ports = frame_ports(frame)
        return ports is not None and (ports[1] in self.ports or ports[2] in self.ports)

    def frames(
        self, seconds: float | None = None, count: int | None = None
    ) -> Iterator[tuple[float, bytes]]:
        """Yield (epoch seconds, frame) until stop(), `seconds` elapsed or `count` frames."""
        deadline = time.monotonic() + seconds if seconds else None
        seen = 0
        while not self._stop.is_set() and (count is None or seen < count):
            wait = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if wait <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                continue
            frame, address = self.sock.recvfrom(65535)
            if self.wanted(frame, address[2], address[3]):
                seen += 1
                yield time.time(), frame

    def record(
        self,
        writer: CaptureWriter | None = None,
        keep: list | None = None,
        accept: Callable[[bytes], bool] | None = None,
        **limits: float,
    ) -> int:
        """Write frames to `writer` (incrementally) and/or append them to `keep`; return count.

        `accept` narrows further (e.g. to the generator's own addresses).
        """
        count = 0
        for timestamp, frame in self.frames(**limits):
            if accept is not None and not accept(frame):
                continue
            if writer is not None:
                writer.write(timestamp, frame)
            if keep is not None:
                keep.append((timestamp, frame))
            count += 1
        if writer is not None:
            writer.flush()
        return count

    def start(
        self,
        writer: CaptureWriter | None = None,
        keep: list | None = None,
        accept: Callable[[bytes], bool] | None = None,
    ) -> threading.Thread:
        """Record in a background thread until stop()."""
        thread = threading.Thread(target=self.record, args=(writer, keep, accept), daemon=True)
        thread.start()
        self._thread = thread
        return thread

    def drain(self, quiet: float = 0.2) -> None:
        """Stop once no frame arrived for `quiet` seconds (the in-flight answers are in)."""
        time.sleep(quiet)
        self._stop.set()
        if getattr(self, "_thread", None) is not None:
            self._thread.join()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
