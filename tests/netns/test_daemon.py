"""mpsocks.mptcp.daemon: real supervised programs inside a fresh namespace."""

import contextlib
import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mpsocks_testlib import (
    COLLECTION,
    ansible_playbook,
    collections_root,
    netns_inventory,
    run_item,
    run_module,
    sh,
    unique_name,
)

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


def wait_for(predicate, seconds=15.0):
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

    predicted = run_item("daemon", check=True, **args)
    assert predicted["changed"] is True and predicted["pid"] is None
    assert predicted["diff"]["after"]["running"] is True
    assert predicted["daemon"] == {"name": "web", "argv": server(PORT), "netns": netns,
                                   "run_dir": str(run_dir)}
    assert not run_dir.exists() and in_namespace(netns) == []

    started = run_item("daemon", **args)
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

    again = run_item("daemon", **args)
    assert again["changed"] is False and again["pid"] == pid and again["program_pid"] == program
    assert run_item("daemon", check=True, **args)["changed"] is False

    # The supervisor restarts a killed program.
    os.kill(program, signal.SIGKILL)
    restarted = wait_for(lambda: listeners(PORT, netns) - {program})
    assert restarted and len(restarted) == 1, restarted
    new_program = restarted.pop()
    assert new_program != program and http_get(netns, PORT) == "200"
    assert "was killed by signal 9" in (run_dir / "web.log").read_text()
    kept = run_item("daemon", **args)
    assert kept["changed"] is False and kept["pid"] == pid and kept["program_pid"] == new_program

    # A new argv restarts it: check mode predicts and leaves the old one alone.
    changed_args = dict(args, argv=server(PORT + 1), ready_port=PORT + 1)
    predicted = run_item("daemon", check=True, **changed_args)
    assert predicted["changed"] is True and predicted["diff"]["before"]["argv"] == server(PORT)
    assert listeners(PORT, netns) == {new_program} and listeners(PORT + 1, netns) == set()
    changed = run_item("daemon", **changed_args)
    assert changed["changed"] is True and changed["pid"] != pid
    assert listeners(PORT, netns) == set() and listeners(PORT + 1, netns) == {changed["program_pid"]}
    assert sorted(in_namespace(netns)) == sorted([changed["pid"], changed["program_pid"]])

    # absent: check mode changes nothing; then nothing is left in the namespace but the log.
    absent = dict(name="web", netns=netns, run_dir=str(run_dir), state="absent")
    assert run_item("daemon", check=True, **absent)["changed"] is True
    assert len(in_namespace(netns)) == 2
    removed = run_item("daemon", **absent)
    assert removed["changed"] is True and removed["pid"] is None
    assert in_namespace(netns) == []
    assert sorted(p.name for p in run_dir.iterdir()) == ["web.log"]
    assert run_item("daemon", **absent)["changed"] is False


def test_argv_netns_and_a_dead_supervisor_restart(netns, tmp_path):
    run_dir = str(tmp_path / "run")
    args = dict(name="sleeper", argv=["sleep", "300"], netns=netns, run_dir=run_dir)
    first = run_item("daemon", **args)
    assert first["changed"] is True and first["program_pid"], first

    # Same argv, but asked for the module's own (root) namespace: moved there.
    moved = run_item("daemon", name="sleeper", argv=["sleep", "300"], run_dir=run_dir)
    try:
        assert moved["changed"] is True and moved["diff"]["before"]["netns"] == netns
        assert in_namespace(netns) == []
        root_ns = os.stat("/proc/self/ns/net")
        assert os.stat(f"/proc/{moved['program_pid']}/ns/net").st_ino == root_ns.st_ino
    finally:
        run_item("daemon", name="sleeper", run_dir=run_dir, state="absent")
    assert not os.path.exists(f"/proc/{moved['pid']}/ns/net")

    # A supervisor killed with SIGKILL is started again; the program it left behind is killed.
    second = run_item("daemon", **args)
    os.kill(second["pid"], signal.SIGKILL)
    assert wait_for(lambda: in_namespace(netns) == [second["program_pid"]])
    third = run_item("daemon", **args)
    assert third["changed"] is True and third["diff"]["before"]["running"] is False
    assert sorted(in_namespace(netns)) == sorted([third["pid"], third["program_pid"]])
    assert second["program_pid"] not in in_namespace(netns)
    run_item("daemon", name="sleeper", netns=netns, run_dir=run_dir, state="absent")
    assert in_namespace(netns) == []


