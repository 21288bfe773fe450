"""mpsocks-run: the project's playbooks with a live progress display.

A verb is a function from the parsed arguments to a Play (``host_up``), registered with ``_verb()``
in ``build_parser()``; its run folder is named after it and its target (``host up`` ->
``<timestamp>-host-up-host``, ``lab up`` -> ``<timestamp>-lab-up-mpslab``).
Results go to stdout, errors to stderr; the exit codes are ansible-playbook's where it has one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import ipaddress
import json
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ansible_collections.mpsocks.mptcp.plugins.module_utils import addressing
from ansible_collections.mpsocks.mptcp.plugins.module_utils.lab import MAX_HOPS
from ansible_collections.mpsocks.mptcp.plugins.module_utils.locking import Lock, holder

from mpsocks import analyze, capture, completion, experiment, guest_status, lab, runs, stack, vm_status
from mpsocks.playbook_run import (
    EXIT_BUSY,
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_NOT_UP,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Play,
    RunOptions,
    data_file,
    run_playbook,
)
from mpsocks.progress import Progress

PROG = "mpsocks-run"
IFNAMSIZ = 16  # Linux's size of an interface name, with its terminating NUL
_NETNS_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: The rates the lab accepts, in Mbit/s.
MIN_RATE, MAX_RATE = 0.1, 10000.0
#: lab status: the lab is there, but some part of it does not work.
EXIT_DEGRADED = 7
_EXAMPLES = f"""examples:
  mpsocks-run host up --uplinks wlp1s0,usb0=192.168.42.129
  mpsocks-run --check host down
  mpsocks-run host up --uplinks veth0 --netns lab -v
  mpsocks-run lab up --rates 20,5 --middlebox 1=optimizer
  mpsocks-run lab status --json
  mpsocks-run capture --seconds 20 -o uplinks.pcapng
  mpsocks-run analyze --json nomptcp.pcap mptcp.pcap
  mpsocks-run lab experiment net-neutrality -o traces/net_neutrality
  mpsocks-run runs list

exit status:
  {EXIT_OK}   the play succeeded
  {EXIT_ERROR}   an error outside the play (the message says which)
  {EXIT_FAILED}   a task failed (analyze: a capture could not be read)
  {EXIT_UNREACHABLE}   a host (or namespace) could not be reached
  {EXIT_USAGE}   bad command-line input; nothing was run
  {EXIT_NOT_UP}   (status, lab status) not up, or not all of it; (check, capture) nothing is up
  {EXIT_BUSY}   another run holds the same target and --no-wait was given
  {EXIT_DEGRADED}   (lab status) the lab is there but some part of it does not work
  {EXIT_CANCELLED}  cancelled with Ctrl-C
  {EXIT_TIMEOUT} the play ran longer than --timeout"""
#: Seconds between two tries at a target another run holds.
LOCK_POLL = 0.2


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit code EXIT_USAGE, nothing run."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError instead of printing the usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# Input checks -----------------------------------------------------------------------------------


def parse_uplinks(text: str) -> list[str | dict[str, str]]:
    """``wlp1s0,usb0=192.168.42.129`` -> ``['wlp1s0', {'name': 'usb0', 'gateway': '192.168.42.129'}]``."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("no interface given, e.g. --uplinks wlp1s0,usb0")
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty interface name in {text!r}")
    uplinks = [_uplink(item) for item in items]
    names = [uplink if isinstance(uplink, str) else uplink["name"] for uplink in uplinks]
    for name in names:
        if names.count(name) > 1:
            raise argparse.ArgumentTypeError(f"interface {name!r} is given twice")
    return uplinks


def _uplink(item: str) -> str | dict:
    """``IF`` -> ``'IF'``; ``IF=GW`` -> ``{'name': 'IF', 'gateway': 'GW'}``; ``IF:backup`` adds
    ``backup: True``, ``IF:active`` ``backup: False``."""
    role = next((suffix for suffix in ("backup", "active") if item.endswith(f":{suffix}")), "")
    item = item[:-len(role) - 1] if role else item
    name, has_gateway, gateway = item.partition("=")
    interface_name(name)
    uplink = {"name": name} | ({"backup": role == "backup"} if role else {})
    if not has_gateway:
        return uplink if role else name
    try:
        return uplink | {"gateway": str(ipaddress.ip_address(gateway))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"gateway {gateway!r} of {name} is not an IP address") from None


def interface_name(name: str) -> str:
    """NAME if Linux accepts it as an interface name."""
    if not name:
        raise argparse.ArgumentTypeError("empty interface name")
    if len(name) >= IFNAMSIZ:
        raise argparse.ArgumentTypeError(
            f"interface name {name!r} is longer than {IFNAMSIZ - 1} characters")
    if name in (".", "..") or any(char in "/:" or char.isspace() for char in name):
        raise argparse.ArgumentTypeError(f"{name!r} is not a valid interface name")
    return name


def netns_name(name: str) -> str:
    """NAME if it is a usable network namespace (and inventory host) name."""
    if not _NETNS_NAME.fullmatch(name) or name in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a network namespace name (letters, digits, '.', '_', '-')")
    return name


