"""mpsocks-run completion bash|zsh|fish and mpsocks-run man: generated from the parser, tried in the real
shells and rendered by man."""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from mpsocks_testlib import runner_env

RUNNER = Path(__file__).resolve().parents[2] / "runner"
sys.path.insert(0, str(RUNNER))

from mpsocks import cli, completion  # noqa: E402


def parsers(parser: argparse.ArgumentParser, path: tuple = ()) -> dict[tuple, argparse.ArgumentParser]:
    """Every command path of PARSER, () included, with its parser; read apart from the completion module,
    so that a verb it misses shows."""
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= parsers(sub, (*path, name))
    return found


def names_below(group: tuple[str, ...]) -> set[str]:
    """The verbs (GROUP ()) or actions of GROUP."""
    return {path[-1] for path in PARSERS if len(path) == len(group) + 1 and path[:-1] == group}


PARSERS = parsers(cli.build_parser())
GROUPS = [path for path in PARSERS if names_below(path)]
RUN_OPTIONS = {name for action in PARSERS[()]._actions for name in action.option_strings} \
    - {"-h", "--help", "--version"}
LAB_UP_OPTIONS = [name for action in PARSERS[("lab", "up")]._actions for name in action.option_strings]
LABS = {"alpha", "beta"}
SHELLS = ("bash", "zsh", "fish")
#: The file names install.sh gives the scripts.
INSTALLED_NAMES = {"bash": "mpsocks-run", "zsh": "_mpsocks-run", "fish": "mpsocks-run.fish"}


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    """A lab root with labs alpha and beta up, and gone, a folder without lab.json (not up)."""
    root = tmp_path_factory.mktemp("labs")
    for name in LABS:
        (root / name).mkdir()
        (root / name / "lab.json").write_text("{}")
    (root / "gone").mkdir()
    return root


@dataclasses.dataclass
class Shells:
    """The completion scripts, written into FOLDER as install.sh names them, run in HOME (the shells' own
    files) from CWD, a folder with two captures and a folder."""

    folder: Path
    home: Path
    cwd: Path

    def script(self, shell: str) -> Path:
        """SHELL's script in its file, written on first use (a shell's failure is its own tests')."""
        file = self.folder / shell / INSTALLED_NAMES[shell]
        if not file.exists():
            file.parent.mkdir()
            file.write_text(completion.SCRIPTS[shell](completion.command_tree()))
        return file

    def complete(self, shell: str, line: str, lab_root: Path) -> set[str]:
        """What SHELL offers for LINE, the cursor at its end, with the labs of LAB_ROOT up."""
        env = dict(os.environ, MPSOCKS_LAB_ROOT=str(lab_root), HOME=str(self.home),
                   XDG_CONFIG_HOME=str(self.home), XDG_DATA_HOME=str(self.home), TERM="xterm")
        return getattr(self, shell)(self.script(shell), line, env)

    def bash(self, script: Path, line: str, env: dict) -> set[str]:
        """COMPREPLY of the script's function, called as bash calls it."""
        program = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; '
                   'COMP_POINT=${#COMP_LINE}; _mpsocks_run; '
                   '((${#COMPREPLY[@]})) && printf "%s\\n" "${COMPREPLY[@]}"')
        proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", program, "bash", str(script),
                               *line.split(" ")], capture_output=True, text=True, cwd=self.cwd, env=env,
                              timeout=30)
        assert not proc.stderr
        return set(proc.stdout.splitlines())

    def fish(self, script: Path, line: str, env: dict) -> set[str]:
        """What fish's complete -C offers, the script sourced."""
        proc = subprocess.run(["fish", "--no-config", "-c", "source $argv[1]; complete -C $argv[2]",
                               str(script), line], capture_output=True, text=True, cwd=self.cwd, env=env,
                              timeout=30)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
        return {entry.split("\t")[0] for entry in proc.stdout.splitlines()}

    def zsh(self, script: Path, line: str, env: dict) -> set[str]:
        """The matches zsh's completion system adds when LINE and a Tab are typed at an interactive zsh.

        compinit autoloads the function from $fpath, as installed; a compadd wrapper writes what each
        call adds to a file, and the Tab key's widget marks when completion is over.
        """
        matches, done, init = self.home / "zsh-matches", self.home / "zsh-done", self.home / "init.zsh"
        for file in (matches, done):
            file.unlink(missing_ok=True)
        init.write_text(f"""\
fpath=({script.parent} $fpath)
autoload -Uz compinit && compinit -u -D
compadd() {{
    if (( ${{@[(I)-[OAD]*]}} )); then builtin compadd "$@"; return; fi
    local -a added
    builtin compadd -A added "$@"
    (( $#added )) && print -rl -- $added >> {matches}
    builtin compadd "$@"
}}
complete-and-mark() {{ zle complete-word; : > {done} }}
zle -N complete-and-mark
bindkey '^I' complete-and-mark
unsetopt autolist beep
PROMPT='ready> '
""")
        controller, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        shell = subprocess.Popen(["zsh", "-f", "-i"], stdin=terminal, stdout=terminal, stderr=terminal,
                                 cwd=self.cwd, env=env, start_new_session=True)
        os.close(terminal)
        screen = b""

        def read_until(ready) -> None:
            nonlocal screen
            deadline = time.monotonic() + 20
            while not ready() and time.monotonic() < deadline:
                if select.select([controller], [], [], 0.05)[0]:
                    try:
                        screen += os.read(controller, 4096)
                    except OSError:  # the shell has ended
                        return

        try:
            os.write(controller, f"source {init}\n".encode())
            read_until(lambda: b"ready> " in screen)
            os.write(controller, f"{line}\t".encode())
            read_until(done.exists)
            assert done.exists(), screen.decode(errors="replace")
            os.write(controller, b"\x15exit\n")  # Ctrl-U clears the line
            read_until(lambda: shell.poll() is not None)
        finally:
            shell.kill()
            shell.wait()
            os.close(controller)
        assert b"command not found" not in screen and b"parse error" not in screen, screen
        return set(matches.read_text().split()) if matches.exists() else set()


