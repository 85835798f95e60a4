"""Redrawn session constants: the payload of each name stays, its session id and domain change."""

import numpy as np
from synthetic import make_dataset

from exfil.features import transform_counts
from models.augment import (
    benign_domains,
    session_copies,
    session_keys,
    shared_ends,
    with_session_copies,
    with_unigram_session_copies,
)
from models.data import Dataset, load_dataset, split_by_file_and_time, with_extras

SESSION = [  # one DET-like exfiltration: job id h13pO59, domain billysign.info
    b"h13pO59mbow4s7o3.t2i6hixkm85y9cop.billysign.info",
    b"h13pO599g4r1zvjh.9szy9j6tflcp2v7t.pa8v275me.billysign.info",
    b"h13pO591bh8zieqw.billysign.info",
]


def _rows(names: list[bytes], width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    qbytes = np.zeros((len(names), width), np.uint8)
    for i, name in enumerate(names):
        qbytes[i, : len(name)] = np.frombuffer(name, np.uint8)
    return qbytes, np.array([len(n) for n in names], np.int32)


def _kind(byte: int) -> str:
    return "lower" if 97 <= byte <= 122 else "upper" if 65 <= byte <= 90 else "digit"


def test_shared_ends_are_the_session_id_and_the_whole_domain_labels():
    assert shared_ends(SESSION) == (len("h13pO59"), len("billysign.info"))
    # a tail that is not whole labels is cut back to them: "x.a-b.net" / "y.b-b.net" share "-b.net"
    assert shared_ends([b"x1.a-b.net", b"y2.b-b.net"]) == (0, len("net"))
    assert shared_ends([SESSION[0]] * 4) == (0, 0)  # one distinct name: nothing to tell apart
    head, tail = shared_ends([b"abc.d.e", b"abc.d.e.x", b"abc"])  # never overlapping
    assert head + tail < 3


def test_copies_keep_the_payload_and_redraw_id_and_domain():
    qbytes, qlen = _rows(SESSION)
    domains = [b"google.com", b"bbc.co.uk"]
    out, out_len = session_copies(
        qbytes, qlen, np.zeros(3, int), domains, 4, np.random.default_rng(1)
    )
    assert out.shape == (12, 64) and len(out_len) == 12
    ids = set()
    for row, (name, n) in enumerate(zip(out, out_len, strict=True)):
        original = SESSION[row % 3]
        new = name[:n].tobytes()
        assert not name[n:].any()  # zero padding after the name
        domain = next(d for d in domains if new.endswith(b"." + d))
        payload = original[7 : len(original) - len("billysign.info")]
        assert new[7 : len(new) - len(domain)] == payload
        assert [_kind(b) for b in new[:7]] == [_kind(b) for b in original[:7]]
        ids.add(new[:7])
    assert len(ids) >= 10  # a fresh id per copy and row, not one per session
    again, _ = session_copies(qbytes, qlen, np.zeros(3, int), domains, 4, np.random.default_rng(1))
    assert np.array_equal(out, again)  # seeded


def test_benign_domains_are_registered_domains():
    qbytes, qlen = _rows([b"www.bbc.co.uk", b"a.b.example.com", b"localhost", b"mail.example.com"])
    assert benign_domains(qbytes, qlen) == [b"bbc.co.uk", b"example.com"]


def test_training_copies_take_domains_from_training_rows_only(tmp_path):
    data = load_dataset(make_dataset(tmp_path / "d", packets=1500, seed=4, files=5))
    train, val = split_by_file_and_time(data, 0.25, 0.2, 1)
    seen = with_session_copies(data, train, 2, seed=3)
    named = data.labels[train] == 1
    assert len(seen) == len(train) + 2 * named.sum()
    assert np.array_equal(seen.labels[len(train) :], np.tile(data.labels[train][named], 2))
    allowed = set(benign_domains(data.qname_bytes[train][data.labels[train] == 0],
                                 data.qname_len[train][data.labels[train] == 0]))  # fmt: skip
    copies = [
        r[:n].tobytes()
        for r, n in zip(seen.qname_bytes[len(train) :], seen.qname_len[len(train) :], strict=True)
    ]
    assert all(any(c.endswith(b"." + d) for d in allowed) for c in copies)
    exfil_domains = {d.encode() for d in data.info["exfil_domains"]}
    assert not any(c.endswith(d) for c in copies for d in exfil_domains)
    assert isinstance(with_session_copies(data, train, 0, 3), Dataset)
    assert len(with_session_copies(data, train, 0, 3)) == len(train)


def test_rows_without_a_file_id_are_grouped_by_registered_domain():
    qbytes, qlen = _rows(
        [b"aa1.x.evil.co.uk", b"bb2.y.evil.co.uk", b"cc3.bad.net", b"dd4.z.evil.co.uk"]
    )
    data = Dataset(None, np.ones(4, np.int8), {}, {}, qname_bytes=qbytes, qname_len=qlen,
                   files=np.array([-1, -1, -1, 7], np.int32))  # fmt: skip
    keys = session_keys(data, np.arange(4))
    assert keys[0] == keys[1] != keys[2] and keys[3] == 7  # a file id wins over the domain
    data.files = None  # no files.npy at all
    keys = session_keys(data, np.arange(4))
    assert keys[0] == keys[1] == keys[3] != keys[2]


def test_unigram_copies_are_the_histograms_of_their_redrawn_names(tmp_path):
    """clf and ae_clf train on copies too: each copy's row is the recipe's row of its new name
    (byte counts, name features), and the columns a name does not set (the per-domain
    context) are its original's, so a copy differs from its original only where the name does."""
    data = load_dataset(make_dataset(tmp_path / "d", packets=1500, seed=4, files=5))
    chosen = ["name_len", "entropy", "ctx_names", "ctx_new_share"]
    data = with_extras(data, chosen)
    train, _ = split_by_file_and_time(data, 0.25, 0.2, 1)
    seen = with_unigram_session_copies(data, train, 2, seed=3)
    named = np.flatnonzero(data.labels[train] == 1)
    assert len(seen) == len(train) + 2 * len(named)
    assert np.array_equal(seen.unigrams[: len(train)], data.unigrams[train])
    assert np.array_equal(seen.labels[len(train) :], np.ones(2 * len(named), np.int8))
    names = with_session_copies(data, train, 2, seed=3)  # the same seeded names
    copies = seen.unigrams[len(train) :]
    originals = np.tile(data.unigrams[train][named], (2, 1))
    new_names = names.qname_bytes[len(train) :]
    new_len = names.qname_len[len(train) :]
    changed = 0
    for row, name, n, original in zip(copies, new_names, new_len, originals, strict=True):
        counts = np.bincount(name[:n], minlength=256)
        assert np.allclose(row[:256], transform_counts(counts[None], "log1p")[0])  # the recipe's
        assert row[256] == n  # name_len of the new name
        assert np.array_equal(row[258:], original[258:])  # context: the original's
        changed += not np.array_equal(row[:256], original[:256])
    assert changed > 0.9 * len(copies)  # the domain and id really were redrawn
    whole = data.replace_arrays()
    whole.features = {**data.features, "scope": "dns"}  # message bytes: cannot be redrawn
    assert len(with_unigram_session_copies(whole, train, 2, seed=3)) == len(train)