def parse_cidrs(text: str) -> list[str]:
    """``198.19.0.0/24,203.0.113.7`` -> ``['198.19.0.0/24', '203.0.113.7/32']``."""
    cidrs = []
    for item in text.split(","):
        try:
            cidrs.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r} is not a destination (CIDR), e.g. 198.19.0.0/24") from None
    return cidrs


def parse_rates(text: str) -> list[float]:
    """``20,5`` -> ``[20.0, 5.0]``: one rate in Mbit/s per uplink."""
    return [rate(item) for item in text.split(",")]


def rate(text: str) -> float:
    """A rate in Mbit/s, as the lab takes it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is not a rate in Mbit/s, e.g. 20") from None
    if not MIN_RATE <= value <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"rate {text.strip()} is outside {MIN_RATE:g}..{MAX_RATE:g} Mbit/s")
    return value


def hops(text: str) -> int:
    """A number of routers between host and servers."""
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_HOPS:
        raise argparse.ArgumentTypeError(f"{text} is outside 1..{MAX_HOPS}")
    return int(text)


def parse_middlebox(text: str) -> tuple[int, str]:
    """``1=optimizer`` -> ``(1, 'optimizer')``."""
    index, _, kind = text.partition("=")
    if not index.strip().isdigit() or kind not in lab.MIDDLEBOXES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not UPLINK=KIND with KIND one of {', '.join(lab.MIDDLEBOXES)}, e.g. 1=optimizer")
    return int(index), kind


def middleboxes(given: list[tuple[int, str]]) -> dict[int, str]:
    """The --middlebox items as {uplink: kind}; an uplink given twice is an error."""
    found: dict[int, str] = {}
    for index, kind in given:
        if index in found:
            raise UsageError(f"--middlebox: uplink {index} is given twice "
                             f"({index}={found[index]}, {index}={kind})")
        found[index] = kind
    return found


def lab_name(name: str) -> str:
    """NAME if it is a usable lab name."""
    if not lab.NAME_PATTERN.match(name):
        raise argparse.ArgumentTypeError(f"{name!r} is not a lab name (1-10 lower-case letters or digits)")
    return name


# Verbs ------------------------------------------------------------------------------------------


def netns_inventory(netns: str) -> dict:
    """An inventory whose one host, NETNS, is that network namespace (the netns connection plugin)."""
    host = {
        "ansible_connection": "mpsocks.mptcp.netns",
        "ansible_host": netns,
        "ansible_python_interpreter": sys.executable,
    }
    return {"all": {"hosts": {netns: host}}}


def target(netns: str | None) -> tuple[Path | dict, dict]:
    """The inventory and extra vars that aim a playbook at the real host, or at namespace NETNS."""
    if netns is None:
        return data_file("inventory/localhost.yml"), {}
    return netns_inventory(netns), {"mpsocks_target": netns}


def _host_network(netns: str | None, uplinks: list, state: str) -> Play:
    inventory, extravars = target(netns)
    extravars |= {"mpsocks_uplinks": uplinks, "mpsocks_state": state}
    return Play(data_file("playbooks/host_network.yml"), inventory, extravars,
                target="host" if netns is None else f"host-netns-{netns}")


def host_up(args: argparse.Namespace) -> Play:
    """``host up``: taps, NAT and source routing for every uplink."""
    return _host_network(args.netns, args.uplinks, "present")


def host_down(args: argparse.Namespace) -> Play:
    """``host down``: remove what ``host up`` made."""
    return _host_network(args.netns, [], "absent")


def stack_up(args: argparse.Namespace) -> Play:
    """``up``: the guest, the host side and the proxy stack, then the check; recorded for ``down`` first."""
    if args.lab is None and not args.uplinks:
        raise UsageError("give --uplinks IF,IF... (your uplinks) or --lab (a lab's)")
    if args.lab is not None and args.rates:
        raise UsageError("--rates: a lab's uplinks have the rates the lab was made with")
    lab_settings = None
    if args.lab is not None:
        try:
            built, running = stack.lab_stack(args.lab, args.via_guest, backend=args.backend)
        except stack.MpsocksError as exc:
            raise UsageError(str(exc)) from None
        lab_settings = None if running else {"name": args.lab, "host_netns": args.backend == "netns"}
        if args.uplinks:  # some of the lab's uplinks, or some as backup
            built = dataclasses.replace(built, uplinks=lab_uplinks(args.lab, built.uplinks, args.uplinks))
    else:
        built = stack.Stack(uplinks=with_rates(args.uplinks, args.rates), via_guest=args.via_guest,
                            backend=args.backend)
    vm_only = (("kernel", args.kernel, "built"), ("accelerator", args.accelerator, "auto"))
    for option, value, default in vm_only:
        if value != default and args.backend != "libvirt":
            raise UsageError(f"--{option} {value}: for a VM guest only (--backend libvirt)")
    built = dataclasses.replace(built, kernel=args.kernel, accelerator=args.accelerator)
    if args.check_url:
        built = dataclasses.replace(built, check_url=args.check_url)
    recorded = stack.load()
    if recorded is not None and (recorded.guest, recorded.host_netns) != (built.guest, built.host_netns) \
            and stack.is_up(recorded):
        raise UsageError(f"another stack is up (guest {recorded.guest}"
                         + (f", lab {recorded.lab}" if recorded.lab else "") + "): mpsocks-run down first")
    return Play(data_file("playbooks/boot_socks.yml"), built.inventory(), built.extravars(lab_settings),
                target="stack", before_run=lambda: stack.save(built))


def lab_uplinks(name: str, available: list[dict], chosen: list) -> list[dict]:
    """CHOSEN (--uplinks) among lab NAME's AVAILABLE uplinks, with their gateways and rates."""
    known = {uplink["name"]: uplink for uplink in available}
    uplinks = []
    for uplink in chosen:
        uplink = {"name": uplink} if isinstance(uplink, str) else dict(uplink)
        if uplink["name"] not in known:
            raise UsageError(f"--uplinks: {uplink['name']} is not an uplink of lab {name} "
                             f"({', '.join(known)})")
        uplinks.append({**known[uplink["name"]], **uplink})
    return uplinks


