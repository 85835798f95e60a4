"""Turn a script's UPPER_CASE constants into command-line flags, and report errors in one line.

Every top-level script keeps its tunables as constants in one block between two banner lines,
each with a trailing comment; allowed values are declared once, as a `Literal` annotation:

    # -----------------------------------------------------------------------------
    EPOCHS = 20                                     # passes over the training set
    RULE: Literal["domain", "time"] = "domain"      # labelling rule
    # -----------------------------------------------------------------------------

`configure(globals())` builds an argparse parser from them (`--epochs 5`, `--rule time`), takes the
help text from the trailing comment and `choices=` from the annotation, coerces values to the
constant's type, rejects unknown flags, and writes the parsed values back into the script's
globals (the script's own reading of them; library code gets a settings object instead).
Editing the constant and passing the flag therefore do the same thing.

`run(main)` is the script entry point: a `UserError` (bad input the user can fix) becomes one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

BANNER = "# ---"  # a line starting so opens and closes a script's constants block
VERBOSE_FLAG = "--verbose"  # every script takes it: tracebacks of internal errors shown


class UserError(Exception):
    """A problem with the user's input or files: reported in one line, exit code 2."""


def constants_block(source_file: str | None) -> dict[str, str] | None:
    """Constant name -> help text (its trailing comment), for the script's banner-marked block.

    Only the first block between two banner lines counts, so a constant assigned elsewhere in
    the script (or imported) never becomes a flag. None when the source cannot be read.
    """
    if not source_file or not Path(source_file).is_file():
        return None
    lines = Path(source_file).read_text(encoding="utf-8").splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith(BANNER)]
    if len(marks) < 2:
        return {}
    block = lines[marks[0] + 1 : marks[1]]
    found: dict[str, str] = {}
    for node in ast.parse("\n".join(block)).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name) and re.fullmatch(r"[A-Z][A-Z0-9_]*", target.id):
                rest = block[node.end_lineno - 1].encode()[node.end_col_offset :].decode()
                found[target.id] = rest.split("#", 1)[1].strip() if "#" in rest else ""
    return found


def _hint(name: str, namespace: dict[str, Any]) -> Any:
    """The constant's annotation as an object (scripts may defer annotations to strings)."""
    hint = namespace.get("__annotations__", {}).get(name)
    if isinstance(hint, str):
        try:
            hint = eval(hint, namespace)  # noqa: S307 (the script's own annotation)
        except Exception:  # noqa: BLE001 (an annotation we cannot read just gives no choices)
            return None
    return hint


def declared_choices(name: str, namespace: dict[str, Any]) -> tuple | None:
    """Allowed values from a `Literal[...]` annotation (or `list[Literal[...]]` for lists)."""
    hint = _hint(name, namespace)
    if get_origin(hint) in (list, tuple) and get_args(hint):
        hint = get_args(hint)[0]
    return get_args(hint) if get_origin(hint) is Literal else None


