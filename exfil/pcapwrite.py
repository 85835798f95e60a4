"""Write Ethernet/IPv4/UDP captures fast: pcap (µs or ns) and pcapng, built in bulk with numpy.

The offline generator makes hundreds of thousands of DNS packets; building each one as a scapy
object costs ~0.5 ms. Here every fixed-size header of a whole capture (record header, Ethernet,
IPv4 with its checksum, UDP) is one row of a numpy array, and the file is that array's bytes
interleaved with the DNS payloads. `CaptureWriter` writes frame by frame for live captures.
Both write to a temporary name and rename when complete (exfil.files.atomic_path).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import numpy as np

from exfil.files import atomic_path

LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
ETH_IP_UDP = 14 + 20 + 8  # bytes of headers before the UDP payload

_PCAP_RECORD = struct.Struct("<IIII")
_EPB_HEAD = struct.Struct("<IIIIIII")


def capture_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """ "pcapng" when asked or when the file name ends in .pcapng, else "pcap"."""
    if fmt:
        if fmt not in ("pcap", "pcapng"):
            raise ValueError(f"unknown capture format {fmt!r}")
        return fmt
    return "pcapng" if str(path).lower().endswith(".pcapng") else "pcap"


# ---------------------------------------------------------------------------
# file headers


def pcap_header(nanosecond: bool = False, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, SNAPLEN, linktype)


def frames_pcap(frames: list[tuple[float, bytes]]) -> bytes:
    """(epoch seconds, Ethernet frame) pairs as a little pcap file (µs), so that traffic
    which is not a file yet (live frames, DNS log records) takes the capture reader's path."""
    out = [pcap_header()]
    for stamp, frame in frames:
        seconds = math.floor(stamp)
        micros = min(int(round((stamp - seconds) * 1e6)), 999_999)  # never rounds into a second
        out.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    return b"".join(out)