def with_rates(uplinks: list, rates: list[float] | None) -> list:
    """UPLINKS (--uplinks) with their download RATES (--rates), in order."""
    if not rates:
        return uplinks
    if len(rates) != len(uplinks):
        raise UsageError(f"--rates: {len(rates)} rate(s) for {len(uplinks)} uplinks; give one per uplink")
    return [({"name": uplink} if isinstance(uplink, str) else uplink) | {"rate_mbit": rate}
            for uplink, rate in zip(uplinks, rates, strict=True)]


def stack_down(args: argparse.Namespace) -> Play:
    """``down``: everything up made (and the lab, when up made it), found from the kernel and the record."""
    recorded = stack.load() or stack.Stack()
    lab_settings = {"name": recorded.lab} if recorded.lab and recorded.lab_made else None
    extravars = recorded.extravars(lab_settings) | ({"mpsocks_purge": True} if args.purge else {})
    logs = [*Path(recorded.run_dir() if recorded.backend == "netns" else recorded.vm_dir()).glob("*.log")]
    if lab_settings is not None:
        logs += (Path(lab.DEFAULTS["run_root"]) / recorded.lab).glob("*.log")
    return Play(data_file("playbooks/teardown.yml"), recorded.inventory(), extravars, target="stack",
                after_success=stack.forget, keep=tuple(logs))


def _lab(name: str, state: str, settings: dict | None = None) -> Play:
    extravars = {"mpsocks_lab_state": state, "mpsocks_lab_name": name}
    for key, value in (settings or {}).items():
        extravars[f"mpsocks_lab_{key}"] = value
    logs = tuple((Path(lab.DEFAULTS["run_root"]) / name).glob("*.log")) if state == "absent" else ()
    return Play(data_file("playbooks/lab.yml"), data_file("inventory/localhost.yml"), extravars,
                target=f"lab-{name}", keep=logs)


def lab_up(args: argparse.Namespace) -> Play:
    """``lab up``: build the lab (namespaces, shaped uplinks, hops, middleboxes, servers) from the flags or a
    topology file; a running lab of another shape only with --reconfigure."""
    flags = {"--rates": args.rates, "--middlebox": args.middlebox, "--optimizer-rate": args.optimizer_rate,
             "--hops": args.hops, "--root-uplinks": args.root_uplinks}
    try:
        if args.topology:
            given = [flag for flag, value in flags.items() if value not in (None, [], False)]
            if given:
                raise UsageError(f"{given[0]}: -t {args.topology} describes the whole lab; leave out "
                                 "--rates, --middlebox, --optimizer-rate, --hops and --root-uplinks")
            settings = lab.topology_settings(args.topology, args.name)
        else:
            settings = lab.lab_settings(args.name or lab.DEFAULTS["name"], args.rates or [20.0, 20.0],
                                        middleboxes(args.middlebox), args.optimizer_rate,
                                        args.hops or lab.DEFAULTS["hops"], host_netns=not args.root_uplinks)
        recorded = lab.recorded_plan(settings["name"])
        differences = lab.shape_differences(recorded["settings"], settings) if recorded else []
    except lab.MpsocksError as exc:
        raise UsageError(str(exc)) from None
    if differences and not args.reconfigure:
        name = settings["name"]
        raise UsageError(f"lab {name} is up with another shape ({'; '.join(differences)}): give "
                         f"--reconfigure to reshape it, or mpsocks-run lab down --name {name} first")
    return _lab(settings["name"], "present", settings)


def lab_down(args: argparse.Namespace) -> Play:
    """``lab down``: remove every namespace, process, interface, rule and table of the lab."""
    return _lab(args.name, "absent")


def build_kernel(args: argparse.Namespace) -> Play:
    """``build kernel``: the guest's MPTCP kernel, compiled once per source and configuration."""
    extravars = {"mpsocks_kernel_base": args.base}
    if args.tarball:
        extravars["mpsocks_kernel_tarball"] = str(args.tarball.absolute())
    if args.git:
        repo, _, ref = args.git.rpartition("@") if "@" in args.git else (args.git, "", "")
        extravars |= {"mpsocks_kernel_git_repo": repo} | ({"mpsocks_kernel_git_ref": ref} if ref else {})
    if args.option:
        extravars["mpsocks_kernel_fragment"] = args.option
    return Play(data_file("playbooks/build_kernel.yml"), data_file("inventory/localhost.yml"), extravars,
                target="build-kernel")


