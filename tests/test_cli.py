"""The constants-to-flags helper: every constant is a flag, typed, documented, strict."""

import subprocess
import sys
import textwrap

import pytest

from exfil.cli import configure

SCRIPT = textwrap.dedent(
    '''
    """Toy script."""
    import sys
    from typing import Literal
    sys.path.insert(0, {root!r})
    from exfil.cli import UserError, configure, run
    from exfil.dnsmsg import MAX_LABEL  # imported constants are not flags

    # ---------------------------------------------------------------- config
    CAPTURES: list[str] = []   # capture files
    EPOCHS = 20                # passes over the data (100% of it)
    RULE: Literal["domain", "time"] = "domain"  # labelling rule ("#" in help)
    # ----------------------------------------------------------------
    INTERNAL = 3  # outside the block: not a flag

    def main():
        configure(globals(), positional="CAPTURES")
        if not CAPTURES:
            raise UserError("no capture given")
        print(EPOCHS, RULE, CAPTURES)

    run(main)
    '''
)


def namespace(**values):
    return {"__file__": None, "__doc__": "doc", **values}


def test_flags_override_constants_with_their_types():
    ns = namespace(EPOCHS=20, LR=1e-3, NAME="x", DRY_RUN=False, PORTS=[53])
    config = configure(ns, ["--epochs", "5", "--lr", "0.5", "--dry-run", "--ports", "53", "5353"])
    assert ns["EPOCHS"] == 5 and isinstance(ns["EPOCHS"], int)
    assert ns["LR"] == 0.5 and ns["DRY_RUN"] is True and ns["PORTS"] == [53, 5353]
    assert config == {"epochs": 5, "lr": 0.5, "name": "x", "dry_run": True, "ports": [53, 5353]}


def test_repeated_list_flag_accumulates_and_replaces_default():
    ns = namespace(DOMAINS=["default.example"])
    configure(ns, ["--domains", "a.example", "--domains", "b.example"])
    assert ns["DOMAINS"] == ["a.example", "b.example"]


def test_bool_flag_can_be_turned_off():
    ns = namespace(COMPRESS=True)
    configure(ns, ["--no-compress"])
    assert ns["COMPRESS"] is False
    configure(ns, ["--compress", "true"])
    assert ns["COMPRESS"] is True


def test_unknown_flag_and_bad_choice_are_errors():
    with pytest.raises(SystemExit) as unknown:
        configure(namespace(EPOCHS=1), ["--epoch", "3"])
    assert unknown.value.code == 2
    with pytest.raises(SystemExit):
        configure(namespace(RULE="domain"), ["--rule", "nope"], choices={"RULE": ("domain",)})


def test_script_help_error_and_success(tmp_path):
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    script = tmp_path / "toy.py"
    script.write_text(SCRIPT.format(root=root))
    helped = subprocess.run([sys.executable, script, "-h"], capture_output=True, text=True)
    assert helped.returncode == 0 and "passes over the data (100% of it)" in helped.stdout
    assert "--max-label" not in helped.stdout and "--internal" not in helped.stdout
    assert 'labelling rule ("#" in help)' in helped.stdout and "{domain,time}" in helped.stdout
    bad = subprocess.run([sys.executable, script, "a.pcap", "--rule", "x"], capture_output=True)
    assert bad.returncode == 2 and b"invalid choice" in bad.stderr
    failed = subprocess.run([sys.executable, script], capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stderr.strip() == "toy.py: error: no capture given"
    ran = subprocess.run(
        [sys.executable, script, "a.pcap", "--epochs", "3", "--rule", "time"],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0 and ran.stdout.split() == ["3", "time", "['a.pcap']"]


def test_literal_annotations_declare_choices_for_values_and_lists():
    from typing import Literal

    ns = namespace(RULE="a", NAMES=["x"])
    ns["__annotations__"] = {"RULE": Literal["a", "b"], "NAMES": "list[Literal['x', 'y']]"}
    ns["Literal"] = Literal
    assert configure(ns, ["--rule", "b", "--names", "y", "x"]) == {"rule": "b", "names": ["y", "x"]}
    with pytest.raises(SystemExit):
        configure(ns, ["--names", "z"])


def test_second_configure_starts_from_the_scripts_defaults_not_the_last_flags():
    ns = namespace(EPOCHS=20, PORTS=[53])
    configure(ns, ["--epochs", "5", "--ports", "5353"])
    assert configure(ns, []) == {"epochs": 20, "ports": [53]}
    assert ns["EPOCHS"] == 20 and ns["PORTS"] == [53]