@pytest.fixture(scope="module")
def shells(tmp_path_factory) -> Shells:
    folder = tmp_path_factory.mktemp("completion")
    (folder / "home").mkdir()
    (folder / "work" / "plots").mkdir(parents=True)
    for capture in ("a.pcap", "b.pcapng"):
        (folder / "work" / capture).write_text("")
    return Shells(folder, folder / "home", folder / "work")


# In every shell ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("group", GROUPS, ids=lambda path: " ".join(path) or "verbs")
def test_every_verb_and_action_is_offered(shell, group, shells, lab_root):
    line = " ".join(["mpsocks-run", *group, ""])
    assert shells.complete(shell, line, lab_root) == names_below(group)


def test_the_lab_actions_are_the_lab_verbs():
    assert names_below(("lab",)) >= {"up", "down", "status", "graph", "exec", "experiment"}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("line", ["mpsocks-run lab status --name ", "mpsocks-run up --lab ",
                                  "mpsocks-run lab graph --name "])
def test_lab_names_are_the_labs_that_are_up(shell, line, shells, lab_root):
    assert shells.complete(shell, line, lab_root) == LABS


@pytest.mark.parametrize("shell", SHELLS)
def test_lab_names_are_read_when_completing(shell, shells, tmp_path):
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "lab.json").write_text("{}")
    assert shells.complete(shell, "mpsocks-run lab down --name ", tmp_path) == {"later"}
    assert shells.complete(shell, "mpsocks-run lab down --name ", tmp_path / "none") == set()


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("line", "expected"), [
    ("mpsocks-run up --backend ", {"netns", "libvirt"}),
    ("mpsocks-run lab graph --format ", {"mermaid", "dot", "png"}),
    ("mpsocks-run lab experiment ", {"net-neutrality"}),
    ("mpsocks-run completion ", {"bash", "zsh", "fish"}),
])
def test_choices_are_offered(shell, line, expected, shells, lab_root):
    assert shells.complete(shell, line, lab_root) == expected


@pytest.mark.parametrize("shell", SHELLS)
def test_options_of_an_action_with_the_run_options(shell, shells, lab_root):
    offered = shells.complete(shell, "mpsocks-run lab up --", lab_root)
    assert offered == {name for name in LAB_UP_OPTIONS if name.startswith("--")}
    assert {"--rates", "--middlebox", "--check", "--diff", "--no-wait", "--artifacts-dir"} <= offered


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("line", "expected"), [
    ("mpsocks-run analyze ", {"a.pcap", "b.pcapng", "plots"}),
    ("mpsocks-run analyze --plot ", {"plots"}),
])
def test_files_and_folders(shell, line, expected, shells, lab_root):
    assert {name.rstrip("/") for name in shells.complete(shell, line, lab_root)} == expected