def build_image(args: argparse.Namespace) -> Play:
    """``build image``: the guest's Debian image (with the proxy's packages unless --base)."""
    playbook = "playbooks/build_image.yml" if args.base else "playbooks/install_vm_extra.yml"
    return Play(data_file(playbook), data_file("inventory/localhost.yml"), {}, target="build-image")


def _recorded_stack() -> stack.Stack:
    recorded = stack.load()
    if recorded is None:
        raise NotUp(f"nothing is up (no record in {stack.STATE_FILE}): mpsocks-run up first")
    return recorded


def stack_status(args: argparse.Namespace) -> int:
    """``status``: the guest, its links and endpoints, and the live MPTCP connections through the proxy."""
    recorded = _recorded_stack()
    if recorded.backend == "libvirt":
        return _vm_status(recorded.guest, args)
    where = (recorded.guest, recorded.guest_interfaces(), recorded.run_dir())
    if args.watch:
        for report in guest_status.watch(*where):
            text = json.dumps(report) if args.json else guest_status.format_status(report)
            print(text if args.json else guest_status.redraw(text), end="\n" if args.json else "", flush=True)
    report = guest_status.status(*where)
    print(json.dumps(report, indent=2) if args.json else guest_status.format_status(report), flush=True)
    return EXIT_OK if report["up"] else EXIT_NOT_UP


def _vm_status(guest: str, args: argparse.Namespace) -> int:
    """``status`` of a VM guest: its domain and what answers in it (--watch: every second)."""
    while True:
        report = vm_status.status(guest)
        text = json.dumps(report, indent=None if args.watch else 2) if args.json \
            else vm_status.format_status(report)
        if not args.watch:
            print(text, flush=True)
            return EXIT_OK if report["up"] else EXIT_NOT_UP
        print(text if args.json else guest_status.redraw(text), end="\n" if args.json else "", flush=True)
        time.sleep(1)


def stack_check(args: argparse.Namespace) -> int:
    """``check``: MPTCP through the proxy, with a subflow on every uplink that is not a backup?"""
    recorded = _recorded_stack()
    url = args.url or recorded.check_url
    interfaces, proxy = recorded.guest_interfaces(), recorded.socks_address()
    if recorded.backend == "netns":
        result = guest_status.check(recorded.guest, interfaces, url, proxy, client_netns=recorded.host_netns)
    else:
        result = guest_status.check_in_guest(recorded.inventory(), recorded.guest, interfaces, url, proxy)
    print(json.dumps(result, indent=2) if args.json else guest_status.format_check(result), flush=True)
    return EXIT_OK if guest_status.check_failure(result) is None else EXIT_FAILED


def _running_plan(name: str) -> dict:
    plan = lab.recorded_plan(name)
    if plan is None:
        raise NotUp(f"lab {name} is not up: mpsocks-run lab up --name {name} first")
    return plan


def lab_graph(args: argparse.Namespace) -> int:
    """``lab graph``: the running lab as a Mermaid or Graphviz graph, or a PNG drawn by Graphviz."""
    plan = _running_plan(args.name)
    text = lab.graph(plan, "dot" if args.format == "png" else args.format)
    if args.format == "png":
        dot = shutil.which("dot")
        if dot is None:
            raise UsageError("--format png: Graphviz's dot is not installed (Debian package graphviz)")
        output = args.output or Path(f"{args.name}.png")
        subprocess.run([dot, "-Tpng", "-o", str(output)], input=text, text=True, check=True)
        print(output, flush=True)
    elif args.output:
        args.output.write_text(text)
    else:
        print(text, end="", flush=True)
    return EXIT_OK


def lab_exec(args: argparse.Namespace) -> int:
    """``lab exec NODE [--mptcp] -- CMD``: CMD in that node's namespace; its exit status is ours."""
    words = args.command_line
    split = words.index("--") if "--" in words else -1
    options, command = words[:max(split, 0)], words[split + 1:]
    for option in options:  # what follows the node up to --: --mptcp may come there too
        if option != "--mptcp":
            raise UsageError(f"{option}: not an option of lab exec (the command comes after --)")
        args.mptcp = True
    if not command:
        raise UsageError("give the command to run after the node, e.g. lab exec host -- ip addr")
    try:
        netns = lab.node_netns(_running_plan(args.name), args.node)
    except lab.MpsocksError as exc:
        raise UsageError(str(exc)) from None
    if not (lab.NETNS_DIR / netns).exists():
        guest = " (mpsocks-run up --lab makes the guest)" if netns.endswith("-guest") else ""
        raise NotUp(f"namespace {netns} does not exist{guest}")
    argv = ["ip", "netns", "exec", netns] + (["mptcpize", "run"] if args.mptcp else []) + command
    return subprocess.run(argv, check=False).returncode


def lab_experiment(args: argparse.Namespace) -> int:
    """``lab experiment net-neutrality``: lab and stack up, the study, down (unless --keep); prints the
    report."""
    options = run_options(args)
    if options.check:
        raise UsageError("--check: an experiment measures the wire, it cannot be dry-run")
    output = args.output or Path(args.experiment.replace("-", "_"))
    try:
        up, study, down = experiment.plays(args.name, output)
    except lab.MpsocksError as exc:
        raise UsageError(str(exc)) from None
    code = run("lab-experiment-up", up, options, args.cancel)
    if code == EXIT_OK:
        code = run(f"lab-experiment-{args.experiment}", study, options, args.cancel)
    if not args.keep:
        args.cancel.clear()  # after a Ctrl-C too: take down what was made
        down_code = run("lab-experiment-down", down, options, args.cancel)
        code = code or down_code
    if code == EXIT_OK:
        print((output / "report.md").read_text(), end="", flush=True)
    return code