def _element_type(name: str, value: Sequence, namespace: dict[str, Any]) -> type:
    if value:
        return type(value[0])
    hint = _hint(name, namespace)
    args = get_args(hint)
    if args and get_origin(args[0]) is Literal:
        args = (type(get_args(args[0])[0]),)
    return args[0] if args and args[0] in (int, float) else str


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _ListAction(argparse.Action):
    """`--flag a b` and `--flag a --flag b` both give [a, b]; the constant's default is replaced."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        seen = getattr(namespace, "_lists_seen", set())
        current = list(getattr(namespace, self.dest)) if self.dest in seen else []
        seen.add(self.dest)
        namespace._lists_seen = seen
        setattr(namespace, self.dest, current + list(values))


def constants(namespace: dict[str, Any]) -> dict[str, Any]:
    """The script's tunable constants: UPPER_CASE names bound to plain values.

    When the script's source is known, only names its constants block assigns count, so
    constants it imports from a module or uses internally never become flags.
    """
    plain = (bool, int, float, str, list, tuple, type(None))
    own = constants_block(namespace.get("__file__"))
    return {
        name: value
        for name, value in namespace.items()
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", name)
        and isinstance(value, plain)
        and (own is None or name in own)
    }


def configure(
    namespace: dict[str, Any],
    argv: Sequence[str] | None = None,
    *,
    positional: str | None = None,
    choices: dict[str, Sequence[Any]] | None = None,
    paths: Sequence[str] = (),
) -> dict[str, Any]:
    """Parse flags for every constant in `namespace`, update it in place, return the config.

    `positional` names one list constant filled by positional arguments (e.g. CAPTURES).
    Allowed values come from a constant's `Literal[...]` annotation (checked for list elements
    too); `choices` can add or override them. `paths` names path constants whose *defaults*,
    when relative, are the project's files (a script run from another folder still finds
    checkpoints/clf.pt); a path given as a flag is the user's, relative to the current folder.
    The returned dict maps lower-case names to resolved values, ready to print and save.
    """
    # the defaults are the constants as the script wrote them, however often main() runs
    tunables = namespace.setdefault("__cli_defaults__", constants(namespace))
    declared = {name: declared_choices(name, namespace) for name in tunables}
    choices = {**{k: v for k, v in declared.items() if v is not None}, **(choices or {})}
    helps = constants_block(namespace.get("__file__")) or {}
    doc = (namespace.get("__doc__") or "").strip()
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0] if doc else None,
        epilog="\n".join(doc.splitlines()[1:]).strip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    if "VERBOSE" not in tunables:  # a script's own VERBOSE constant is this flag too
        parser.add_argument(VERBOSE_FLAG, action="store_true", dest="_verbose",
                            help="print more, and the traceback of an internal error")  # fmt: skip
    for name, default in tunables.items():
        help_text, allowed = helps.get(name, ""), choices.get(name)
        _add_flag(parser, name, default, help_text, allowed, namespace, name == positional)
    parsed = vars(parser.parse_args(argv))
    parsed.pop("_lists_seen", None)
    parsed.pop("_verbose", None)
    if positional:
        parsed[positional] = parsed.pop(positional.lower())
    config = {}
    for name in tunables:
        value = parsed[name]
        if name in paths and value == tunables[name]:
            value = _from_project(value)
        if isinstance(tunables[name], tuple):
            value = tuple(value)
        namespace[name] = value
        config[name.lower()] = value
    return config


def _from_project(value: Any) -> Any:
    """A default path (or list of them) resolved against the project folder where relative."""
    from exfil import PROJECT

    if isinstance(value, (list, tuple)):
        return type(value)(_from_project(item) for item in value)
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(PROJECT / value)
    return value


def _add_flag(parser, name: str, default: Any, text: str, allowed, namespace, positional: bool):  # noqa: ANN001
    """One constant as a flag: typed from its default, documented by its comment."""
    text = f"{text} (default: {default!r})" if text else f"default: {default!r}"
    kwargs: dict[str, Any] = {"default": default, "help": text.replace("%", "%%"), "dest": name}
    if allowed is not None:
        kwargs["choices"] = list(allowed)
    if isinstance(default, bool):
        kwargs.update(type=_parse_bool, nargs="?", const=True, metavar="BOOL")
    elif isinstance(default, (list, tuple)):
        kwargs.update(type=_element_type(name, default, namespace), nargs="*")
        if not positional:
            kwargs["action"] = _ListAction
    elif default is not None:
        kwargs["type"] = type(default)
    if positional:
        kwargs.pop("dest")
        parser.add_argument(name.lower(), **kwargs)
        return
    flag = name.lower().replace("_", "-")
    parser.add_argument("--" + flag, **kwargs)
    if isinstance(default, bool):
        parser.add_argument("--no-" + flag, dest=name, action="store_false", help=argparse.SUPPRESS)


def verbose() -> bool:
    """Whether the run asked for --verbose (the settings dump and tracebacks are behind it)."""
    return VERBOSE_FLAG in sys.argv[1:]


def check_range(
    flag: str, value: float, low: float | None = None, high: float | None = None
) -> None:
    """A UserError (one line, exit code 2) unless low <= value <= high: a value outside can
    never do what the user meant (a threshold of 2 never flags), so it is refused up front."""
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"between {low:g} and {high:g}" if low is not None and high is not None
                  else f">= {low:g}" if low is not None else f"<= {high:g}")  # fmt: skip
        raise UserError(f"--{flag} {value:g}: must be {bounds}")


def format_config(config: dict[str, Any]) -> str:
    """One line per setting, for the log and for a saved `config.json` beside outputs."""
    width = max((len(key) for key in config), default=0)
    return "\n".join(f"  {key:<{width}} = {json.dumps(value)}" for key, value in config.items())


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def run(main: Callable[[], int | None]) -> None:
    """Call `main`; every failure becomes one line on stderr and exit code 2, never a traceback.

    A `UserError` or an OS error (missing file, no permission, disk full, read-only folder) says
    what and where; anything else is a bug: one line asking to report it, exit 2 as well (so a
    crash never reads as a result code such as detect.py's 1 = alerts), and the traceback
    with `--verbose`. Ctrl-C exits with 130, as shells expect.
    """
    prog = Path(sys.argv[0]).name
    verbose = VERBOSE_FLAG in sys.argv[1:]
    try:
        code = main()
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stderr.close()
        sys.exit(0)
    except OSError as error:
        where = f": {error.filename}" if getattr(error, "filename", None) else ""
        print(f"{prog}: error: {error.strerror or _one_line(error)}{where}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 (the last resort: a bug, reported in one line)
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else "; rerun with --verbose for the traceback"
        print(
            f"{prog}: internal error: {type(error).__name__}: {_one_line(error)} "
            f"(please report it{hint})",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(code or 0)
