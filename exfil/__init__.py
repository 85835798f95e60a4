"""Shared building blocks of exfil-detect: capture I/O, DNS wire format, features, CLI helpers.

Importing the package checks, without importing them, that the packages of requirements.txt
that every script needs are there: a script run by a python without them (the system python
instead of the project's venv) then says in one line which python to use, not a traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]  # the project folder: default paths hang off it
NEEDED = ("numpy", "torch", "publicsuffixlist", "tqdm")  # import name for each script's needs


def missing_packages(names: tuple[str, ...] = NEEDED) -> list[str]:
    """The packages of `names` this python cannot import (found by their spec: nothing loads)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def _how_to_install(missing: list[str]) -> str:
    venv_python = PROJECT / ".venv" / "bin" / "python"
    if venv_python.exists():
        advice = f"run it with the project's python: {venv_python}"
    else:
        advice = f"install them first: make -C {PROJECT} install, then use {venv_python}"
    return f"{sys.executable} lacks {', '.join(missing)} (requirements.txt); {advice}"


def _check_requirements() -> None:
    missing = missing_packages()
    if not missing:
        return
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    if Path(main_file).resolve().is_relative_to(PROJECT):  # one of our scripts: one line, exit 2
        print(f"{Path(main_file).name}: error: {_how_to_install(missing)}", file=sys.stderr)
        raise SystemExit(2)
    raise ImportError(_how_to_install(missing))  # a library user gets the usual ImportError


_check_requirements()