_STATE_EXIT = {"up": EXIT_OK, "degraded": EXIT_DEGRADED, "not up": EXIT_NOT_UP}


def lab_status(args: argparse.Namespace) -> int:
    """``lab status``: the topology and a verdict per probe of what runs; exit 0 when the lab is up, 7
    when it is degraded, 3 when it is not up. With --all, every lab of the machine."""
    if args.all:
        reports = [lab.status(name) for name in lab.all_labs()]
        print(json.dumps(reports, indent=2) if args.json else lab.format_all(reports), flush=True)
        return max((_STATE_EXIT[report["state"]] for report in reports), default=EXIT_NOT_UP)
    report = lab.status(args.name)
    print(json.dumps(report, indent=2) if args.json else lab.format_status(report), flush=True)
    return _STATE_EXIT[report["state"]]


# Parser -----------------------------------------------------------------------------------------


def _run_options(top: bool) -> argparse.ArgumentParser:
    """-v, --check, --diff, --no-wait, --timeout and --artifacts-dir, accepted before and after the verb.

    Below the top their defaults are SUPPRESSed: a subparser's defaults would otherwise
    overwrite what was given before the verb. -v after the verb counts apart and is added up.
    """
    def default(value):
        return value if top else argparse.SUPPRESS

    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
        return value

    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("run options")
    group.add_argument("-v", "--verbose", action="count", default=default(0),
                       dest="verbose" if top else "verbose_after",
                       help="show Ansible's own output instead of progress lines and pass -v on (repeatable)")
    group.add_argument("--check", action="store_true", default=default(False),
                       help="ansible-playbook --check: report what would change, change nothing")
    group.add_argument("--diff", action="store_true", default=default(False),
                       help="ansible-playbook --diff: show the changes")
    group.add_argument("--artifacts-dir", type=Path, metavar="DIR", default=default(None),
                       help="base folder of the run folders (default: $XDG_STATE_HOME/mpsocks/runs); "
                            "the newest $MPSOCKS_KEEP_RUNS of them are kept (default: 20)")
    group.add_argument("--timeout", type=seconds, metavar="SECONDS", default=default(None),
                       help="cancel the play, as Ctrl-C does, when it runs longer (exit status 124)")
    group.add_argument("--no-wait", action="store_true", default=default(False),
                       help="fail at once (exit status 6) when another run holds the same target, "
                            "instead of waiting for it")
    return options


def _help(summary: str, example: str, runs_a_play: bool = True) -> dict:
    """add_parser() arguments: SUMMARY in the lists and on top of --help, EXAMPLE at its end, and the run
    options when the verb RUNS_A_PLAY."""
    return {
        "help": summary,
        "description": f"{summary[0].upper()}{summary[1:]}.",
        "epilog": f"example:\n  {example}",
        "formatter_class": argparse.RawDescriptionHelpFormatter,
        "parents": [_run_options(top=False)] if runs_a_play else [],
    }


def _group(verbs, name: str, summary: str, example: str):
    """A verb with actions below it (``host`` of ``host up``); returns its subparsers."""
    parser = verbs.add_parser(name, **_help(summary, example, runs_a_play=False))
    return parser.add_subparsers(title="actions", metavar="ACTION", required=True)


def _verb(verbs, name: str, play: Callable[[argparse.Namespace], Play], summary: str, example: str):
    """Register verb NAME, run as PLAY(args); returns its parser for the verb's own options."""
    parser = verbs.add_parser(name, **_help(summary, example))
    parser.set_defaults(play=play, run_name="-".join(parser.prog.split()[1:]))
    return parser


def add_netns_option(parser: argparse.ArgumentParser) -> None:
    """--netns NS: a verb's target is that namespace instead of the real host (see target())."""
    parser.add_argument("--netns", type=netns_name, metavar="NS",
                        help="work in network namespace NS instead of on the real host")


