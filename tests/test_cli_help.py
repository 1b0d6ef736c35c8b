"""Console output of ``slt-tms``: every flag of every command explained, defaults once, one bar per stage."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from _child import child_env

from slt_tms.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("slt-tms",)) -> Iterator:
    """``(path, parser)`` for the top-level parser and every (nested) subcommand."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _flags() -> list[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    out = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            out.append((f"{' '.join(path)} {name}", parser, action))
    return out


FLAGS = _flags()


def test_every_command_is_found():
    commands = {p[1] for p, _ in _parsers(build_parser()) if len(p) > 1}
    assert {"reproduce", "train", "llc", "phases", "dynamics", "theory", "superposition"} <= commands
    assert len(FLAGS) > 100


def test_every_subcommand_has_a_summary():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing = [c.dest for c in action._choices_actions if not (c.help or "").strip()]
                assert not missing, f"{' '.join(path)}: subcommands without a help line: {missing}"


@pytest.mark.parametrize(("name", "parser", "action"), FLAGS, ids=[f[0] for f in FLAGS])
def test_flag_help(name, parser, action):
    assert action.help is not None and action.help.strip(), f"{name} has no help text"
    if action.help == argparse.SUPPRESS:
        return
    # The help as --help prints it: %(default)s expanded and, with ArgumentDefaultsHelpFormatter,
    # the appended default (argparse's own expansion; a private method, stable across 3.11-3.13).
    text = " ".join(parser._get_formatter()._expand_help(action).split())
    assert len(re.findall(r"\(default", text)) <= 1, f"{name}: the default is given twice: {text!r}"
    assert "(default: None)" not in text, f"{name}: an uninformative default: {text!r}"


def test_help_of_every_command_prints():
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert text.startswith("usage: "), path


def test_one_progress_bar_per_stage(tmp_path):
    """The LLC of a critical point with a ladder (several estimates): one bar, not one per estimate."""
    env = child_env()
    env.pop("SLT_TMS_NO_PROGRESS", None)
    cmd = [
        sys.executable, "-m", "slt_tms", "llc", "--tms-critical", "6", "--c", "6", "--n", "10000",
        "--num-chains", "2", "--num-burnin", "20", "--num-draws", "20", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # tqdm redraws a bar in place with \r; a new bar starts at "0/<total>".
    starts = re.findall(r"([^\r\n]*?):\s+0%\|[^\r\n]*?\|\s*0/\d+ \[", proc.stderr)
    assert len(starts) == 1, f"expected one progress bar, got {len(starts)}: {starts}"
    assert "lambda_hat" in proc.stdout


#: Libraries that take most of a second each to import and that neither the command line's parser nor an
#: LLC estimate of an ``nn.Module`` needs (sympy derives the TMS loss, scipy serves the phase analysis,
#: matplotlib the figures; ArviZ is imported when the diagnostics are computed).
_HEAVY = ("sympy", "matplotlib", "scipy", "arviz")


def _imported_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {_HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=child_env(),
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_the_parser_imports_no_heavy_library():
    """``slt-tms --help`` and every command's ``--help`` build the whole parser: nothing heavy is imported
    until a command runs (the import of torch is the start-up's floor)."""
    code = ("import contextlib, io\nfrom slt_tms.cli import main\n"
            "for argv in (['--help'], ['llc', '--help'], ['phases', 'sample', '--help'],\n"
            "             ['reproduce', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main(argv)")
    assert _imported_after(code) == []


def test_an_llc_estimate_of_a_module_does_not_import_sympy():
    """sympy derives the TMS's closed-form loss; an estimate on a user's model never needs it (ArviZ, which
    imports scipy and matplotlib itself, computes the diagnostics)."""
    code = ("import warnings, torch\nfrom torch import nn\nfrom slt_tms.estimators import estimate_llc\n"
            "X = torch.randn(50, 2)\nwith warnings.catch_warnings():\n    warnings.simplefilter('ignore')\n"
            "    estimate_llc(nn.Linear(2, 1), (X, X[:, :1]), loss='mse', num_chains=2, num_burnin=10,\n"
            "                 num_draws=10, progress=False)")
    imported = _imported_after(code)
    assert "sympy" not in imported and "arviz" in imported
