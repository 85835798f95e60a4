"""Numbers and IP addresses as text columns (see exfil/packets.py), made by table lookups.

Spelling, byte-identical to the straightforward Python formatting (tests/test_packets.py holds
it as a slow reference): integers in decimal; time and score exactly as `"%.6f" % value`
(correctly rounded, ties to even on the exact binary value, so a µs timestamp prints its own
microseconds; NaN prints `nan`, as for pcapng simple packet blocks, which carry no time);
IPv4-mapped addresses as a dotted quad, others as `ipaddress.ip_address(...).compressed`.
"""

from __future__ import annotations

import numpy as np

_TIE = 1e-6  # |fraction - 1/2| of µs below which Python decides the rounding (exact ties)


# -----------------------------------------------------------------------------
# numbers: three decimal digits per uint32 table entry (4 bytes, the last NUL)

_GROUP = np.zeros((2001, 4), np.uint8)  # 0..999 "000".."999"; +1000: no leading zeros; 2000: ""
for _v in range(1000):
    _GROUP[_v, :3] = np.frombuffer(b"%03d" % _v, np.uint8)
    _GROUP[1000 + _v, 3 - len(str(_v)) : 3] = np.frombuffer(str(_v).encode(), np.uint8)
_GROUP32 = _GROUP.view(np.uint32).ravel()


def _groups(values: np.ndarray, count: int, padded: bool) -> np.ndarray:
    """(n, 3 * count) text of the low `count` three-digit groups of non-negative int64 values.

    padded: every group zero-filled (fractions, or below a shared leading part); else the
    number as written, leading zero groups empty.
    """
    if not len(values):
        return np.zeros((0, 3 * count), np.uint8)
    out = np.empty((len(values), count), np.uint32)
    rest = values
    for k in range(count):  # from the units up
        above = rest // 1000
        index = rest - above * 1000
        if not padded:
            lead = np.where(rest > 0, index + 1000, 2000) if k else index + 1000
            index = np.where(above > 0, index, lead)
        out[:, count - 1 - k] = _GROUP32[index]
        rest = above
    return out.view(np.uint8).reshape(len(values), count, 4)[:, :, :3].reshape(len(values), -1)


_SMALL: list[np.ndarray] = []  # filled on first use: text of 0..65535 right-aligned, uint64


def small_ints() -> np.ndarray:
    """Text of 0..65535 right-aligned in 8 bytes, as uint64 (built on first use, then kept)."""
    if not _SMALL:
        text = np.zeros((65536, 8), np.uint8)
        text[:, 2:] = _groups(np.arange(65536), 2, padded=False)
        _SMALL.append(text.view(np.uint64).ravel())
    return _SMALL[0]


def format_int(values: np.ndarray) -> np.ndarray:
    """Text column of non-negative integers in decimal (`str(int(v))`).

    Rows of a batch share their leading digits (record numbers, epoch seconds), so the part
    common to all rows is written once and only the groups below it are computed.
    """
    values = np.asarray(values).astype(np.int64).reshape(-1)
    if len(values) == 0:
        return np.zeros((0, 1), np.uint8)
    low, high = int(values.min()), int(values.max())
    if low < 0:
        raise ValueError("format_int takes non-negative integers")
    if high < 65536:  # ports, small counters: one gather from a table of all of them
        return small_ints().take(values).view(np.uint8).reshape(len(values), 8)
    count = 0
    while low // 1000**count != high // 1000**count:
        count += 1
    shared = low // 1000**count
    if shared == 0:
        return _groups(values, max(count, 1), padded=False)
    head = np.frombuffer(str(shared).encode(), np.uint8)
    out = np.empty((len(values), len(head) + 3 * count), np.uint8)
    out[:, : len(head)] = head
    out[:, len(head) :] = _groups(values - shared * 1000**count, count, padded=True)
    return out


def format_flag(values: np.ndarray) -> np.ndarray:
    """Text column `1` where the value is true or non-zero, else `0`."""
    return (np.asarray(values) != 0).astype(np.uint8).reshape(-1, 1) + np.uint8(48)