def build_parser() -> argparse.ArgumentParser:
    """mpsocks-run's argument parser, verbs included."""
    parser = _Parser(
        prog=PROG, parents=[_run_options(top=True)], epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run mpsocks' playbooks with one progress line per task and Ansible's recap at\n"
                    "the end. Ctrl-C cancels. The exit code is 0 only when the play succeeded.",
    )
    parser.add_argument("--version", action="version", version=version_text(),
                        help="show the versions of mpsocks and ansible-core, and whether the kernel has "
                             "MPTCP")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)
    host = _group(verbs, "host", "set up or tear down the host side of mpsocks (taps, NAT, routing)",
                  "mpsocks-run host up --uplinks wlp1s0,usb0")
    up = _verb(host, "up", host_up, "give every uplink a tap, NAT and source routing",
               "mpsocks-run host up --uplinks wlp1s0,usb0=192.168.42.129")
    up.add_argument("--uplinks", required=True, type=parse_uplinks, metavar="IF[=GW],...",
                    help="the uplink interfaces, comma-separated; IF=GW sets the uplink's gateway")
    add_netns_option(up)
    down = _verb(host, "down", host_down, "remove the taps, NAT and routing of host up",
                 "mpsocks-run host down")
    add_netns_option(down)

    up_verb = _verb(verbs, "up", stack_up, "MPTCP over every uplink for every application: guest, host side, "
                    "SOCKS5 proxy, socksifier, check", "mpsocks-run up --lab")
    up_verb.add_argument("--uplinks", type=parse_uplinks, metavar="IF[=GW][:backup|:active],...",
                         help="your uplinks, comma-separated; IF=GW sets a gateway, :backup makes an uplink "
                              "an MPTCP backup (used only when the others fail), :active never")
    up_verb.add_argument("--rates", type=parse_rates, metavar="MBIT,...",
                         help="the download rate of each uplink, in --uplinks order: an uplink slower than "
                              f"{addressing.BACKUP_BELOW:.0%}% of the fastest becomes a backup (it would "
                              "slow the others down) unless given :active")
    up_verb.add_argument("--lab", nargs="?", const=lab.DEFAULTS["name"], type=lab_name, metavar="NAME",
                         help="use a lab's uplinks (bringing the lab up first unless it is up; default name "
                              "mpslab); --uplinks may then pick some of them or make one a backup")
    up_verb.add_argument("--backend", choices=stack.BACKENDS, default="libvirt",
                         help="the guest: a libvirt VM with its own MPTCP kernel, built and cached on first "
                              "use (libvirt, the default; with --lab, the lab's uplinks are in the root "
                              "namespace), or a network namespace using this kernel's MPTCP, up in seconds "
                              "(netns)")
    up_verb.add_argument("--kernel", choices=("built", "distro"), default="built",
                         help="the VM's kernel: the one mpsocks builds with a small config (built, the "
                              "default) or the image's own Debian kernel, no compiling (distro)")
    up_verb.add_argument("--accelerator", choices=("auto", "kvm", "tcg"), default="auto",
                         help="the VM's: KVM where a probe guest boots under it, else TCG (auto, the "
                              "default; the answer is cached), or forced")
    up_verb.add_argument("--via-guest", type=parse_cidrs, default=[], metavar="CIDR,...",
                         help="route these destinations through the guest, where the socksifier takes "
                              "any application's traffic to them through the proxy")
    up_verb.add_argument("--check-url", metavar="URL",
                         help=f"the MPTCP check server (default {stack.CHECK_URL}; a lab's own in a lab)")
    up_verb.add_argument("--foreground", action="store_true",
                         help="stay up, and tear everything down on Ctrl-C (as bash mpsocks' boot_socks did)")
    down_verb = _verb(verbs, "down", stack_down, "remove what up made (also after an interrupted up); a "
                      "no-op when nothing is up", "mpsocks-run down")
    down_verb.add_argument("--purge", action="store_true",
                           help=f"also remove what the VM backend built and keeps in {stack.STATE_DIR} (its "
                                "kernel, image, ssh key and kernel build tree)")
    status = verbs.add_parser("status", **_help(
        "the guest, its links and endpoints, and the live MPTCP connections through the proxy with the rate "
        "of each subflow", "mpsocks-run status --watch", runs_a_play=False))
    status.set_defaults(command=stack_status)
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.add_argument("--watch", action="store_true", help="redraw it every second (Ctrl-C ends)")
    check = verbs.add_parser("check", **_help(
        "is it MPTCP? fetch the check URL through the proxy; exit 0 only with a subflow on every uplink "
        "that is not a backup", "mpsocks-run check --json", runs_a_play=False))
    check.set_defaults(command=stack_check)
    check.add_argument("--json", action="store_true", help="print the result as JSON (mptcp, subflows, ...)")
    check.add_argument("--url", help="the check URL (default: the one up was given)")

    build_verbs = _group(verbs, "build", "the VM guest's parts, cached: a second build changes nothing",
                         "mpsocks-run build kernel && mpsocks-run build image")
    kernel = _verb(build_verbs, "kernel", build_kernel, "compile the guest's MPTCP kernel (Debian's "
                   "linux-source by default; minutes, with a live count of objects built)",
                   "mpsocks-run build kernel")
    source = kernel.add_mutually_exclusive_group()
    source.add_argument("--tarball", type=Path, metavar="FILE", help="build from this kernel source tarball")
    source.add_argument("--git", metavar="REPO[@REF]", help="build from this git tree, at REF")
    kernel.add_argument("--base", choices=("tinyconfig", "defconfig"), default="tinyconfig",
                        help="the configuration the project's fragment is merged into (default: tinyconfig)")
    kernel.add_argument("--option", action="append", default=[], metavar="CONFIG_X=y",
                        help="a kernel option of your own (repeatable); the build fails, naming it, if the "
                             "final configuration drops it")
    image = _verb(build_verbs, "image", build_image, "debootstrap the guest's Debian image with ssh, python3 "
                  "and the proxy's packages", "mpsocks-run build image")
    image.add_argument("--base", action="store_true", help="only the base image, without dante, redsocks and "
                       "mptcpize")

    lab_verbs = _group(verbs, "lab", "a hermetic internet in network namespaces to try mpsocks offline",
                       "mpsocks-run lab up && mpsocks-run lab status")
    up = _verb(lab_verbs, "up", lab_up, "build the lab: shaped uplinks, router hops, middleboxes, servers",
               "mpsocks-run lab up --rates 20,5 --middlebox 1=optimizer --optimizer-rate 40")
    up.add_argument("--name", type=lab_name, metavar="NAME",
                    help="name of the lab; it prefixes the lab's namespaces (default: the topology file's, "
                         "else mpslab)")
    up.add_argument("-t", "--topology", type=Path, metavar="FILE",
                    help="a YAML topology: name, uplinks (each a rate in Mbit/s or {rate_mbit, middlebox, "
                         "optimizer_rate_mbit, delay_ms}), hops, root_uplinks; instead of the flags below")
    up.add_argument("--rates", type=parse_rates, metavar="MBIT,...",
                    help=f"one rate per uplink in Mbit/s ({MIN_RATE:g} to {MAX_RATE:g}); their count makes "
                         "the number of uplinks (default: 20,20)")
    up.add_argument("--middlebox", type=parse_middlebox, action="append", default=[], metavar="N=KIND",
                    help=f"put middlebox KIND ({', '.join(lab.MIDDLEBOXES)}) on the ISP of uplink N, "
                         "counting from 0 (repeatable, once per uplink)")
    up.add_argument("--optimizer-rate", type=rate, metavar="MBIT",
                    help="rate of the connections an optimizer terminates (default: the uplink's rate)")
    up.add_argument("--hops", type=hops, metavar="N",
                    help=f"routers between host and servers, the ISP included, 1 to {MAX_HOPS} (default: 12)")
    up.add_argument("--root-uplinks", action="store_true",
                    help="end the uplinks in this (root) namespace instead of a lab host namespace")
    up.add_argument("--reconfigure", action="store_true",
                    help="reshape a running lab to what is asked (without it, a lab of another shape is "
                         "refused, naming what differs)")
    down = _verb(lab_verbs, "down", lab_down, "remove the lab, also after an interrupted up",
                 "mpsocks-run lab down")
    add_lab_name_option(down)
    status = lab_verbs.add_parser("status", aliases=["inspect"], **_help(
        "show the lab's topology and probe every part of it: links up, hops answering, servers answering, "
        "MPTCP through the proxy when a stack is on it (exit status 0 up, 7 degraded, 3 not up)",
        "mpsocks-run lab status --json", runs_a_play=False))
    status.set_defaults(command=lab_status)
    add_lab_name_option(status)
    status.add_argument("--json", action="store_true", help="print the report as JSON (schema_version 1)")
    status.add_argument("--all", action="store_true", help="every lab on this machine, a line each")
    drawing = lab_verbs.add_parser("graph", **_help(
        "draw the running lab: a node per namespace, a link per veth with its interfaces and addresses",
        "mpsocks-run lab graph --format png -o lab.png", runs_a_play=False))
    drawing.set_defaults(command=lab_graph)
    add_lab_name_option(drawing)
    drawing.add_argument("--format", choices=("mermaid", "dot", "png"), default="mermaid",
                         help="a Mermaid flowchart (the default; GitHub shows it as a picture), a Graphviz "
                              "graph, or a PNG drawn by Graphviz's dot")
    drawing.add_argument("-o", "--output", type=Path, metavar="FILE",
                         help="write it to FILE (default: stdout; for png, NAME.png)")
    node = lab_verbs.add_parser("exec", **_help(
        "run a command in a node of the lab (host, isp0, r1, net, guest ...), as ip netns exec does",
        "mpsocks-run lab exec host --mptcp -- curl -s http://198.19.0.10/", runs_a_play=False))
    node.set_defaults(command=lab_exec)
    add_lab_name_option(node)
    node.add_argument("--mptcp", action="store_true",
                      help="run it through mptcpize, so that its TCP sockets are MPTCP")
    node.add_argument("node", help="the node: its namespace's name without the lab's (host, isp0, r1, net, "
                                   "guest), or the whole name")
    node.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                      help="the command and its arguments")
    study = lab_verbs.add_parser("experiment", **_help(
        "run a study in a lab of its own and write its captures and report: net-neutrality is bash mpsocks' "
        "(MPTCP off/on x TTL 10/64 to the check server, downloads without and with MPTCP, the optimizer on "
        "uplink 0)", f"mpsocks-run lab experiment net-neutrality -o {experiment.DEFAULT_OUTPUT}"))
    study.set_defaults(command=lab_experiment)
    study.add_argument("experiment", choices=experiment.EXPERIMENTS, help="the study to run")
    study.add_argument("--name", type=lab_name, default=experiment.DEFAULT_LAB,
                       help=f"name of the study's lab (default: {experiment.DEFAULT_LAB}); one already up is "
                            "used as it is if its uplink 0 has the optimizer")
    study.add_argument("-o", "--output", type=Path, metavar="DIR",
                       help="folder for the captures and report.md/report.json (default: ./net_neutrality)")
    study.add_argument("--keep", action="store_true",
                       help="leave the lab and the stack up afterwards (mpsocks-run down removes them)")
    capture.add_parser(verbs)
    analyze.add_parser(verbs)
    runs.add_parser(verbs)
    completion.add_parser(verbs)
    return parser


