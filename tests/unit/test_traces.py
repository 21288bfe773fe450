"""The sample captures in traces/ give the analysis their README states (tshark as the reference)."""

import re
import subprocess
from pathlib import Path

import pytest

TRACES = Path(__file__).resolve().parents[2] / "traces"


def readme_tables():
    """{capture name: the tshark output the README shows for it}."""
    text = (TRACES / "README.md").read_text()
    found = re.findall(r"^\$ tshark -r (\S+) (.*)\n((?:.*\t.*\n)+)", text, re.M)
    return {name: (args, table) for name, args, table in found}


@pytest.mark.parametrize("name", sorted(readme_tables()))
def test_tshark_prints_what_the_readme_says(name):
    args, table = readme_tables()[name]
    argv = ["tshark", "-r", str(TRACES / name)] + [a.strip("'") for a in re.findall(r"'[^']*'|\S+", args)]
    assert subprocess.run(argv, capture_output=True, text=True, check=True).stdout == table


def test_every_capture_is_documented():
    assert sorted(readme_tables()) == sorted(p.name for p in TRACES.glob("*.pcap"))
