"""Does MPTCP through the proxy add the uplinks up? A benchmark that prints figures, not a pass/fail test.

    .venv/bin/python tests/bench/bench_aggregation.py [--rates 20,20 20,5 20,2] [--seconds 15]

For each pair of uplink rates, in one lab: the plain-TCP download rate over each uplink alone (a client
on the lab host bound to that uplink's address), then the rate through the guest's SOCKS5 proxy over
MPTCP with both (curl --socks5-hostname), and the ratio of that to the sum of the single-uplink rates.
Where the default makes the slow uplink a backup (slower than a fifth of the fast one), one download
over the fast uplink alone (--uplinks FAST) shows that the backup costs nothing: what is lost against
plain TCP is MPTCP's own overhead (its DSS option takes about 28 of a segment's 1448 bytes). What the
slow uplink does when it is active, and what a server's cap on unsent data changes, bench_proxy.py
shows. The default: the median of --rounds downloads, with their range.
Targets (issue 9): >= 0.97 for 20+20 and 20+5; for 20+2 never below the best uplink alone and >= 0.90.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from ansible_collections.mpsocks.mptcp.plugins.module_utils import addressing  # noqa: E402
from mpsocks_testlib import lab_name, mpsocks_run  # noqa: E402

CLIENT = TESTS / "e2e" / "lab_client.py"
TARGETS = {(20.0, 20.0): 0.97, (20.0, 5.0): 0.97, (20.0, 2.0): 0.90}
PROXY = "10.66.6.2:1080"


def on_lab_host(lab_host: str | None) -> list[str]:
    """The command prefix that runs a command on the lab host (None: the root namespace is the host)."""
    return ["ip", "netns", "exec", lab_host] if lab_host else []


def plain_rate(lab_host: str | None, url: str, source: str) -> float:
    """Mbit/s of one plain-TCP download from the lab host, leaving by the uplink of SOURCE."""
    argv = [*on_lab_host(lab_host), sys.executable, str(CLIENT), url, "--bind", source]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    got = json.loads(proc.stdout)
    return got["length"] * 8 / got["seconds"] / 1e6


def socks_rates(lab_host: str | None, url: str, rounds: int) -> list[float]:
    """Mbit/s of ROUNDS downloads through the SOCKS5 proxy (which resolves names), as curl measures them."""
    argv = [*on_lab_host(lab_host), "curl", "-s", "-o", "/dev/null", "--socks5-hostname", PROXY,
            "-w", "%{speed_download}", url]
    rates = []
    for _ in range(rounds):
        run = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
        rates.append(float(run.stdout) * 8 / 1e6)
    return rates


def measure(rates: tuple[float, float], seconds: float, rounds: int, artifacts: Path) -> dict:
    name = lab_name("g")
    rc, output = mpsocks_run("lab", "up", "--name", name, "--rates", ",".join(f"{r:g}" for r in rates),
                             "--hops", "4", artifacts=artifacts)
    try:
        assert rc == 0, output
        plan = json.loads((Path("/run/mpsocks/lab") / name / "lab.json").read_text())
        host, download = plan["host_netns"], plan["servers"]["download"]
        url = f"{download}bytes/{int(sum(rates) * 1e6 / 8 * seconds)}"

        def up(*uplinks: str) -> None:
            chosen = ("--uplinks", ",".join(uplinks)) if uplinks else ()
            rc, output = mpsocks_run("up", "--backend", "netns", "--lab", name, *chosen, artifacts=artifacts)
            assert rc == 0, output

        up()
        singles = []
        for uplink in plan["uplinks"]:
            size = int(uplink["rate_mbit"] * 1e6 / 8 * seconds)
            singles.append(plain_rate(host, f"{download}bytes/{size}", uplink["address"].split("/")[0]))
        socks = {"default": socks_rates(host, url, rounds)}
        slow = [u["name"] for u in plan["uplinks"] if u["rate_mbit"] < addressing.BACKUP_BELOW * max(rates)]
        if slow:  # what the backup costs: MPTCP over the fast uplinks alone, one download
            fast = [u["name"] for u in plan["uplinks"] if u["name"] not in slow]
            up(*fast)
            socks[f"{'+'.join(fast)} only"] = socks_rates(host, url, 1)
        return {"singles": singles, "socks": socks}
    finally:
        mpsocks_run("down", artifacts=artifacts)
        mpsocks_run("lab", "down", "--name", name, artifacts=artifacts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", default=["20,20", "20,5", "20,2"], metavar="A,B")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="length of each download at its rate (MPTCP needs a few seconds to open and "
                             "fill its second subflow)")
    parser.add_argument("--rounds", type=int, default=3, help="downloads per setting (the median is shown)")
    parser.add_argument("--artifacts", type=Path, default=Path("/tmp/mpsocks-bench-aggregation"))
    args = parser.parse_args()
    rows = []
    for text in args.rates:
        rates = tuple(float(r) for r in text.split(","))
        print(f"measuring {text} Mbit/s ...", flush=True)
        figures = measure(rates, args.seconds, args.rounds, args.artifacts)
        rows.append((rates, figures))
    print()
    print(f"{'uplinks':<8}{'alone (Mbit/s)':>16}  {'setting':<38}{'SOCKS+MPTCP':>11}{'of sum':>8}"
          f"{'vs best':>8}  {'(min-max)':<13}target")
    for rates, figures in rows:
        total, best = sum(figures["singles"]), max(figures["singles"])
        label = "+".join(f"{r:g}" for r in rates)
        alone = " + ".join(f"{rate:.2f}" for rate in figures["singles"])
        target = TARGETS.get(rates)
        for setting, measured in figures["socks"].items():
            rate = statistics.median(measured)
            verdict = ""
            if target is not None and setting == "default":
                verdict = f">={target} " + ("met" if rate / total >= target and rate >= best else "MISSED")
            spread = f"({min(measured):.1f}-{max(measured):.1f})"
            print(f"{label:<8}{alone:>16}  {setting:<38}{rate:>11.2f}{rate / total:>8.3f}{rate / best:>8.2f}"
                  f"  {spread:<13}{verdict}")
            label = alone = ""  # the first line of a pair names it
    return 0


if __name__ == "__main__":
    sys.exit(main())
