"""The vocabulary of a DET channel's style: encodings, layouts, downstream answers, presets.

Both the config (which checks a style's values) and the codec (which builds and reads names with
them) need these tables, so they live here, below both, and the two never import each other.

An encoding turns message bytes into text in the alphabet DNS labels carry; a layout cuts that
text into query names:

- `single-label` (DET): `<jobid><piece>.<domain>`, 67 characters; a shorter name ends a message.
- `multi-label` / `short-labels`: the same, `<jobid><piece>` cut into labels of 63 / 16 chars.
- `counter`: `<jobid><ctr>.<data labels>.<domain>`, ctr = 4 base36 digits of 2*seq + last; the
  sequence number lets the server reorder, the last bit ends a message.
- `depth`: as `counter`, but each query carries 1-4 data labels of random length (varying depth).

`STYLES` names the presets `--style` selects (issue 6): an encoding, a layout, query types, a
downstream answer kind and rates, applied on top of a config file.
"""

from __future__ import annotations

import base64
import math
import string
from collections.abc import Callable
from dataclasses import dataclass

JOB_ID_LEN = 7  # DET's job id: the first characters of every query name
COUNTER_DIGITS = 4  # base36 digits of 2*seq + last in the counter layouts
RESPONSES = ("nxdomain", "a", "txt", "cname", "null", "mx")  # what the server answers with

# ---------------------------------------------------------------------------
# encodings: bytes <-> text in the alphabet DNS labels carry

BASE36 = string.digits + string.ascii_lowercase
_B128 = string.ascii_letters + string.digits + "".join(map(chr, range(0xBC, 0xFE)))  # iodine's


def _int_encode(data: bytes, alphabet: str) -> str:
    """Big-endian base-N digits of 0x01 + data (the sentinel keeps leading zero bytes)."""
    number, base, digits = int.from_bytes(b"\x01" + data, "big"), len(alphabet), []
    while number:
        number, digit = divmod(number, base)
        digits.append(alphabet[digit])
    return "".join(reversed(digits))


def _int_decode(text: str, alphabet: str) -> bytes:
    index, base, number = {c: i for i, c in enumerate(alphabet)}, len(alphabet), 0
    for char in text:
        number = number * base + index[char]
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    if raw[:1] != b"\x01":
        raise ValueError("missing sentinel byte")
    return raw[1:]


def _b32_decode(text: str) -> bytes:
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


def _b64_decode(text: str, altchars: bytes) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars, validate=True)


@dataclass(frozen=True)
class Encoding:
    """Bytes to label text and back; the server checks pieces against the alphabet first."""

    alphabet: str
    encode: Callable[[bytes], str]
    decode: Callable[[str], bytes]  # ValueError/KeyError on text that is not an encoding
    case_insensitive: bool  # resolvers may change case: the server lower-cases before decoding


ENCODINGS: dict[str, Encoding] = {
    "hex": Encoding("0123456789abcdef", bytes.hex, bytes.fromhex, True),
    "base32": Encoding(
        "abcdefghijklmnopqrstuvwxyz234567",
        lambda b: base64.b32encode(b).decode().rstrip("=").lower(),
        _b32_decode,
        True,
    ),
    "base36": Encoding(
        BASE36, lambda b: _int_encode(b, BASE36), lambda t: _int_decode(t, BASE36), True
    ),
    "base64": Encoding(
        string.ascii_letters + string.digits + "+/",
        lambda b: base64.b64encode(b).decode().rstrip("="),
        lambda t: _b64_decode(t, b"+/"),
        False,
    ),
    "base64url": Encoding(
        string.ascii_letters + string.digits + "-_",
        lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
        lambda t: _b64_decode(t, b"-_"),
        False,
    ),
    "base128": Encoding(
        _B128, lambda b: _int_encode(b, _B128), lambda t: _int_decode(t, _B128), False
    ),
}

# ---------------------------------------------------------------------------
# layouts: how text becomes query names


@dataclass(frozen=True)
class Layout:
    """Limits and framing of query names; client and server derive the piece size from them."""

    label: int  # longest label
    name: int  # longest name, presentation form without the final dot
    counter: bool = False  # session label <jobid><ctr> first, data labels after it
    max_labels: int = 4  # data labels per query (DET single-label: exactly one)
    varying: bool = False  # random label count and lengths per query


LAYOUTS: dict[str, Layout] = {
    "single-label": Layout(63, 67, max_labels=1),
    "multi-label": Layout(63, 253),
    "short-labels": Layout(16, 100, max_labels=8),
    "counter": Layout(50, 160, counter=True),
    "depth": Layout(40, 200, counter=True, varying=True),
}


def piece_capacity(layout: Layout, domain: str) -> int:
    """Data characters in a full query name (the piece size; DET: 66 - len(domain) - 7)."""
    fixed = len(domain) + 1 + (JOB_ID_LEN + COUNTER_DIGITS + 1 if layout.counter else 0)
    best = 0
    for size in range(1, layout.name + 1):
        text = size if layout.counter else JOB_ID_LEN + size  # what gets cut into labels
        labels = math.ceil(text / layout.label)
        if labels <= layout.max_labels and fixed + text + labels - 1 <= layout.name:
            best = size
    return best


# ---------------------------------------------------------------------------
# the --style presets: DetConfig fields each one overrides

STYLES: dict[str, dict] = {
    "det": {},
    "det-multilabel": {"layout": "multi-label"},
    "det-qtypes": {"qtypes": ["MX", "NS", "A", "TXT", "CNAME", "PTR"]},  # the 2018 repo's draw
    "base32-txt": {"encoding": "base32", "layout": "multi-label", "qtypes": ["TXT"],
                   "response": "txt"},
    "base36-short": {"encoding": "base36", "layout": "short-labels", "qtypes": ["A", "AAAA"],
                     "response": "a"},
    "base64-cname": {"encoding": "base64", "layout": "counter", "qtypes": ["CNAME"],
                     "response": "cname"},
    "base64url-mx": {"encoding": "base64url", "layout": "depth", "qtypes": ["MX"],
                     "response": "mx"},
    "base128-null": {"encoding": "base128", "layout": "multi-label", "qtypes": ["NULL"],
                     "response": "null"},
    "det-slow": {"min_sleep": 120.0, "max_sleep": 600.0, "query_gap": 90.0,
                 "job_timeout": 3600.0},
    "base32-burst": {"encoding": "base32", "layout": "counter", "qtypes": ["A", "AAAA"],
                     "min_sleep": 0.0, "max_sleep": 0.0, "query_gap": 0.003},
}  # fmt: skip
