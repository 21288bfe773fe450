"""mpsocks.mptcp.daemon: real supervised programs inside a fresh namespace."""

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from mpsocks_testlib import ansible_playbook, netns_inventory, run_module, sh

PORT = 18764


@pytest.fixture(autouse=True)
def no_leftovers(netns):
    """Whatever a failed test left running in its namespace is killed (the namespace would outlive it)."""
    yield
    for pid in in_namespace(netns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def in_namespace(netns):
    """Pids of the live processes whose network namespace is NETNS (read from /proc)."""
    target = os.stat(f"/run/netns/{netns}")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino) and state not in "ZX":
            found.append(int(entry))
    return found


def listeners(port, netns=None):
    """Pids that LISTEN on TCP PORT, as ss (not the module) sees them."""
    out = sh("ss", "-Hltnp", f"sport = :{port}", netns=netns)
    return {int(part.split("=")[1]) for part in out.replace(",", " ").replace(")", " ").split()
            if part.startswith("pid=")}


def wait_for(predicate, seconds=6.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def http_get(netns, port):
    code = ("import urllib.request; "
            f"print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=5).status)")
    return sh(sys.executable, "-c", code, netns=netns).strip()


def server(port):
    return ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", "/tmp", str(port)]


def test_start_restart_change_and_remove(netns, tmp_path):
    run_dir = tmp_path / "run"
    args = dict(name="web", argv=server(PORT), netns=netns, run_dir=str(run_dir), ready_port=PORT)

    predicted = run_module("daemon", check=True, **args)
    assert predicted["changed"] is True and predicted["pid"] is None
    assert predicted["daemon"]["running"] is True
    assert not run_dir.exists() and in_namespace(netns) == []

    started = run_module("daemon", **args)
    assert started["changed"] is True, started
    assert started["daemon"] == predicted["daemon"]
    pid, program = started["pid"], started["program_pid"]
    assert (run_dir / "web.pid").read_text() == f"{pid}\n"
    assert json.loads((run_dir / "web.json").read_text())["argv"] == server(PORT)
    assert oct(run_dir.stat().st_mode & 0o777) == "0o755"
    # It listens inside the namespace, owned by the program, and not in the root namespace.
    assert listeners(PORT, netns) == {program}
    assert program not in listeners(PORT)
    assert http_get(netns, PORT) == "200"
    assert sorted(in_namespace(netns)) == sorted([pid, program])
    with open(f"/proc/{program}/stat") as handle:
        assert int(handle.read().rsplit(")", 1)[1].split()[1]) == pid  # the supervisor is its parent
    assert os.getsid(pid) not in (os.getsid(0), pid)  # detached: a new session it does not lead

    again = run_module("daemon", **args)
    assert again["changed"] is False and again["pid"] == pid and again["program_pid"] == program
    assert run_module("daemon", check=True, **args)["changed"] is False

    # The supervisor restarts a killed program.
    os.kill(program, signal.SIGKILL)
    restarted = wait_for(lambda: listeners(PORT, netns) - {program})
    assert restarted and len(restarted) == 1, restarted
    new_program = restarted.pop()
    assert new_program != program and http_get(netns, PORT) == "200"
    assert "was killed by signal 9" in (run_dir / "web.log").read_text()
    kept = run_module("daemon", **args)
    assert kept["changed"] is False and kept["pid"] == pid and kept["program_pid"] == new_program

    # A new argv restarts it: check mode predicts and leaves the old one alone.
    changed_args = dict(args, argv=server(PORT + 1), ready_port=PORT + 1)
    predicted = run_module("daemon", check=True, **changed_args)
    assert predicted["changed"] is True and predicted["diff"]["before"]["argv"] == server(PORT)
    assert listeners(PORT, netns) == {new_program} and listeners(PORT + 1, netns) == set()
    changed = run_module("daemon", **changed_args)
    assert changed["changed"] is True and changed["pid"] != pid
    assert listeners(PORT, netns) == set() and listeners(PORT + 1, netns) == {changed["program_pid"]}
    assert sorted(in_namespace(netns)) == sorted([changed["pid"], changed["program_pid"]])

    # absent: check mode changes nothing; then nothing is left in the namespace but the log.
    absent = dict(name="web", netns=netns, run_dir=str(run_dir), state="absent")
    assert run_module("daemon", check=True, **absent)["changed"] is True
    assert len(in_namespace(netns)) == 2
    removed = run_module("daemon", **absent)
    assert removed["changed"] is True and removed["pid"] is None
    assert in_namespace(netns) == []
    assert sorted(p.name for p in run_dir.iterdir()) == ["web.log"]
    assert run_module("daemon", **absent)["changed"] is False


def test_argv_netns_and_a_dead_supervisor_restart(netns, tmp_path):
    run_dir = str(tmp_path / "run")
    args = dict(name="sleeper", argv=["sleep", "300"], netns=netns, run_dir=run_dir)
    first = run_module("daemon", **args)
    assert first["changed"] is True and first["program_pid"], first

    # Same argv, but asked for the module's own (root) namespace: moved there.
    moved = run_module("daemon", name="sleeper", argv=["sleep", "300"], run_dir=run_dir)
    try:
        assert moved["changed"] is True and moved["diff"]["before"]["netns"] == netns
        assert in_namespace(netns) == []
        root_ns = os.stat("/proc/self/ns/net")
        assert os.stat(f"/proc/{moved['program_pid']}/ns/net").st_ino == root_ns.st_ino
    finally:
        run_module("daemon", name="sleeper", run_dir=run_dir, state="absent")
    assert not os.path.exists(f"/proc/{moved['pid']}/ns/net")

    # A supervisor killed with SIGKILL is started again; the program it left behind is killed.
    second = run_module("daemon", **args)
    os.kill(second["pid"], signal.SIGKILL)
    assert wait_for(lambda: in_namespace(netns) == [second["program_pid"]])
    third = run_module("daemon", **args)
    assert third["changed"] is True and third["diff"]["before"]["running"] is False
    assert sorted(in_namespace(netns)) == sorted([third["pid"], third["program_pid"]])
    assert second["program_pid"] not in in_namespace(netns)
    run_module("daemon", name="sleeper", netns=netns, run_dir=run_dir, state="absent")
    assert in_namespace(netns) == []


def test_a_program_that_exits_fails_with_its_last_log_line(netns, tmp_path):
    run_dir = tmp_path / "run"
    dying = ["python3", "-c", "import sys; print('cannot read /etc/none.conf', flush=True); sys.exit(3)"]
    for extra in ({"ready_port": PORT}, {}):
        result = run_module("daemon", name="dies", argv=dying, netns=netns, run_dir=str(run_dir), **extra)
        assert result.get("failed"), result
        msg = result["msg"]
        assert "\n" not in msg and "Traceback" not in msg
        assert "cannot read /etc/none.conf" in msg and "exited with status 3" in msg, msg
        assert in_namespace(netns) == []
        assert sorted(p.name for p in run_dir.iterdir()) == ["dies.log"]

    # Up, but never listening: a timeout, and nothing left running.
    started = time.monotonic()
    result = run_module("daemon", name="deaf", argv=["sleep", "60"], netns=netns, run_dir=str(run_dir),
                        ready_port=PORT, ready_timeout=1)
    assert result.get("failed") and f"nothing listens on TCP port {PORT} after 1 s" in result["msg"]
    assert time.monotonic() - started < 8
    assert in_namespace(netns) == []
    assert not (run_dir / "deaf.pid").exists()


def test_the_supervisor_gives_up_after_five_quick_exits(netns, tmp_path):
    marker = tmp_path / "broken"
    code = (f"import os, sys, time\nif os.path.exists({str(marker)!r}): sys.exit('broken config')\n"
            "time.sleep(99)")
    result = run_module("daemon", name="flaky", argv=["python3", "-c", code], netns=netns,
                        run_dir=str(tmp_path))
    assert result["changed"] is True, result
    marker.write_text("")
    os.kill(result["program_pid"], signal.SIGTERM)
    # Exits at about 0, 1, 2, 3, 4 s: the fifth one within 30 s ends the supervisor.
    assert wait_for(lambda: in_namespace(netns) == [], seconds=10)
    log = (tmp_path / "flaky.log").read_text()
    assert log.splitlines().count("broken config") == 4
    assert "giving up: the program exited 5 times within 30 s" in log
    again = run_module("daemon", name="flaky", argv=["python3", "-c", code], netns=netns,
                       run_dir=str(tmp_path))
    assert again.get("failed") and "broken config" in again["msg"]
    assert in_namespace(netns) == []


def test_bad_input_fails_with_one_line_and_changes_nothing(netns, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    a_file.chmod(0o644)
    run_dir = str(tmp_path / "run")
    cases = {
        "name": dict(name="../web", argv=["sleep", "1"]),
        "argv: required": dict(name="web"),
        "argv: must hold": dict(name="web", argv=[]),
        "not found on PATH": dict(name="web", argv=["mpsocks-no-such-program"]),
        "absolute path": dict(name="web", argv=["bin/sleep"]),
        "not an executable": dict(name="web", argv=[str(a_file)]),
        "run_dir": dict(name="web", argv=["sleep", "1"], run_dir=str(a_file)),
        "ready_port": dict(name="web", argv=["sleep", "1"], ready_port=70000),
    }
    for needle, args in cases.items():
        result = run_module("daemon", **dict(dict(netns=netns, run_dir=run_dir), **args))
        assert result.get("failed"), args
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
        assert needle in result["msg"], result["msg"]
    missing = run_module("daemon", name="web", argv=["sleep", "1"], netns="mpsocks-no-such-ns",
                         run_dir=run_dir)
    assert missing["failed"] and "mpsocks-no-such-ns" in missing["msg"]
    assert not os.path.exists(run_dir) and in_namespace(netns) == []


PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - mpsocks.mptcp.daemon:
        name: web
        argv: {argv}
        run_dir: {run_dir}
        ready_port: {port}
        state: "{{{{ wanted | default('started') }}}}"
      register: daemon
    - ansible.builtin.copy:
        content: "{{{{ daemon | to_json }}}}"
        dest: {run_dir}/../result.json
"""


def test_under_ansible_the_supervisor_outlives_the_module_files(netns, tmp_path):
    """Through the netns connection (AnsiballZ; no netns option): the module runs inside already."""
    run_dir = tmp_path / "run"
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK.format(argv=json.dumps(server(PORT)), run_dir=run_dir, port=PORT))
    inventory = netns_inventory(tmp_path / "inv.json", netns)
    try:
        rc, output, recap = ansible_playbook(playbook, inventory)
        assert rc == 0, output
        result = json.loads((tmp_path / "result.json").read_text())
        assert result["changed"] is True and result["netns"] is None
        pid, program = result["pid"], result["program_pid"]
        assert listeners(PORT, netns) == {program} and program not in listeners(PORT)
        # The module's files are gone; the supervisor still restarts the program.
        module_file = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[1]
        assert "AnsiballZ_daemon" in module_file and not os.path.exists(module_file)
        os.kill(program, signal.SIGKILL)
        restarted = wait_for(lambda: listeners(PORT, netns) - {program})
        assert restarted and http_get(netns, PORT) == "200"

        rc, output, recap = ansible_playbook(playbook, inventory)
        assert rc == 0 and recap[netns]["changed"] == 1, output  # only the copy of the new result
        assert json.loads((tmp_path / "result.json").read_text())["pid"] == pid
    finally:
        rc, output, recap = ansible_playbook(playbook, inventory, extravars={"wanted": "absent"})
    assert rc == 0, output
    assert in_namespace(netns) == []