def test_a_program_that_exits_fails_with_its_last_log_line(netns, tmp_path):
    run_dir = tmp_path / "run"
    dying = ["python3", "-c", "import sys; print('cannot read /etc/none.conf', flush=True); sys.exit(3)"]
    for extra in ({"ready_port": PORT}, {}):
        result = run_item("daemon", name="dies", argv=dying, netns=netns, run_dir=str(run_dir), **extra)
        assert result.get("failed"), result
        msg = result["msg"]
        assert "\n" not in msg and "Traceback" not in msg
        assert "cannot read /etc/none.conf" in msg and "exited with status 3" in msg, msg
        assert in_namespace(netns) == []
        assert sorted(p.name for p in run_dir.iterdir()) == ["dies.log"]

    # Up, but never listening: a timeout, and nothing left running.
    started = time.monotonic()
    result = run_item("daemon", name="deaf", argv=["sleep", "60"], netns=netns, run_dir=str(run_dir),
                      ready_port=PORT, ready_timeout=1)
    assert result.get("failed") and f"nothing listens on TCP port {PORT} after 1 s" in result["msg"]
    assert time.monotonic() - started < 60  # a sanity bound; the wait itself is timed by the log
    # The supervisor's own time stamps (whole seconds): started, then stopped after the 1 s timeout,
    # not after the default 10 s, however long the module took to start.
    log = (run_dir / "deaf.log").read_text()
    stamps = {event: datetime.datetime.fromisoformat(stamp) for stamp, event in re.findall(
        r"^(\S+ \S+) mpsocks-daemon deaf: (started program|received SIGTERM)", log, re.M)}
    waited = (stamps["received SIGTERM"] - stamps["started program"]).total_seconds()
    print(f"\nready_timeout 1 s: the program was stopped {waited:.0f} s after its start (log time stamps)")
    assert waited <= 4
    assert in_namespace(netns) == []
    assert not (run_dir / "deaf.pid").exists()


def test_the_supervisor_gives_up_after_five_quick_exits(netns, tmp_path):
    marker = tmp_path / "broken"
    code = (f"import os, sys, time\nif os.path.exists({str(marker)!r}): sys.exit('broken config')\n"
            "time.sleep(99)")
    result = run_item("daemon", name="flaky", argv=["python3", "-c", code], netns=netns,
                        run_dir=str(tmp_path))
    assert result["changed"] is True, result
    marker.write_text("")
    os.kill(result["program_pid"], signal.SIGTERM)
    # Exits at about 0, 1, 2, 3, 4 s: the fifth one within 30 s ends the supervisor.
    assert wait_for(lambda: in_namespace(netns) == [], seconds=30)
    log = (tmp_path / "flaky.log").read_text()
    assert log.splitlines().count("broken config") == 4
    assert "giving up: the program exited 5 times within 30 s" in log
    again = run_item("daemon", name="flaky", argv=["python3", "-c", code], netns=netns,
                       run_dir=str(tmp_path))
    assert again.get("failed") and "broken config" in again["msg"]
    assert in_namespace(netns) == []