def add_lab_name_option(parser: argparse.ArgumentParser) -> None:
    """--name NAME of the lab (several labs with different names can coexist)."""
    parser.add_argument("--name", type=lab_name, default="mpslab",
                        help="name of the lab; it prefixes the lab's namespaces (default: mpslab)")


# Running ----------------------------------------------------------------------------------------


def version_text() -> str:
    """What --version prints: mpsocks, ansible-core, and the kernel's MPTCP."""
    def installed(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    try:
        with open("/proc/sys/net/mptcp/enabled") as handle:
            enabled = handle.read().strip()
        mptcp = f"MPTCP available (net.mptcp.enabled={enabled})"
    except OSError:
        mptcp = "no MPTCP (no /proc/sys/net/mptcp/enabled)"
    return "\n".join([f"{PROG} (mpsocks) {installed('mpsocks')}", f"ansible-core {installed('ansible-core')}",
                      f"kernel {platform.release()}: {mptcp}"])


@contextlib.contextmanager
def cancel_on_sigint() -> Iterator[threading.Event]:
    """While inside, Ctrl-C sets the yielded event instead of raising KeyboardInterrupt."""
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.set())
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


class NotUp(Exception):
    """status or check with nothing up: one line on stderr, exit EXIT_NOT_UP."""


class Busy(Exception):
    """Another run holds the target and the user asked not to wait."""