# bash in more detail ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ("mpsocks-run --check host ", {"up", "down"}),  # a run option before the verb
    ("mpsocks-run -v --artifacts-dir runs lab ", names_below(("lab",))),
    ("mpsocks-run up --backend n", {"netns"}),
    ("mpsocks-run up --lab --back", {"--backend"}),  # --lab's name is optional
    ("mpsocks-run lab status --name alpha --j", {"--json"}),
    ("mpsocks-run lab experiment net-neutrality --k", {"--keep"}),
    ("mpsocks-run status --", {"--help", "--json", "--watch"}),  # no run options: status runs no play
    ("mpsocks-run capture --seconds ", set()),  # a number: nothing to offer
    ("mpsocks-run lab exec host -- ", set()),  # the command is the user's
    ("mpsocks-run lab graph -o a", {"a.pcap"}),
    ("mpsocks-run analyze a.pcap ", {"a.pcap", "b.pcapng", "plots"}),
])
def test_bash_completes_in_context(line, expected, shells, lab_root):
    assert shells.complete("bash", line, lab_root) == expected


def test_bash_script_registers_its_function(shells):
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", 'source "$1"; complete -p mpsocks-run',
                           "bash", str(shells.script("bash"))], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "complete -F _mpsocks_run mpsocks-run"


def test_zsh_script_is_a_compdef_function(shells):
    assert shells.script("zsh").read_text().startswith("#compdef mpsocks-run\n")


# The verbs ----------------------------------------------------------------------------------------------


def test_completion_verb_prints_the_script():
    proc = subprocess.run([sys.executable, "-m", "mpsocks", "completion", "bash"], capture_output=True,
                          text=True, env=runner_env())
    assert proc.returncode == 0 and not proc.stderr
    assert proc.stdout == completion.bash_script(completion.command_tree())


def test_an_unknown_shell_is_refused(capsys):
    assert cli.main(["completion", "tcsh"]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'tcsh'" in err


def test_man_verb_prints_the_page(capsys):
    assert cli.main(["man"]) == 0
    assert capsys.readouterr().out == completion.man_page(completion.command_tree())


# The manual page ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    file = tmp_path_factory.mktemp("man") / "mpsocks-run.1"
    file.write_text(completion.man_page(completion.command_tree()))
    return file


@pytest.fixture(scope="module")
def rendered(page) -> str:
    """The page as man shows it; man and groff must not warn."""
    proc = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                          env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat"))
    assert proc.returncode == 0 and proc.stderr == ""
    return proc.stdout


def test_groff_finds_nothing_to_warn_about(page):
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""


def test_man_page_has_the_sections(rendered):
    headings = re.findall(r"^([A-Z][A-Z ]+)$", rendered, re.MULTILINE)
    assert headings == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "VERBS", "EXIT STATUS", "EXAMPLES",
                        "FILES", "SEE ALSO"]
    assert "mpsocks-run - run mpsocks" in rendered


def test_man_page_has_every_verb_and_action(rendered):
    titles = re.findall(r"^   (mpsocks-run .*)$", rendered, re.MULTILINE)
    assert titles == [" ".join(["mpsocks-run", *path]) for path in PARSERS if path]


def test_man_page_has_every_option_of_lab_up(rendered):
    def item(name: str, text: str) -> bool:
        return re.search(rf"^ {{7}}(-\w, )?{re.escape(name)}\b", text, re.MULTILINE) is not None

    section = rendered.split("\n   mpsocks-run lab up\n")[1].split("\n   mpsocks-run lab down\n")[0]
    assert all(item(name, rendered) for name in LAB_UP_OPTIONS)
    assert all(item(name, section) for name in LAB_UP_OPTIONS if name not in RUN_OPTIONS | {"-h", "--help"})
    assert "It also takes the run options" in section


def test_man_page_lists_the_choices(rendered):
    assert "--backend {netns|libvirt}" in rendered
    assert "--format {mermaid|dot|png}" in rendered


def test_man_page_exit_codes_are_those_of_the_help(rendered):
    codes = re.findall(r"^  (\d+) ", cli._EXAMPLES.split("exit status:")[1], re.MULTILINE)
    section = rendered.split("\nEXIT STATUS\n")[1].split("\nEXAMPLES\n")[0]
    assert re.findall(r"^       (\d+) ", section, re.MULTILINE) == sorted(codes, key=int)


def test_man_page_names_the_files(rendered):
    section = rendered.split("\nFILES\n")[1]
    for path in ("/run/mpsocks/up.json", "/run/mpsocks/lab/NAME/", "/var/lib/mpsocks",
                 "$XDG_STATE_HOME/mpsocks/runs"):
        assert f"       {path}\n" in section.splitlines(keepends=True)


def test_roff_escapes_what_roff_would_read():
    assert completion.roff(".hidden\n'quoted\\ -x") == "\\&.hidden\n\\(aqquoted\\e \\-x"
