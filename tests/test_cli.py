import subprocess
import sys

from slt_tms import __version__
from slt_tms.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_groups():
    out = subprocess.run([sys.executable, "-m", "slt_tms", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "COMMAND" in out.stdout


def test_abbreviated_options_are_refused_in_every_command(capsys):
    """argparse would take --num-chain for --num-chains silently; every parser refuses abbreviations."""
    import pytest

    for argv in (["llc", "--tms-critical", "6", "--c", "6", "--num-chain", "3"],
                 ["theory", "critical-points", "--c", "6", "--form", "json"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def test_ctrl_c_ends_with_one_line_and_status_130(capsys, monkeypatch):
    import slt_tms.commands.llc as llc_command

    def interrupted(*_args, **_kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(llc_command, "_run", interrupted)
    assert main(["llc", "--tms-critical", "6", "--c", "6"]) == 130
    err = capsys.readouterr().err
    assert err == "slt-tms: interrupted\n"


def test_theory_output_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    import slt_tms.commands.theory as theory

    def no_work(*a, **k):
        raise AssertionError("the critical points were computed before the --output check")

    monkeypatch.setattr(theory, "critical_point_rows", no_work)
    for target, words in ((tmp_path, "is a directory; give a file name"),
                          (tmp_path / "missing" / "x.csv", "does not exist; create it")):
        assert main(["theory", "critical-points", "--c", "3", "--format", "csv", "--output",
                     str(target)]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
