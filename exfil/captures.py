"""Which captures a command line names, and running one piece of work per capture.

paths = checked_capture_paths(["caps/", "one.pcapng", "list.txt"])   # expanded, each checked
results = map_captures(work, paths, workers=0)                        # in order, one per core
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from exfil import PROJECT
from exfil.cli import UserError
from exfil.pcapformat import check_capture

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp")  # picked from folders
LIST_SUFFIXES = (".txt", ".list", ".lst")  # text files naming one capture per line (or, if
# their first entry is no file beside them and every line is a DNS name, names to scan)


def capture_paths(arguments: list[str]) -> list[Path]:
    """Expand capture arguments: files, folders (their captures, sorted), and name lists."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in CAPTURE_SUFFIXES)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file() and not _names(path):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    name = Path(line.strip())
                    found += capture_paths(
                        [str(name if name.is_absolute() else path.parent / name)]
                    )
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{argument}: no such capture, folder or list")
    if not found:
        raise UserError("no captures given (files, folders of captures, or lists of them)")
    return found


def _names(path: Path) -> bool:
    """A list of DNS names to scan (exfil.logread), not a list of captures."""
    from exfil.logread import log_format

    return log_format(path) == "names"


def checked_capture_paths(arguments: list[str]) -> list[Path]:
    """capture_paths, each file checked to be a capture before any work or output starts."""
    from exfil.logread import log_format

    paths = capture_paths(arguments)
    for path in paths:
        if log_format(path) is None:  # a Zeek or Suricata DNS log is read as well
            check_capture(path)
    return paths


def map_captures(work, paths: list, workers: int = 0, scheduler: str = "") -> list:  # noqa: ANN001
    """[work(path) for path in paths], in order, on up to `workers` processes (0 = cores), or
    on the Dask cluster whose scheduler is at `scheduler`."""
    if scheduler:
        return map_on_cluster(work, paths, scheduler)
    workers = min(workers or os.cpu_count() or 1, len(paths))
    if workers <= 1:
        return [work(path) for path in paths]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(work, paths, chunksize=1)


def map_on_cluster(work, paths: list, scheduler: str, timeout: float = 20) -> list:  # noqa: ANN001
    """[work(path) for path in paths] as one task per capture on an existing Dask distributed
    cluster, gathered in order. Workers get absolute paths (captures and outputs must be on
    storage they share with this machine, at the same paths) and `name=` the path as given,
    so the outputs are those of a local run; a task's error comes back as raised."""
    try:
        from distributed import Client
    except ImportError:
        raise UserError("--scheduler needs dask.distributed (requirements.txt)") from None
    try:
        client = Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise UserError(f"--scheduler {scheduler}: no Dask scheduler there ({error})") from None
    with client:
        futures = client.map(_named, [work] * len(paths), [Path(p).absolute() for p in paths],
                             [str(p) for p in paths], pure=False)  # fmt: skip
        try:
            return client.gather(futures)
        except RuntimeError as error:  # the cluster cannot unpickle our tasks
            if "deserializ" not in str(error):
                raise
            raise UserError(
                f"--scheduler {scheduler}: the cluster cannot load this project's code; start "
                f"the scheduler and workers with PYTHONPATH={PROJECT} and the same packages"
            ) from None


def _named(work, path: Path, name: str):  # noqa: ANN001, ANN202
    return work(path, name=name)


def with_progress(batches: Iterator, path: str | os.PathLike) -> Iterator:
    """Pass DnsBatch-like batches through, with a tqdm bar over the file's bytes on a tty."""
    done = 0
    total = os.path.getsize(path)
    with tqdm(total=total, unit="B", unit_scale=True, desc=Path(path).name,
              disable=not sys.stderr.isatty(), leave=False) as bar:  # fmt: skip
        for batch in batches:
            if len(batch):
                reached = int(batch.msg_off[-1] + batch.msg_len[-1])
                bar.update(max(reached - done, 0))
                done = max(done, reached)
            yield batch
        bar.update(max(total - done, 0))