def test_files_are_written_first_and_a_changed_file_restarts_the_daemon(netns, tmp_path):
    run_dir, conf, secret = tmp_path / "run", tmp_path / "etc" / "app.conf", tmp_path / "etc" / "secret"
    argv = ["/bin/sh", "-c", f"cat {conf}; exec sleep 300"]

    def files(text, secret_state="present"):
        return [{"path": str(conf), "content": text},
                {"path": str(secret), "content": "s3cret\n", "mode": "0600", "state": secret_state}]

    args = dict(name="app", argv=argv, netns=netns, run_dir=str(run_dir), files=files("one\n"))
    predicted = run_item("daemon", check=True, **args)
    assert predicted["changed"] is True and not conf.parent.exists()
    first = run_item("daemon", **args)
    assert first["changed"] is True, first
    assert conf.read_text() == "one\n" and oct(conf.stat().st_mode & 0o777) == "0o644"
    assert secret.read_text() == "s3cret\n" and oct(secret.stat().st_mode & 0o777) == "0o600"
    assert wait_for(lambda: "one" in (run_dir / "app.log").read_text())
    assert "s3cret" not in json.dumps(first)  # the content is not logged, nor returned
    assert run_item("daemon", **args)["changed"] is False

    # A new content restarts it with the file written before the start.
    second = run_item("daemon", **dict(args, files=files("two\n")))
    assert second["changed"] is True and second["program_pid"] != first["program_pid"]
    before, after = second["diff"]["before"]["files"], second["diff"]["after"]["files"]
    assert before[str(conf)] != after[str(conf)] and before[str(secret)] == after[str(secret)]
    assert wait_for(lambda: "two" in (run_dir / "app.log").read_text())

    # A file changed by hand is not what runs: written again, and the daemon restarted.
    conf.write_text("by hand\n")
    third = run_item("daemon", **dict(args, files=files("two\n")))
    assert third["changed"] is True and "(not what runs)" in third["diff"]["before"]["files"][str(conf)]
    assert conf.read_text() == "two\n" and third["program_pid"] != second["program_pid"]

    # A file of state absent goes; a removed daemon takes its files along, not its log.
    fourth = run_item("daemon", **dict(args, files=files("two\n", "absent")))
    assert fourth["changed"] is True and not secret.exists() and conf.exists()
    removed = run_item("daemon", name="app", netns=netns, run_dir=str(run_dir), state="absent",
                       files=[{"path": str(conf), "state": "absent"}])
    assert removed["changed"] is True and not conf.exists() and in_namespace(netns) == []
    assert sorted(path.name for path in run_dir.iterdir()) == ["app.log"]
    # Only a leftover file is still something to remove.
    conf.write_text("left\n")
    assert run_item("daemon", name="app", netns=netns, run_dir=str(run_dir), state="absent",
                    files=[{"path": str(conf)}])["changed"] is True
    assert not conf.exists()


