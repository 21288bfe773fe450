"""mpsocks.mptcp.kernel_build on a fake kernel source (tests/kernel/fake_kernel.py): the logic in seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import fake_kernel
import pytest
from ansible_collections.mpsocks.mptcp.plugins.module_utils.build_cache import read_json
from ansible_collections.mpsocks.mptcp.plugins.module_utils.kernel_build import (
    check_config,
    count_objects,
    first_error,
    job_running,
    parse_config,
    parse_fragment,
)
from kernel_testlib import kernel_keys
from mpsocks_testlib import run_module

ROLE_TEXT = fake_kernel.ROLE_FRAGMENT.read_text()


@pytest.fixture
def tarball(tmp_path, build_tools):
    return fake_kernel.write_tarball(tmp_path / "linux-fake.tar.gz")


def params(state_dir: Path, tarball: Path, *user: str, **more) -> dict:
    fragments = [{"name": "role", "text": ROLE_TEXT}]
    if user:
        fragments.append({"name": "user", "text": "\n".join(user)})
    return dict({"tarball": str(tarball), "state_dir": str(state_dir), "fragments": fragments, "nice": 19},
                **more)


def build(state_dir: Path, tarball: Path, *user: str, **more) -> tuple[dict, list[dict]]:
    """Start, then wait until done; return the last result and every wait result."""
    started = run_module("kernel_build", **params(state_dir, tarball, *user, **more))
    waits = []
    result = started
    while result.get("building") and not result.get("failed"):
        result = run_module("kernel_build", step="wait", state_dir=str(state_dir), key=started["key"],
                            build_dir=started["build_dir"], wait=1)
        waits.append(result)
        assert len(waits) < 60, result
    return started, waits


def leftovers(state_dir: Path) -> list[str]:
    """Temporary folders or files an install left behind."""
    return [str(p) for p in state_dir.rglob("*tmp*") if "/src/" not in str(p) and "/out/" not in str(p)]


def test_a_build_is_installed_whole_then_cached(tmp_path, tarball):
    state = tmp_path / "state"
    started, waits = build(state, tarball, "CONFIG_FAKE_OBJECTS=25", 'CONFIG_FAKE_DELAY="0.1"')
    assert started["changed"] and started["building"] and not started["done"], started
    done = waits[-1]
    assert done["changed"] and done["done"] and not done.get("failed"), done
    assert any(not w["done"] and w["msg"].endswith(tuple("0123456789s")) and "objects built in" in w["msg"]
               for w in waits[:-1]), waits
    folder = state / "kernel" / done["key"]
    assert done["image"] == str(folder / "bzImage") and (folder / "bzImage").read_text().startswith("fake")
    info = json.loads((folder / "kernel.json").read_text())
    assert info["release"] == fake_kernel.RELEASE == done["release"]
    assert info["source"]["kind"] == "tarball" and info["objects"] == 26
    assert info["config_sha256"] in done["key"] or done["key"].startswith(info["source"]["slug"])
    assert "CONFIG_FAKE_OBJECTS=25" in (folder / "config").read_text()
    assert not leftovers(state)

    start = time.monotonic()
    again = run_module("kernel_build", **params(state, tarball, "CONFIG_FAKE_OBJECTS=25",
                                                'CONFIG_FAKE_DELAY="0.1"'))
    took = time.monotonic() - start
    print(f"cached kernel found in {took:.2f} s (one module call)")
    assert not again["changed"] and again["cached"] and again["done"] and again["image"] == done["image"]


def test_same_final_config_from_other_inputs_is_not_rebuilt(tmp_path, tarball):
    state = tmp_path / "state"
    _, waits = build(state, tarball)
    # A comment and a repeated option: other inputs, the same final .config.
    again = run_module("kernel_build", **params(state, tarball, "# nothing new", "CONFIG_MPTCP=y"))
    assert not again["changed"] and again["done"] and again["key"] == waits[-1]["key"], again


def test_a_failed_compile_says_its_error_and_caches_nothing(tmp_path, tarball):
    state = tmp_path / "state"
    _, waits = build(state, tarball, "CONFIG_FAKE_FAIL=y")
    failed = waits[-1]
    assert failed.get("failed"), failed
    assert failed["msg"].startswith("make bzImage failed (exit 2): "
                                    "fake/broken.c:12:5: error: 'mptcp' undeclared")
    assert "build.log" in failed["msg"] and "\n" not in failed["msg"]
    assert not kernel_keys(state)
    assert not leftovers(state)


def test_an_unknown_option_fails_before_anything_is_configured(tmp_path, tarball):
    state = tmp_path / "state"
    result = run_module("kernel_build", **params(state, tarball, "CONFIG_DOES_NOT_EXIST=y"))
    assert result.get("failed"), result
    assert result["msg"] == ("CONFIG_DOES_NOT_EXIST (fragment user): no such option in the Kconfig files of "
                             f"linux-fake.tar.gz (sha256 {result['msg'].split('sha256 ')[1][:12]})")
    assert not list(state.glob("build/*/out/.config"))
    assert not (state / "kernel").exists()


def test_an_option_the_config_drops_is_named_with_its_unmet_dependency(tmp_path, tarball):
    state = tmp_path / "state"
    result = run_module("kernel_build", **params(state, tarball, "CONFIG_NEEDS_MISSING=y", "CONFIG_SMP=n",
                                                 "# CONFIG_MPTCP is not set"))
    assert result.get("failed"), result
    line = kconfig_line("NEEDS_MISSING")
    assert result["msg"] == ("CONFIG_NEEDS_MISSING=y was asked but the final .config has it unset "
                             f"(Kconfig:{line}: depends on MISSING_DEP; unset: MISSING_DEP)")
    assert not (state / "kernel").exists()
    assert not job_running(read_json(next(state.glob("build/*/job.json"), Path("/nonexistent"))))


def kconfig_line(symbol: str) -> int:
    return fake_kernel.kconfig().splitlines().index(f"config {symbol}") + 1


def test_check_mode_predicts_a_build_and_writes_nothing(tmp_path, tarball):
    state = tmp_path / "state"
    result = run_module("kernel_build", check=True, **params(state, tarball))
    assert result["changed"] and not result["building"] and not result["done"], result
    assert result["msg"].startswith("would configure and build a kernel from linux-fake.tar.gz")
    assert not state.exists()


def test_check_mode_of_a_cached_kernel_changes_nothing_and_names_it(tmp_path, tarball):
    state = tmp_path / "state"
    _, waits = build(state, tarball)
    result = run_module("kernel_build", check=True, **params(state, tarball))
    assert not result["changed"] and result["image"] == waits[-1]["image"]


def test_check_mode_names_an_unknown_option_once_the_source_is_unpacked(tmp_path, tarball):
    state = tmp_path / "state"
    build(state, tarball)
    result = run_module("kernel_build", check=True, **params(state, tarball, "CONFIG_NOPE=y"))
    assert result.get("failed") and result["msg"].startswith("CONFIG_NOPE (fragment user): no such option")


def test_a_build_nobody_waits_for_stops_and_the_next_run_resumes_it(tmp_path, tarball):
    state = tmp_path / "state"
    slow = ("CONFIG_FAKE_OBJECTS=1000", 'CONFIG_FAKE_DELAY="0.1"')
    started = run_module("kernel_build", **params(state, tarball, *slow, abandon_after=2))
    job = read_json(Path(started["build_dir"]) / "job.json")
    assert job_running(job)
    deadline = time.monotonic() + 30
    while job_running(job) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not job_running(job), "the abandoned build still runs"
    assert (Path(started["build_dir"]) / "rc").read_text().split()[0] == "abandoned"
    waited = run_module("kernel_build", step="wait", state_dir=str(state), key=started["key"],
                        build_dir=started["build_dir"], wait=1, abandon_after=2)
    assert waited.get("failed") and "nobody waited for it for 2 s" in waited["msg"], waited
    resumed = run_module("kernel_build", **params(state, tarball, *slow, abandon_after=2))
    assert resumed["building"] and resumed["key"] == started["key"], resumed
    stop(read_json(Path(started["build_dir"]) / "job.json"))


def stop(job: dict) -> None:
    """End a background build this test started: its wrapper's process group, and only that."""
    if job_running(job) and job["pid"] > 1:
        os.killpg(job["pid"], signal.SIGTERM)


