"""Allowlists: names whose flagged packets are scored but never alerted, and are reported.

    allow = Allowlist.load(["site.txt"], default=True)   # + the shipped exfil/data/allowlist.txt
    entry = allow.entry_of("x1.avqs.mcafee.com")           # "avqs.mcafee.com", or None

File format: one registered domain or name a line, `#` comments (a comment after an entry is
its reason, shown with what it suppressed); an entry covers the name itself and every name
under it, `*.x` means the same as `x`, case does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exfil.cli import UserError

DEFAULT = Path(__file__).with_name("data") / "allowlist.txt"
MAX_ENTRY = 253  # a longer entry cannot be a DNS name
MAX_SUPPRESSED_NAMES = 50_000  # distinct names remembered per entry; beyond it the count is a floor


def _clean(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    return name[2:] if name.startswith("*.") else name


@dataclass
class Suppressed:
    """What one entry kept out of the alerts: flagged queries and distinct names."""

    reason: str
    queries: int = 0
    names: set[str] = field(default_factory=set)  # up to MAX_SUPPRESSED_NAMES, then a floor
    overflow: bool = False

    def add(self, names: set[str]) -> None:
        """Remember distinct names up to the cap (a live run under a flood stays bounded)."""
        fresh = names - self.names
        room = max(MAX_SUPPRESSED_NAMES - len(self.names), 0)
        self.names.update(list(fresh)[:room])
        self.overflow |= len(fresh) > room


@dataclass
class Allowlist:
    entries: dict[str, str] = field(default_factory=dict)  # entry -> reason
    seen: dict[str, Suppressed] = field(default_factory=dict)  # entry -> what it suppressed

    @classmethod
    def load(cls, paths: list[str], default: bool = True) -> Allowlist:
        """The entries of the given files (and of the default list); bad lines are errors."""
        entries: dict[str, str] = {}
        for path in ([DEFAULT] if default else []) + [Path(p) for p in paths]:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise UserError(f"{path}: allowlist not readable ({error})") from None
            for number, line in enumerate(lines, 1):
                entry, _, reason = line.partition("#")
                entry = _clean(entry)
                if not entry:
                    continue
                labels = entry.split(".")
                if len(entry) > MAX_ENTRY or any(not x or x.split() != [x] for x in labels):
                    raise UserError(f"{path}:{number}: {line.strip()!r} is not a domain name")
                entries[entry] = reason.strip() or f"listed in {Path(path).name}"
        return cls(entries)

    def fresh(self) -> Allowlist:
        """The same entries with nothing tallied yet (one per capture or live session)."""
        return Allowlist(dict(self.entries))

    def entry_of(self, name: str) -> str | None:
        """The entry covering `name` (the name itself or a parent of it), or None."""
        if not self.entries:
            return None
        labels = _clean(name).split(".")
        for start in range(len(labels)):
            suffix = ".".join(labels[start:])
            if suffix in self.entries:
                return suffix
        return None

    def keep_out(self, names: list[str]) -> list[bool]:
        """Per flagged name: whether an entry covers it (then it is tallied, not alerted)."""
        covered = []
        for name in names:
            entry = self.entry_of(name)
            if entry is not None:
                tally = self.seen.setdefault(entry, Suppressed(self.entries[entry]))
                tally.queries += 1
                tally.add({name})
            covered.append(entry is not None)
        return covered

    def merge(self, other: Allowlist) -> None:
        """Fold in another process's tallies."""
        for entry, tally in other.seen.items():
            mine = self.seen.setdefault(entry, Suppressed(tally.reason))
            mine.queries += tally.queries
            mine.add(tally.names)
            mine.overflow |= tally.overflow

    def report(self) -> list[dict]:
        """alerts.json's "suppressed": each entry that kept flagged packets out, busiest first."""
        rows = [
            {
                "domain": e,
                "reason": t.reason,
                "queries": t.queries,
                "unique_names": len(t.names),
                "unique_names_is_floor": t.overflow,
            }
            for e, t in self.seen.items()
        ]
        return sorted(rows, key=lambda row: (-row["queries"], row["domain"]))