def test_a_port_another_program_holds_fails_before_anything_changes(netns, tmp_path):
    run_dir, conf = tmp_path / "run", tmp_path / "app.conf"
    squatter = subprocess.Popen(["ip", "netns", "exec", netns] + server(PORT), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        holder = wait_for(lambda: listeners(PORT, netns))
        assert holder, "the squatter does not listen"
        result = run_item("daemon", name="web", argv=server(PORT), netns=netns, run_dir=str(run_dir),
                          ready_port=PORT, exclusive_port=True, files=[{"path": str(conf), "content": "x"}])
        assert result.get("failed"), result
        pid = holder.pop()
        assert result["msg"] == (f"ready_port: TCP port {PORT} is in use by python3 (pid {pid}); stop it or "
                                 "choose another port")
        assert not run_dir.exists() and not conf.exists()
    finally:
        squatter.kill()
        squatter.wait()


def test_bad_files_and_supervisor_fail_with_one_line_and_change_nothing(netns, tmp_path):
    run_dir, conf = str(tmp_path / "run"), str(tmp_path / "app.conf")
    cases = {
        "files[0].path: 'app.conf' must be an absolute path": [{"path": "app.conf", "content": ""}],
        f"files[1].path: {conf} is listed twice": [{"path": conf, "content": ""}] * 2,
        "files[0].content: required": [{"path": conf}],
        "files[0].mode: '0999' is not an octal mode": [{"path": conf, "content": "", "mode": "0999"}],
    }
    for needle, files in cases.items():
        result = run_item("daemon", name="app", argv=["sleep", "1"], netns=netns, run_dir=run_dir,
                          files=files)
        assert result.get("failed") and needle in result["msg"] and "\n" not in result["msg"], result["msg"]
    # No systemd on these machines (the VM guest tests run the systemd units, tests/e2e/test_up_vm.py).
    nosystemd = run_item("daemon", name="app", argv=["sleep", "1"], run_dir=run_dir, supervisor="systemd")
    assert nosystemd.get("failed") and "supervisor: systemd does not run this machine" in nosystemd["msg"]
    in_netns = run_item("daemon", name="app", argv=["sleep", "1"], netns=netns, run_dir=run_dir,
                        supervisor="systemd")
    assert in_netns.get("failed") and in_netns["msg"].startswith(f"netns: '{netns}': a systemd unit")
    assert not os.path.exists(run_dir) and not os.path.exists(conf) and in_namespace(netns) == []


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
        result = run_item("daemon", **dict(dict(netns=netns, run_dir=run_dir), **args))
        assert result.get("failed"), args
        assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
        assert needle in result["msg"], result["msg"]
    missing = run_item("daemon", name="web", argv=["sleep", "1"], netns="mpsocks-no-such-ns", run_dir=run_dir)
    assert missing["failed"] and "mpsocks-no-such-ns" in missing["msg"]
    assert not os.path.exists(run_dir) and in_namespace(netns) == []


def test_a_name_with_a_trailing_newline_is_refused(netns, tmp_path):
    """Issue 7 #10: the name check used ``$``, which also matches before a final newline."""
    for state in ("started", "absent"):
        result = run_item("daemon", name="web\n", argv=["sleep", "100"], netns=netns, run_dir=str(tmp_path),
                          state=state)
        assert result.get("failed") and result["msg"].startswith("name: 'web\\n' is not a valid daemon name")
    assert list(tmp_path.iterdir()) == [] and in_namespace(netns) == []


# --- issue 7 #5 and #8: races and killed processes -------------------------------------------------

#: Issue 7 #5, reproduced as written against the code before the fix: after two concurrent starts,
#: something was left running after two absents in 2 of 5 pairs (and two supervisors ran after
#: half the pairs); 12 pairs would all pass by chance with a probability of 0.6^12 = 0.2 %.
RACING_PAIRS = 12


def start_module(module, args_file, **params):
    """Start list MODULE with PARAMS in the background, as Ansible would (arguments in ARGS_FILE)."""
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(params, _ansible_diff=True)}))
    program = COLLECTION / "plugins" / "modules" / f"{module}.py"
    return subprocess.Popen([sys.executable, str(program), str(args_file)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(collections_root())))


def test_two_concurrent_starts_leave_one_supervisor_that_absent_stops(netns, tmp_path):
    """Issue 7 #5: two concurrent starts of one daemon, then absent twice, RACING_PAIRS times."""
    config = [{"netns": netns, "name": "d1", "run_dir": str(tmp_path / "x"), "argv": ["sleep", "1000"]}]
    for pair in range(RACING_PAIRS):
        first = start_module("daemon", tmp_path / "a.json", config=config)
        time.sleep(random.uniform(0, 0.02))
        second = start_module("daemon", tmp_path / "b.json", config=config)
        results = [json.loads(proc.communicate(timeout=60)[0]) for proc in (first, second)]
        assert not any(r.get("failed") for r in results), results
        # One started it, the other found it running: one supervisor, one program.
        assert sorted(r["changed"] for r in results) == [False, True], (pair, results)
        started = results[0]["results"][0]
        assert {r["results"][0]["pid"] for r in results} == {started["pid"]}, (pair, results)
        assert sorted(in_namespace(netns)) == sorted([started["pid"], started["program_pid"]]), pair
        removed = run_module("daemon", state="absent", config=config)
        assert removed["changed"] is True and in_namespace(netns) == [], (pair, removed)
        again = run_module("daemon", state="absent", config=config)
        assert again["changed"] is False and in_namespace(netns) == [], (pair, again)
    print(f"\n{RACING_PAIRS} racing pairs of starts: one supervisor each, none left after the first absent")


