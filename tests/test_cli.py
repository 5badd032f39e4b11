"""What `jaxpde certify` shows while it runs and at the end, when its output is a log."""

import json
import os
import re
import subprocess
import sys

import pytest

import jaxpde.claims
from jaxpde.claims import Claim, Evidence
from jaxpde.cli import main, peak_memory_gb
from jaxpde.verify.certificate import CaseResult

# A claim id longer than the 120 columns that used to cut the table cannot be shown
# whole in a narrow table; this one is long enough to be cut by a narrow console.
LONG_ID = "a-claim-with-a-rather-long-identifier"


def _fixed(worst: float):
    def run(key, budget):
        del key, budget
        passed = worst <= 1.0
        return Evidence((CaseResult("fixed case", 7, worst, 1.0, 0.0, passed),), 1.0, "<=", "exact")

    return run


@pytest.fixture
def two_claims(monkeypatch):
    monkeypatch.setenv("JAXPDE_CACHE_DIR", "")
    claims = (Claim(LONG_ID, "holds", _fixed(0.5)), Claim("fails", "does not hold", _fixed(2.0)))
    monkeypatch.setattr(jaxpde.claims, "CLAIMS", claims)
    return claims


def test_a_log_gets_one_line_per_finished_claim_and_the_totals(two_claims, capsys):
    code = main(["certify", "--claim", LONG_ID, "--claim", "fails"])
    assert code == 1
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert len(lines) == 2
    finished = {}
    for line in lines:
        match = re.fullmatch(r"\[([12])/2\] (\S+) +(certified|violated) +([0-9.]+) s.*", line)
        assert match, line
        finished[match.group(2)] = match.group(3)
    assert finished == {LONG_ID: "certified", "fails": "violated"}
    # The totals: claims, wall-clock and peak memory, in the table's output.
    total = re.search(r"1/2 claims certified in ([0-9.]+) s wall-clock, peak memory ([0-9.]+) GB", out)
    assert total and float(total.group(2)) > 0
    # No column of the table is cut in a log.
    assert LONG_ID in out and "certified" in out and "violated" in out
    assert "…" not in out
    for column in ("claim", "status", "samples", "worst", "bound", "tolerance", "falsifier", "seconds"):
        assert column in out


def test_json_output_keeps_stdout_parseable_and_reports_totals_on_stderr(two_claims, capsys):
    assert main(["certify", "--json", "--claim", "fails"]) == 1
    out, err = capsys.readouterr()
    assert [r["id"] for r in json.loads(out)] == ["fails"]
    assert re.search(r"\[1/1\] fails +violated", err)
    assert "0/1 claims certified in" in err and "peak memory" in err


def test_progress_lines_reach_a_pipe_as_each_claim_finishes():
    """Through a real pipe (not a terminal): the line of the quick claim arrives on stderr
    while the slow one still runs."""
    script = (
        "import sys, time, jaxpde.claims as c\n"
        "from jaxpde.cli import main\n"
        "from jaxpde.verify.certificate import CaseResult\n"
        "def after(seconds):\n"
        "    def run(key, budget):\n"
        "        time.sleep(seconds)\n"
        "        return c.Evidence((CaseResult('x', 5, 0.5, 1.0, 0.0, True),), 1.0, '<=', 'exact')\n"
        "    return run\n"
        "c.CLAIMS = (c.Claim('first', 's', after(0.1)), c.Claim('second', 's', after(5.0)))\n"
        "sys.exit(main(['certify', '--claim', 'first', '--claim', 'second']))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "JAXPDE_CACHE_DIR": ""},
    )
    first = process.stderr.readline()
    while first and not first.startswith("["):
        first = process.stderr.readline()
    assert re.match(r"\[1/2\] first +certified", first)
    assert process.poll() is None  # the slow claim has not finished yet
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    assert "2/2 claims certified in" in out and "peak memory" in out


def test_peak_memory_is_positive_and_plausible():
    assert 0.01 < peak_memory_gb() < 1024


def test_python_dash_m_runs_the_command_line():
    # `python -m jaxpde` and the `jaxpde` script are the same `main`: an unknown claim
    # id exits 2 and names the known ids, without checking anything.
    result = subprocess.run(
        [sys.executable, "-m", "jaxpde", "certify", "--claim", "no-such-claim"],
        capture_output=True, text=True, env={**os.environ, "JAXPDE_CACHE_DIR": ""}, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert "unknown claim id 'no-such-claim'" in result.stderr
    assert "explicit-stability" in result.stderr