def format_fixed6(values: np.ndarray) -> np.ndarray:
    """Text column exactly equal to `"%.6f" % float(v)` for every float (float32 is widened).

    The one rounding rule of both CSV files: whole seconds = floor(v) (exact), then the exact
    fraction times 1e6 rounded to nearest. The product is off the true one by < 2e-10, so only
    values within `_TIE` of half a microsecond (exact ties, rounded half-even by Python) and the
    odd ones (NaN, inf, negative, >= 2**52) are left to Python's own formatting.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    fast = np.isfinite(x) & ~np.signbit(x) & (x < 2.0**52)
    x = np.where(fast, x, 0.0)
    seconds = np.floor(x)
    scaled = (x - seconds) * 1e6
    part = scaled - np.floor(scaled)
    slow = ~fast | (np.abs(part - 0.5) < _TIE)
    micros = np.rint(scaled).astype(np.int64)
    whole = seconds.astype(np.int64) + (micros >= 1_000_000)
    micros %= 1_000_000
    head = format_int(whole)
    out = np.empty((len(x), head.shape[1] + 7), np.uint8)
    out[:, : head.shape[1]] = head
    out[:, head.shape[1]] = ord(".")
    out[:, head.shape[1] + 1 :] = _groups(micros, 2, padded=True)
    rows = np.flatnonzero(slow)
    if len(rows):
        raw = np.asarray(values, dtype=np.float64).reshape(-1)[rows]
        out = _place(out, rows, [b"%.6f" % v for v in raw.tolist()])
    return out


format_time = format_fixed6  # capture timestamps: both files print them by this one rule


def _place(out: np.ndarray, rows: np.ndarray, texts: list[bytes]) -> np.ndarray:
    """Overwrite `rows` of a text column with `texts` (left-aligned), widening it if needed."""
    width = max(out.shape[1], max(len(t) for t in texts))
    if width > out.shape[1]:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])))
    block = np.zeros((len(texts), width), np.uint8)
    for i, text in enumerate(texts):
        block[i, : len(text)] = np.frombuffer(text, np.uint8)
    out[rows] = block
    return out


# -----------------------------------------------------------------------------
# addresses


def _left_align(text: np.ndarray) -> np.ndarray:
    """Each row's non-NUL bytes moved to its start (for building tables, not on hot paths)."""
    keep = text != 0
    out = np.zeros_like(text)
    rank = np.cumsum(keep, axis=1) - 1
    out[np.nonzero(keep)[0], rank[keep]] = text[keep]
    return out


_OCTET = np.zeros((256, 4), np.uint8)  # "d.", "dd.", "ddd." right-aligned in 4 bytes
for _v in range(256):
    _t = f"{_v}.".encode()
    _OCTET[_v, 4 - len(_t) :] = np.frombuffer(_t, np.uint8)
_PAIRS: list[np.ndarray] = []  # filled on first use: "a.b." and "a.b" by 256 * a + b, uint64


def _octet_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Two left-aligned octets per 8-byte entry: a dotted quad is two gathers, two NUL runs."""
    if not _PAIRS:
        pair = _OCTET[np.arange(65536).reshape(-1, 1) >> np.array([8, 0]) & 255].reshape(-1, 8)
        dotted = _left_align(pair)
        last = pair.copy()
        last[:, 7] = 0
        _PAIRS.extend([dotted.view(np.uint64).ravel(), _left_align(last).view(np.uint64).ravel()])
    return _PAIRS[0], _PAIRS[1]


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _ipv6(hextets: np.ndarray) -> np.ndarray:
    """(m, 41) text of IPv6 addresses as ipaddress compresses them (RFC 5952 longest zero run).

    Slot j of 5 bytes holds the separator before hextet j, then its 4 hex digits (leading zeros
    as NUL); byte 40 is the separator after the last. The first longest run of >= 2 zero
    hextets is blanked and its two bounding separators become the `::`.
    """
    m = len(hextets)
    out = np.zeros((m, 41), np.uint8)
    for nibble in range(4):
        value = (hextets >> (12 - 4 * nibble)) & 15
        digit = _HEX[value]
        if nibble < 3:
            digit[hextets < 16 ** (3 - nibble)] = 0
        out[:, 1 + nibble : 40 : 5] = digit
    run = np.zeros((m, 9), np.int64)  # zero hextets starting at each position
    for k in range(7, -1, -1):
        run[:, k] = (hextets[:, k] == 0) * (run[:, k + 1] + 1)
    start = run.argmax(1)
    length = run[np.arange(m), start]
    squeeze = length >= 2
    end = np.where(squeeze, start + length, -1)
    start = np.where(squeeze, start, -1)[:, None]
    end = end[:, None]
    slots = np.arange(9)
    colon = (slots >= 1) & (slots <= 7) & ~((slots > start) & (slots < end))
    colon |= (slots == start) | (slots == end)
    out[:, 0::5] = np.where(colon, ord(":"), 0)
    blank = (np.arange(8) >= start) & (np.arange(8) < end)  # (m, 8) hextets inside the run
    hexes = (5 * np.arange(8)[:, None] + 1 + np.arange(4)).ravel()  # their 32 digit bytes
    out[:, hexes] = np.where(np.repeat(blank, 4, axis=1), 0, out[:, hexes])
    return out


def format_address(addresses: np.ndarray) -> np.ndarray:
    """Text column of (n, 16) address rows: IPv4-mapped as a.b.c.d, IPv6 compressed."""
    addresses = np.ascontiguousarray(addresses, dtype=np.uint8)
    words = addresses.view(">u4")
    v4 = (words[:, 0] == 0) & (words[:, 1] == 0) & (words[:, 2] == 0xFFFF)
    halves = np.ascontiguousarray(addresses[:, 12:]).view(">u2").astype(np.intp)  # (n, 2)
    first, last = _octet_pairs()
    dotted = np.empty((len(addresses), 2), np.uint64)
    dotted[:, 0] = first[halves[:, 0]]
    dotted[:, 1] = last[halves[:, 1]]
    dotted = dotted.view(np.uint8)  # (n, 16)
    if v4.all():
        return dotted
    out = np.zeros((len(addresses), 41), np.uint8)
    out[v4, :16] = dotted[v4]
    out[~v4] = _ipv6(addresses[~v4].view(">u2").astype(np.int64))
    return out