def first_fork(module, seconds=30.0):
    """Wait until the MODULE process has forked; False if it never did.

    Its child lives only for a setsid and a fork, which a poll of its children can miss on a busy
    machine; the supervisor it leaves is a fork too, so it shows the module's command line under another pid.
    """
    pid, cmdline = module.pid, "".join(f"{arg}\0" for arg in module.args).encode()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            return True
        for other in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if other.name != str(pid) and (other / "cmdline").read_bytes() == cmdline:
                    return True
        time.sleep(0.0005)
    return False


def test_a_module_killed_after_its_fork_leaves_a_record_that_absent_uses(netns, tmp_path):
    """Issue 7 #5, second half: the module is killed between its fork and writing the pid file.

    Before the fix the module wrote the record itself, through ``NAME.json.tmp<its pid>``: a FIFO
    there holds such a module exactly between the fork and the pid file, deterministically. Now the
    supervisor writes its own record, before the module goes on.
    """
    run_dir = tmp_path / "x"
    run_dir.mkdir()
    config = [{"netns": netns, "name": "d1", "run_dir": str(run_dir), "argv": ["sleep", "1000"]}]
    for attempt in range(3):
        for moment in ("at its first fork", "while the program runs"):
            module = start_module("daemon", tmp_path / "args.json", config=config)
            trap = run_dir / f"d1.json.tmp{module.pid}"
            if moment == "at its first fork":
                assert first_fork(module), "the module never forked"
            else:
                os.mkfifo(trap)
                assert wait_for(lambda: "sleep 1000" in sleeps(netns), seconds=30)
            os.kill(module.pid, signal.SIGKILL)
            module.communicate()
            trap.unlink(missing_ok=True)
            removed = run_module("daemon", state="absent", config=config)
            assert removed["changed"] is True and not removed.get("failed"), (attempt, moment, removed)
            assert in_namespace(netns) == [], (attempt, moment)
            assert sorted(p.name for p in run_dir.iterdir()) == ["d1.log"], (attempt, moment)
    print("\n3 x 2 modules killed after their fork: each supervisor was recorded, and absent stopped it")


SPAWNING = ["sh", "-c", "env -i /bin/sleep 1001 & exec sleep 1000"]


def sleeps(netns):
    """{argv text: pid} of the sleep processes in NETNS."""
    found = {}
    for pid in in_namespace(netns):
        with contextlib.suppress(OSError):
            found[Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()] = pid
    return {text: pid for text, pid in found.items() if "sleep 100" in text}


def test_leftovers_of_a_killed_supervisor_are_found_by_their_process_group(netns, tmp_path):
    """Issue 7 #8: kill -9 of the supervisor, then absent; the program's whole group goes."""
    config = [{"netns": netns, "name": "d8", "run_dir": str(tmp_path), "argv": SPAWNING}]
    started = run_module("daemon", config=config)["results"][0]
    assert wait_for(lambda: len(sleeps(netns)) == 2), sleeps(netns)
    environ = Path(f"/proc/{sleeps(netns)['/bin/sleep 1001']}/environ").read_bytes()
    assert b"MPSOCKS_DAEMON" not in environ  # env -i: no marker to find it by
    os.kill(started["pid"], signal.SIGKILL)
    assert wait_for(lambda: started["pid"] not in in_namespace(netns))

    predicted = run_module("daemon", check=True, state="absent", config=config)
    assert predicted["changed"] is True and predicted["results"][0]["diff"]["before"]["running"] is False
    assert len(sleeps(netns)) == 2
    removed = run_module("daemon", state="absent", config=config)
    assert removed["changed"] is True, removed
    assert sleeps(netns) == {} and in_namespace(netns) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d8.log"]