def pcapng_header(nanosecond: bool = False, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    """Section Header Block + one Interface Description Block (if_tsresol 6 or 9)."""
    shb_body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    shb = struct.pack("<II", 0x0A0D0D0A, 12 + len(shb_body)) + shb_body
    shb += struct.pack("<I", 12 + len(shb_body))
    options = struct.pack("<HHB3x", 9, 1, 9 if nanosecond else 6) + struct.pack("<HH", 0, 0)
    idb_body = struct.pack("<HHI", linktype, 0, SNAPLEN) + options
    idb = (
        struct.pack("<II", 1, 12 + len(idb_body)) + idb_body + struct.pack("<I", 12 + len(idb_body))
    )
    return shb + idb


def _ticks(ts_ns: np.ndarray, nanosecond: bool) -> np.ndarray:
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    return ts_ns if nanosecond else ts_ns // 1000


# ---------------------------------------------------------------------------
# bulk frames


def ipv4_to_int(addresses: Sequence[str]) -> np.ndarray:
    """Dotted quads to uint32 (host order)."""
    return np.array(
        [int.from_bytes(bytes(int(part) for part in a.split(".")), "big") for a in addresses],
        dtype=np.uint32,
    )


def _be16(column: np.ndarray) -> np.ndarray:
    column = np.asarray(column, dtype=np.uint32)
    return np.stack([(column >> 8) & 0xFF, column & 0xFF], axis=1).astype(np.uint8)


def _be32(column: np.ndarray) -> np.ndarray:
    column = np.asarray(column, dtype=np.uint32)
    shifts = np.array([24, 16, 8, 0], dtype=np.uint32)
    return ((column[:, None] >> shifts) & 0xFF).astype(np.uint8)


def frame_headers(
    src_ip: np.ndarray,
    dst_ip: np.ndarray,
    sport: np.ndarray,
    dport: np.ndarray,
    payload_len: np.ndarray,
    ip_id: np.ndarray | None = None,
    ttl: int = 64,
) -> np.ndarray:
    """Ethernet + IPv4 + UDP headers for N frames, (N, 42) uint8; MACs are derived from the IPs.

    The IPv4 header checksum is computed for every row at once; the UDP checksum is 0
    (allowed for IPv4, and what many capture offloads show).
    """
    count = len(payload_len)
    src_ip = np.asarray(src_ip, dtype=np.uint32)
    dst_ip = np.asarray(dst_ip, dtype=np.uint32)
    length = np.asarray(payload_len, dtype=np.uint32)
    ip_id = np.zeros(count, np.uint32) if ip_id is None else np.asarray(ip_id, np.uint32)
    out = np.zeros((count, ETH_IP_UDP), dtype=np.uint8)
    # Ethernet: locally administered MACs 02:00:<ipv4>, EtherType IPv4
    out[:, 0] = 0x02
    out[:, 2:6] = _be32(dst_ip)
    out[:, 6] = 0x02
    out[:, 8:12] = _be32(src_ip)
    out[:, 12:14] = (0x08, 0x00)
    # IPv4
    ip = out[:, 14:34]
    ip[:, 0] = 0x45
    ip[:, 2:4] = _be16(20 + 8 + length)
    ip[:, 4:6] = _be16(ip_id & 0xFFFF)
    ip[:, 6] = 0x40  # don't fragment
    ip[:, 8] = ttl
    ip[:, 9] = 17
    ip[:, 12:16] = _be32(src_ip)
    ip[:, 16:20] = _be32(dst_ip)
    words = ip.reshape(count, 10, 2).astype(np.uint32)
    total = (words[:, :, 0] << 8 | words[:, :, 1]).sum(axis=1)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    ip[:, 10:12] = _be16(~total & 0xFFFF)
    # UDP
    out[:, 34:36] = _be16(sport)
    out[:, 36:38] = _be16(dport)
    out[:, 38:40] = _be16(8 + length)
    return out


def _records(
    ts_ns: np.ndarray, headers: np.ndarray, lengths: np.ndarray, fmt: str, nanosecond: bool
) -> tuple[bytes, int, list[bytes] | None]:
    """Per-record fixed bytes (record/block header + frame headers) as one blob, its row width,
    and for pcapng each block's padding + trailing length."""
    count = len(lengths)
    ticks = _ticks(ts_ns, nanosecond).astype(np.uint64)
    caplen = lengths + ETH_IP_UDP
    if fmt == "pcap":
        scale = np.uint64(1_000_000_000 if nanosecond else 1_000_000)
        record = np.zeros((count, 4), dtype="<u4")
        record[:, 0] = ticks // scale
        record[:, 1] = ticks % scale
        record[:, 2] = caplen
        record[:, 3] = caplen
        head = np.concatenate([record.view(np.uint8).reshape(count, 16), headers], axis=1)
        return head.tobytes(), head.shape[1], None
    pad = (-caplen) % 4
    total = 28 + caplen + pad + 4
    block = np.zeros((count, 7), dtype="<u4")
    block[:, 0] = 6  # Enhanced Packet Block, interface 0
    block[:, 1] = total
    block[:, 3] = ticks >> np.uint64(32)
    block[:, 4] = ticks & np.uint64(0xFFFFFFFF)
    block[:, 5] = caplen
    block[:, 6] = caplen
    head = np.concatenate([block.view(np.uint8).reshape(count, 28), headers], axis=1)
    zeros = b"\x00\x00\x00"
    tails = [
        zeros[:p] + struct.pack("<I", t) for p, t in zip(pad.tolist(), total.tolist(), strict=True)
    ]
    return head.tobytes(), head.shape[1], tails


def write_udp_capture(
    path: str | os.PathLike,
    ts_ns: np.ndarray,
    src_ip: np.ndarray,
    dst_ip: np.ndarray,
    sport: np.ndarray,
    dport: np.ndarray,
    payloads: Sequence[bytes],
    *,
    ip_id: np.ndarray | None = None,
    fmt: str | None = None,
    nanosecond: bool = False,
    chunk: int = 1 << 18,
) -> int:
    """Write N UDP/IPv4/Ethernet frames with the given timestamps (ns since epoch); return N.

    Works in chunks of `chunk` packets, so the extra memory stays bounded for any N.
    """
    fmt = capture_format(path, fmt)
    count = len(payloads)
    ip_id = np.zeros(count, np.uint32) if ip_id is None else np.asarray(ip_id)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(pcap_header(nanosecond) if fmt == "pcap" else pcapng_header(nanosecond))
        for start in range(0, count, chunk):
            part = slice(start, min(start + chunk, count))
            chunk_payloads = payloads[part]
            lengths = np.fromiter(map(len, chunk_payloads), np.uint32, len(chunk_payloads))
            headers = frame_headers(
                src_ip[part], dst_ip[part], sport[part], dport[part], lengths, ip_id[part]
            )
            blob, width, tails = _records(ts_ns[part], headers, lengths, fmt, nanosecond)
            pieces: list[bytes] = []
            append = pieces.append
            for index, payload in enumerate(chunk_payloads):
                append(blob[index * width : (index + 1) * width])
                append(payload)
                if tails is not None:
                    append(tails[index])
            handle.write(b"".join(pieces))
    return count


# ---------------------------------------------------------------------------
# frame by frame (live captures)


class CaptureWriter:
    """Append frames one at a time; the file appears under its final name on close()."""

    def __init__(
        self, path: str | os.PathLike, fmt: str | None = None, nanosecond: bool = False
    ) -> None:
        self.path = Path(path)
        self.fmt = capture_format(path, fmt)
        self.nanosecond = nanosecond
        self.count = 0
        self._stack = ExitStack()
        temporary = self._stack.enter_context(atomic_path(self.path))
        self._handle: BinaryIO = self._stack.enter_context(open(temporary, "wb"))  # noqa: SIM115
        header = pcap_header if self.fmt == "pcap" else pcapng_header
        self._handle.write(header(nanosecond))

    def write(self, timestamp: float, frame: bytes) -> None:
        """Add one frame; `timestamp` is seconds since the epoch."""
        ticks = round(timestamp * (1e9 if self.nanosecond else 1e6))
        size = len(frame)
        if self.fmt == "pcap":
            scale = 1_000_000_000 if self.nanosecond else 1_000_000
            head = _PCAP_RECORD.pack(ticks // scale, ticks % scale, size, size)
            self._handle.write(head + frame)
        else:
            pad = -size % 4
            total = 28 + size + pad + 4
            head = _EPB_HEAD.pack(6, total, 0, ticks >> 32, ticks & 0xFFFFFFFF, size, size)
            self._handle.write(head + frame + b"\x00" * pad + struct.pack("<I", total))
        self.count += 1

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        """Finish the file (rename into place)."""
        self._stack.close()

    def abort(self) -> None:
        """Drop the partial file."""
        self._handle.close()
        self._stack.pop_all()
        for partial in self.path.parent.glob(f".{self.path.name}.partial-{os.getpid()}"):
            partial.unlink(missing_ok=True)

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:  # noqa: ANN001
        if kind is None:
            self.close()
        else:
            self.abort()