def hold_target(name: str, play: Play, no_wait: bool, cancel: threading.Event) -> Lock | None:
    """The target's lock, once no other run holds it; None if cancelled while waiting."""
    lock = Lock(f"run-{play.target}", purpose=f"mpsocks-run {name.replace('-', ' ')} (target {play.target})")
    said = False
    while not lock.acquire(wait=0):
        other = holder(lock.path) or "another run"
        if no_wait:
            raise Busy(f"{play.target} is busy: {other} holds it (leave out --no-wait to wait for it)")
        if not said:
            print(f"{PROG}: waiting for {other} to finish with {play.target} (Ctrl-C gives up)",
                  file=sys.stderr, flush=True)
            said = True
        if cancel.wait(LOCK_POLL):
            return None
    return lock


def run(name: str, play: Play, options: RunOptions, cancel: threading.Event, no_wait: bool = False) -> int:
    """Run PLAY with the progress display, say where its artifacts are; returns the exit code."""
    lock = hold_target(name, play, no_wait, cancel)
    if lock is None:
        print("cancelled", file=sys.stderr, flush=True)
        return EXIT_CANCELLED
    try:
        if play.before_run is not None and not options.check:
            play.before_run()
        display = Progress(verbose=options.verbosity > 0, diff=options.diff)
        result = run_playbook(name, play, options, display=display, cancel=cancel)
        display.stop()
        if result.exit_code == EXIT_OK and play.after_success is not None and not options.check:
            play.after_success()
    finally:
        lock.release()
    if result.status == "canceled":
        print("cancelled", file=sys.stderr, flush=True)
    print(f"{display.summary()}; artifacts: {result.artifacts}", flush=True)
    return result.exit_code


def stay_up(args: argparse.Namespace, options: RunOptions, cancel: threading.Event) -> int:
    """``up --foreground``: wait for Ctrl-C, then take everything down."""
    print(f"{PROG}: up; Ctrl-C takes it all down", file=sys.stderr, flush=True)
    cancel.wait()
    cancel.clear()
    return run("down", stack_down(argparse.Namespace(purge=False)), options, cancel, no_wait=False)


def run_options(args: argparse.Namespace) -> RunOptions:
    """The run options given before and after the verb (-v counts add up); a bad $MPSOCKS_KEEP_RUNS is a
    usage error."""
    verbosity = args.verbose + getattr(args, "verbose_after", 0)
    try:
        return RunOptions(check=args.check, diff=args.diff, verbosity=verbosity,
                          artifacts_dir=args.artifacts_dir, timeout=args.timeout)
    except ValueError as exc:  # RunOptions reads $MPSOCKS_KEEP_RUNS
        raise UsageError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """mpsocks-run with ARGV (default: the command line); returns the exit code."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `mpsocks-run lab status | head` ends quietly
    with cancel_on_sigint() as cancel:
        try:
            args = build_parser().parse_args(argv)
            if "command" in args:
                args.cancel = cancel  # capture stops on Ctrl-C
                return args.command(args)
            code = run(args.run_name, args.play(args), run_options(args), cancel, no_wait=args.no_wait)
            if code == EXIT_OK and getattr(args, "foreground", False) and not args.check:
                code = stay_up(args, run_options(args), cancel)
            return code
        except UsageError as exc:
            return _error(exc, EXIT_USAGE)
        except Busy as exc:
            return _error(exc, EXIT_BUSY)
        except NotUp as exc:
            return _error(exc, EXIT_NOT_UP)
        except Exception as exc:  # the last resort: one line, never a traceback
            return _error(exc, EXIT_ERROR)


def _error(exc: Exception, code: int) -> int:
    print(f"{PROG}: error: {str(exc) or type(exc).__name__}", file=sys.stderr, flush=True)
    return code