def test_a_reused_group_number_is_not_taken_for_the_program(netns, tmp_path):
    """The group record is checked: a number that now names another process group is not the program's."""
    config = [{"netns": netns, "name": "d8", "run_dir": str(tmp_path), "argv": SPAWNING}]
    started = run_module("daemon", config=config)["results"][0]
    assert wait_for(lambda: len(sleeps(netns)) == 2)
    os.kill(started["pid"], signal.SIGKILL)
    assert wait_for(lambda: started["pid"] not in in_namespace(netns))
    leftover = sleeps(netns)["/bin/sleep 1001"]  # env -i: no marker; only its group finds it
    # Someone else's process group (in a session of its own), in the same namespace.
    foreign = subprocess.Popen(["ip", "netns", "exec", netns, "setsid", "sleep", "1002"])
    try:
        assert wait_for(lambda: "sleep 1002" in sleeps(netns))
        other = sleeps(netns)["sleep 1002"]
        other_start = int(Path(f"/proc/{other}/stat").read_text().rsplit(")", 1)[1].split()[19])
        record = json.loads((tmp_path / "d8.json").read_text())
        # The recorded group number now names the foreign group: first with another start time (the
        # pid was reused), then with its true start time but outside the supervisor's session.
        for start in (other_start - 1, other_start):
            record["program"] = {"pid": other, "starttime": start}
            (tmp_path / "d8.json").write_text(json.dumps(record))
            (tmp_path / "d8.pid").write_text(f"{record['pid']}\n")
            removed = run_module("daemon", state="absent", config=config)
            assert removed["changed"] is True, removed
            # The foreign group is left alone, and so (unfound) is the program's env -i child.
            assert sleeps(netns) == {"/bin/sleep 1001": leftover, "sleep 1002": other}, start
    finally:
        foreign.kill()
        foreign.wait()


# --- list form -------------------------------------------------------------------------------------