def test_a_second_start_joins_the_running_build(tmp_path, tarball):
    state = tmp_path / "state"
    slow = ("CONFIG_FAKE_OBJECTS=40", 'CONFIG_FAKE_DELAY="0.1"')
    first = run_module("kernel_build", **params(state, tarball, *slow))
    second = run_module("kernel_build", **params(state, tarball, *slow))
    assert second["building"] and second["msg"].startswith("joined the build"), second
    other = run_module("kernel_build", **params(state, tarball, "CONFIG_FAKE_OBJECTS=3"))
    assert other.get("failed") and other["msg"].startswith("another kernel build"), other
    _, waits = build(state, tarball, *slow)
    assert waits[-1]["done"] and waits[-1]["key"] == first["key"]


def test_git_source_builds_the_commit_of_a_ref(tmp_path, build_tools):
    repo = fake_kernel.write_tree(tmp_path / "linux")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fake"], check=True)
    subprocess.run([*git, "tag", "v6.1-fake"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (repo / "UNCOMMITTED").write_text("not in the commit\n")
    state = tmp_path / "state"
    fragments = [{"name": "role", "text": ROLE_TEXT}]
    started = run_module("kernel_build", git_repo=str(repo), git_ref="v6.1-fake", state_dir=str(state),
                         fragments=fragments)
    assert started["key"].startswith("git-" + commit[:16]), started
    result = started
    while result.get("building"):
        result = run_module("kernel_build", step="wait", state_dir=str(state), key=started["key"],
                            build_dir=started["build_dir"], wait=1)
    assert result["done"] and result["kernel"]["source"]["commit"] == commit, result
    assert not (Path(started["build_dir"]) / "src" / "UNCOMMITTED").exists()

    bad = run_module("kernel_build", git_repo=str(repo), git_ref="v9.9", state_dir=str(state))
    assert bad.get("failed"), bad
    assert bad["msg"] == f"git tree {repo}: no commit 'v9.9' (a branch, tag or commit of that tree)"
    not_git = run_module("kernel_build", git_repo=str(tmp_path), state_dir=str(state))
    assert not_git.get("failed") and not_git["msg"] == f"git tree {tmp_path}: not a git repository"


@pytest.mark.parametrize(("options", "message"), [
    ({"tarball": "/nonexistent/linux.tar.xz"}, "tarball /nonexistent/linux.tar.xz: no such file"),
    ({"git_repo": "/nonexistent/linux"}, "git tree /nonexistent/linux: no such directory"),
    ({"fragments": [{"name": "user", "text": "CONFIG_MPTCP=y\nMPTCP=y"}]},
     "fragment user, line 2: 'MPTCP=y' is neither CONFIG_NAME=VALUE nor '# CONFIG_NAME is not set'"),
    ({"fragments": [{"path": "/nonexistent/frag.config"}]}, "fragment /nonexistent/frag.config: "
                                                            "No such file or directory"),
    ({"tarball": "/x", "git_repo": "/y"}, "parameters are mutually exclusive: tarball|git_repo"),
])
def test_bad_input_fails_in_one_line_and_changes_nothing(tmp_path, options, message, build_tools):
    state = tmp_path / "state"
    result = run_module("kernel_build", state_dir=str(state), **options)
    assert result.get("failed") and result["msg"] == message, result
    assert not state.exists()


def test_a_missing_source_package_is_reported_or_named(tmp_path, build_tools):
    state = tmp_path / "state"
    reported = run_module("kernel_build", state_dir=str(state), package="linux-source-0.0",
                          missing_packages="report")
    assert not reported.get("failed") and reported["missing_packages"] == ["linux-source-0.0"], reported
    failed = run_module("kernel_build", state_dir=str(state), package="linux-source-0.0")
    assert failed.get("failed") and failed["msg"] == (
        "the kernel build needs Debian packages that are not installed: linux-source-0.0 "
        "(apt-get install --no-install-recommends linux-source-0.0)"), failed
    assert not state.exists()


# --- the pieces, without a build -----------------------------------------------------------------

def test_fragments_and_configs_parse_as_kconfig_writes_them():
    assert parse_fragment("# comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=12\n",
                          "f") == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"', "CONFIG_D": "12"}
    assert parse_config("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n") == {"CONFIG_A": "y",
                                                                                  "CONFIG_C": '"x"'}


def test_check_config_names_every_option_not_held_as_asked():
    entries = {"A": ("net/Kconfig", 3, ["if NET", "depends on INET && !FOO"]), "B": ("Kconfig", 1, []),
               "M": ("Kconfig", 2, [])}
    final = {"CONFIG_NET": "y", "CONFIG_B": "y", "CONFIG_C": "5", "CONFIG_M": "y"}
    asked = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "6", "CONFIG_M": "m", "CONFIG_NET": "y"}
    assert check_config(asked, final, entries, modules=False) == [
        "CONFIG_A=y was asked but the final .config has it unset "
        "(net/Kconfig:3: if NET; depends on INET && !FOO; unset: FOO, INET)",
        "CONFIG_B is not set was asked but the final .config has CONFIG_B=y",
        "CONFIG_C=6 was asked but the final .config has CONFIG_C=5",
    ]
    assert "CONFIG_M=m" in check_config(asked, final, entries, modules=True)[-1]


def test_progress_counts_objects_and_errors_come_from_the_log(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("  HOSTCC  scripts/basic/fixdep\n  CC      init/main.o\n  AS      arch/x86/entry.o\n"
                   "  AR      init/built-in.a\n  CC      kernel/fork.o\n"
                   "make[2]: *** [Makefile:1] Error 1\n"
                   "in.c:3:1: fatal error: gelf.h: No such file or directory\n")
    assert count_objects(log) == 3
    assert first_error(log) == "in.c:3:1: fatal error: gelf.h: No such file or directory"