@pytest.fixture
def second_netns():
    name = unique_name("mpstd")
    subprocess.run(["ip", "netns", "add", name], check=True)
    sh("ip", "link", "set", "lo", "up", netns=name)
    try:
        yield name
    finally:
        for pid in in_namespace(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_several_daemons_across_namespaces_in_one_call_then_overridden(netns, second_netns, tmp_path):
    run_dir = tmp_path / "run"
    other_dir = tmp_path / "other"
    config = [
        {"name": "web", "argv": server(PORT), "ready_port": PORT},  # in the module's netns
        {"name": "web2", "argv": server(PORT + 1), "ready_port": PORT + 1},
        {"name": "proxy", "netns": second_netns, "argv": server(PORT), "ready_port": PORT},
    ]
    predicted = run_module("daemon", check=True, netns=netns, run_dir=str(run_dir), config=config)
    assert predicted["changed"] is True and [r["changed"] for r in predicted["results"]] == [True] * 3
    assert [r["pid"] for r in predicted["results"]] == [None] * 3
    assert not run_dir.exists() and in_namespace(netns) == in_namespace(second_netns) == []

    done = run_module("daemon", netns=netns, run_dir=str(run_dir), config=config)
    assert done["changed"] is True and len(done["diff"]) == 3, done
    assert [r["diff"] for r in done["results"]] == [r["diff"] for r in predicted["results"]]
    assert [r["daemon"] for r in done["results"]] == [r["daemon"] for r in predicted["results"]]
    web, web2, proxy = done["results"]
    assert listeners(PORT, netns) == {web["program_pid"]}
    assert listeners(PORT + 1, netns) == {web2["program_pid"]}
    assert listeners(PORT, second_netns) == {proxy["program_pid"]}
    assert all(r["log"] == str(run_dir / (r["daemon"]["name"] + ".log")) for r in done["results"])
    assert proxy["daemon"] == {"name": "proxy", "argv": server(PORT), "netns": second_netns,
                               "run_dir": str(run_dir)}

    assert run_module("daemon", netns=netns, run_dir=str(run_dir), config=config)["changed"] is False
    # What the module returned, fed back as its input, changes nothing (each names its netns and run_dir).
    returned = [r["daemon"] for r in done["results"]]
    again = run_module("daemon", config=returned)
    assert again["changed"] is False
    assert [r["pid"] for r in again["results"]] == [r["pid"] for r in done["results"]]

    # A daemon of another run_dir, and a JSON file that is no daemon's record, are out of overridden's scope.
    elsewhere = run_item("daemon", name="elsewhere", argv=["sleep", "300"], netns=netns,
                         run_dir=str(other_dir))
    (run_dir / "lab.json").write_text(json.dumps({"name": "lab", "daemons": []}))
    keep = [dict(config[1], netns=netns)]
    predicted = run_module("daemon", check=True, state="overridden", run_dir=str(run_dir), config=keep)
    assert [(r["label"], r["changed"]) for r in predicted["results"]] == [
        ("daemon web2", False), ("daemon proxy", True), ("daemon web", True)]
    assert len(in_namespace(netns)) == 6 and len(in_namespace(second_netns)) == 2
    overridden = run_module("daemon", state="overridden", run_dir=str(run_dir), config=keep)
    assert [r["diff"] for r in overridden["results"]] == [r["diff"] for r in predicted["results"]]
    assert overridden["results"][0]["pid"] == web2["pid"]
    assert [r["daemon"] for r in overridden["results"][1:]] == [{}, {}]
    assert sorted(in_namespace(netns)) == sorted([web2["pid"], web2["program_pid"], elsewhere["pid"],
                                                  elsewhere["program_pid"]])
    assert in_namespace(second_netns) == []
    assert sorted(p.name for p in run_dir.iterdir()) == ["lab.json", "proxy.log", "web.log", "web2.json",
                                                          "web2.log", "web2.pid"]
    assert run_module("daemon", state="overridden", run_dir=str(run_dir), config=keep)["changed"] is False

    gone = run_module("daemon", state="absent", config=[{"name": "web2", "run_dir": str(run_dir)},
                                                        {"name": "elsewhere", "run_dir": str(other_dir)}])
    assert [r["changed"] for r in gone["results"]] == [True, True] and in_namespace(netns) == []


def test_a_bad_item_in_the_middle_starts_nothing(netns, second_netns, tmp_path):
    run_dir = tmp_path / "run"
    good = [{"name": "one", "argv": ["sleep", "300"], "netns": netns},
            {"name": "two", "argv": ["sleep", "300"], "netns": second_netns}]
    bad_items = [
        ({"name": "bad", "argv": ["mpsocks-no-such-program"]}, "not found on PATH"),
        ({"name": "bad\n", "argv": ["sleep", "300"]}, "not a valid daemon name"),
        ({"name": "bad", "argv": ["sleep", "300"], "netns": "mpsocks-no-such-ns"}, "mpsocks-no-such-ns"),
        ({"name": "bad", "argv": ["sleep", "300"], "run_dir": "relative"}, "must be an absolute path"),
    ]
    for bad, needle in bad_items:
        for check in (True, False):
            config = good[:1] + [bad] + good[1:]
            result = run_module("daemon", check=check, run_dir=str(run_dir), config=config)
            assert result.get("failed") and result["changed"] is False, result
            labels = ("config[1] (daemon bad)", "config[1] (daemon 'bad\\n')")
            assert result["msg"].startswith(labels), result["msg"]
            assert needle in result["msg"] and "\n" not in result["msg"], result["msg"]
            assert not run_dir.exists() and in_namespace(netns) == in_namespace(second_netns) == []


PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - mpsocks.mptcp.daemon:
        run_dir: {run_dir}
        state: "{{{{ wanted | default('started') }}}}"
        config:
          - name: web
            argv: {argv}
            ready_port: {port}
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
        assert result["changed"] is True and result["results"][0]["daemon"]["netns"] is None
        pid, program = result["results"][0]["pid"], result["results"][0]["program_pid"]
        assert listeners(PORT, netns) == {program} and program not in listeners(PORT)
        # The module's files are gone; the supervisor still restarts the program.
        module_file = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[1]
        assert "AnsiballZ_daemon" in module_file and not os.path.exists(module_file)
        os.kill(program, signal.SIGKILL)
        restarted = wait_for(lambda: listeners(PORT, netns) - {program})
        assert restarted and http_get(netns, PORT) == "200"

        rc, output, recap = ansible_playbook(playbook, inventory)
        assert rc == 0 and recap[netns]["changed"] == 1, output  # only the copy of the new result
        assert json.loads((tmp_path / "result.json").read_text())["results"][0]["pid"] == pid
    finally:
        rc, output, recap = ansible_playbook(playbook, inventory, extravars={"wanted": "absent"})
    assert rc == 0, output
    assert in_namespace(netns) == []
