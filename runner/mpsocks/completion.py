"""``mpsocks-run completion bash|zsh|fish`` and ``mpsocks-run man``: generated from the parser.

Both walk ``cli.build_parser()``: a Command per verb and action, with its options, its positionals and
what each of their values completes to. The scripts carry that as plain shell code; only the names of
the labs that are up are looked up when completing: every NAME with a NAME/lab.json under
``$MPSOCKS_LAB_ROOT`` (default /run/mpsocks/lab).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

from mpsocks import lab, stack
from mpsocks.playbook_run import EXIT_OK

PROG = "mpsocks-run"
#: The environment variable the scripts read the lab root from (the tests point it elsewhere).
LAB_ROOT_VARIABLE = "MPSOCKS_LAB_ROOT"
_EPILOG = """examples:
  source <(mpsocks-run completion bash)     # bash, this shell
  source <(mpsocks-run completion zsh)      # zsh, after compinit
  mpsocks-run completion fish | source      # fish, this shell
  mpsocks-run completion bash > ~/.local/share/bash-completion/completions/mpsocks-run"""


# The parser as data ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Value:
    """What a value completes to: KIND words (one of WORDS), file, dir, lab (a lab that is up) or text
    (nothing to offer)."""

    kind: str
    words: tuple[str, ...] = ()


@dataclasses.dataclass
class Argument:
    """An option or positional; VALUE is None for a flag, which takes no value."""

    action: argparse.Action
    value: Value | None


@dataclasses.dataclass
class Command:
    """mpsocks-run itself (PATH ()) or one of its verbs or actions (PATH ("lab", "up"))."""

    path: tuple[str, ...]
    parser: argparse.ArgumentParser
    summary: str
    options: list[Argument] = dataclasses.field(default_factory=list)
    positionals: list[Argument] = dataclasses.field(default_factory=list)
    subcommands: list[Command] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        """How it is typed: ``mpsocks-run lab up``."""
        return " ".join((PROG, *self.path))

    @property
    def repeats(self) -> bool:
        """Whether its last positional takes any number of words."""
        return bool(self.positionals) and self.positionals[-1].action.nargs in ("*", "+", argparse.REMAINDER)


def command_tree() -> Command:
    """mpsocks-run's parser as a Command, its verbs and their actions below it."""
    from mpsocks.cli import build_parser  # cli imports this module

    parser = build_parser()
    return _command(parser, (), parser.description or "")


def _command(parser: argparse.ArgumentParser, path: tuple[str, ...], summary: str) -> Command:
    """PARSER's Command at PATH, with every command below it; options hidden from --help are left out."""
    command = Command(path, parser, summary)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
            command.subcommands += [_command(sub, (*path, name), summaries.get(name, ""))
                                    for name, sub in action.choices.items()]
        else:
            arguments = command.options if action.option_strings else command.positionals
            arguments.append(Argument(action, _value(action)))
    return command


def _value(action: argparse.Action) -> Value | None:
    """What ACTION's value completes to: its choices, a lab name (type lab_name), a folder (metavar ...DIR),
    a file (type Path or metavar ...FILE), else text; None for a flag."""
    from mpsocks.cli import lab_name

    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if action.nargs == 0:
        return None
    if action.choices is not None:
        return Value("words", tuple(str(choice) for choice in action.choices))
    if action.type is lab_name:
        return Value("lab")
    if metavar.endswith("DIR"):
        return Value("dir")
    if action.type is Path or metavar.endswith("FILE"):
        return Value("file")
    return Value("text")


def walk(command: Command) -> Iterator[Command]:
    """COMMAND and every command below it, parents first."""
    yield command
    for sub in command.subcommands:
        yield from walk(sub)


def help_text(action: argparse.Action) -> str:
    """ACTION's help as --help shows it (argparse expands %(default)s and the like)."""
    params = {key: getattr(value, "__name__", value) for key, value in vars(action).items()}
    try:
        return (action.help or "") % (params | {"prog": PROG})
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the help of {'/'.join(action.option_strings) or action.dest} is not a valid "
                         f"argparse help string ({exc}; write % as %%)") from None


def _short(text: str) -> str:
    """Help TEXT as a one-line description in a completion list: its first clause, without parentheses."""
    text = " ".join(text.split())
    while (shorter := re.sub(r" ?\([^()]*\)", "", text)) != text:
        text = shorter
    return text.split("; ")[0]


def _value_keys(tree: Command) -> dict[Value, list[str]]:
    """Every value worth completing, keyed ``PATH|OPTION`` or ``PATH|#INDEX`` (positionals)."""
    keys: dict[Value, list[str]] = {}
    for command in walk(tree):
        path = " ".join(command.path)
        named = [(name, option.value) for option in command.options for name in option.action.option_strings]
        counted = [(f"#{index}", positional.value) for index, positional in enumerate(command.positionals)]
        for key, value in named + counted:
            if value is not None and value.kind != "text":
                keys.setdefault(value, []).append(f"{path}|{key}")
    return keys


# bash and zsh ------------------------------------------------------------------------------------------

_BASH = r"""# bash completion for mpsocks-run, generated by `mpsocks-run completion bash` from its parser.
# Lab names are looked up when completing: every NAME with a NAME/lab.json under $__VARIABLE__
# (default __ROOT__).

# Sets what command path $1 takes: subcommands, options, the options that take a value, the count of
# its positionals and whether the last one repeats.
_mpsocks_run_command() {
    case $1 in
__COMMANDS__
    esac
}

# Sets kind (words, file, dir or lab; empty: nothing to offer) and candidates for "PATH|OPTION" (the
# value of that option) or "PATH|#N" (positional N).
_mpsocks_run_kind() {
    kind='' candidates=''
    case $1 in
__KINDS__
    esac
}

_mpsocks_run_labs() {
    local plan
    for plan in "${__VARIABLE__:-__ROOT__}"/*/lab.json; do
        [[ -e $plan ]] || continue
        plan=${plan%/lab.json}
        printf '%s\n' "${plan##*/}"
    done
}

_mpsocks_run() {
    local cur=${COMP_WORDS[COMP_CWORD]} command_path='' word value_of='' i positional=0 rest=0
    local subcommands options valued positionals repeats kind candidates
    _mpsocks_run_command ''
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if ((rest)) || [[ $word != -* ]]; then
            if ((!rest)) && [[ " $subcommands " == *" $word "* ]]; then
                command_path=${command_path:+$command_path }$word
                _mpsocks_run_command "$command_path"
                positional=0
            else
                ((++positional))
            fi
        elif [[ $word == -- ]]; then
            rest=1
        elif [[ " $valued " == *" $word "* && ${COMP_WORDS[i + 1]} != -* ]]; then
            ((++i == COMP_CWORD)) && value_of=$word
        fi
    done
    COMPREPLY=()
    if [[ -n $value_of ]]; then
        _mpsocks_run_kind "$command_path|$value_of"
    elif [[ $cur == -* ]] && ((!rest)); then
        kind=words candidates=$options
    elif [[ -n $subcommands ]]; then
        kind=words candidates=$subcommands
    else
        ((repeats && positional >= positionals)) && positional=$((positionals - 1))
        _mpsocks_run_kind "$command_path|#$positional"
        [[ -z $kind ]] && ((!rest)) && kind=words candidates=$options
    fi
    case $kind in
        words) mapfile -t COMPREPLY < <(compgen -W "$candidates" -- "$cur") ;;
        lab) mapfile -t COMPREPLY < <(compgen -W "$(_mpsocks_run_labs)" -- "$cur") ;;
        file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
        dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
    esac
}

complete -F _mpsocks_run mpsocks-run
"""

_ZSH = r"""#compdef mpsocks-run
# zsh completion for mpsocks-run, generated by `mpsocks-run completion zsh` from its parser.
# Lab names are looked up when completing: every NAME with a NAME/lab.json under $__VARIABLE__
# (default __ROOT__).

# Sets what command path $1 takes: subcommands and options as NAME:DESCRIPTION, the options that take
# a value, the count of its positionals and whether the last one repeats.
_mpsocks_run_command() {
    case $1 in
__COMMANDS__
    esac
}

# Sets kind (words, file, dir or lab; empty: nothing to offer) and candidates for "PATH|OPTION" (the
# value of that option) or "PATH|#N" (positional N).
_mpsocks_run_kind() {
    kind='' candidates=()
    case $1 in
__KINDS__
    esac
}

_mpsocks-run() {
    local command_path='' word value_of='' kind
    local -i i positional=0 rest=0 positionals repeats
    local -a subcommands options valued candidates
    _mpsocks_run_command ''
    for ((i = 2; i < CURRENT; i++)); do
        word=$words[i]
        if ((rest)) || [[ $word != -* ]]; then
            if ((!rest && ${subcommands[(I)$word:*]})); then
                command_path=${command_path:+$command_path }$word
                _mpsocks_run_command $command_path
                positional=0
            else
                ((++positional))
            fi
        elif [[ $word == -- ]]; then
            rest=1
        elif ((${valued[(Ie)$word]})) && [[ $words[i+1] != -* ]]; then
            ((++i == CURRENT)) && value_of=$word
        fi
    done
    if [[ -n $value_of ]]; then
        _mpsocks_run_kind "$command_path|$value_of"
    elif [[ $words[CURRENT] == -* ]] && ((!rest)); then
        kind=options
    elif (($#subcommands)); then
        kind=subcommands
    else
        ((repeats && positional >= positionals)) && positional=positionals-1
        _mpsocks_run_kind "$command_path|#$positional"
        [[ -z $kind ]] && ((!rest)) && kind=options
    fi
    case $kind in
        (words) _describe -t values value candidates ;;
        (options) _describe -t options option options ;;
        (subcommands) _describe -t commands command subcommands ;;
        (lab) candidates=(${__VARIABLE__:-__ROOT__}/*/lab.json(N:h:t))
            _describe -t labs 'lab that is up' candidates ;;
        (file) _files ;;
        (dir) _files -/ ;;
    esac
}

if [[ $funcstack[1] == _mpsocks-run ]]; then  # autoloaded from $fpath: complete now
    _mpsocks-run "$@"
else  # sourced
    compdef _mpsocks-run mpsocks-run
fi
"""


def _zsh_entry(name: str, help: str) -> str:
    """NAME:DESCRIPTION as _describe takes it."""
    return name.replace(":", "\\:") + ":" + _short(help)


def _shell_script(template: str, tree: Command, zsh: bool) -> str:
    """TEMPLATE (_BASH or _ZSH) with the data of TREE filled in."""
    def words(items: list[str]) -> str:
        """ITEMS as a zsh array, or a bash string of words."""
        return f"({' '.join(shlex.quote(item) for item in items)})" if zsh else shlex.quote(" ".join(items))

    commands = []
    for command in walk(tree):
        if zsh:  # with descriptions
            subcommands = [_zsh_entry(sub.path[-1], sub.summary) for sub in command.subcommands]
            options = [_zsh_entry(name, help_text(option.action)) for option in command.options
                       for name in option.action.option_strings]
        else:
            subcommands = [sub.path[-1] for sub in command.subcommands]
            options = [name for option in command.options for name in option.action.option_strings]
        valued = [name for option in command.options if option.value is not None
                  for name in option.action.option_strings]
        commands.append(f"        {shlex.quote(' '.join(command.path))}) subcommands={words(subcommands)} "
                        f"options={words(options)}\n            valued={words(valued)} "
                        f"positionals={len(command.positionals)} repeats={int(command.repeats)} ;;")
    kinds = []
    for value, keys in _value_keys(tree).items():
        candidates = f" candidates={words(list(value.words))}" if value.words else ""
        kinds.append(f"        {'|'.join(shlex.quote(key) for key in keys)})\n"
                     f"            kind={value.kind}{candidates} ;;")
    replacements = {"__COMMANDS__": "\n".join(commands), "__KINDS__": "\n".join(kinds),
                    "__VARIABLE__": LAB_ROOT_VARIABLE, "__ROOT__": lab.DEFAULTS["run_root"]}
    return re.sub("|".join(replacements), lambda match: replacements[match.group()], template)


def bash_script(tree: Command) -> str:
    """The bash completion script: ``source`` it, or install it as bash-completion's mpsocks-run."""
    return _shell_script(_BASH, tree, zsh=False)


def zsh_script(tree: Command) -> str:
    """The zsh completion function: install it as _mpsocks-run in $fpath, or ``source`` it after compinit."""
    return _shell_script(_ZSH, tree, zsh=True)


# fish ----------------------------------------------------------------------------------------------------

_FISH_HEAD = f"""\
# fish completion for mpsocks-run, generated by `mpsocks-run completion fish` from its parser.
# Lab names are looked up when completing: every NAME with a NAME/lab.json under ${LAB_ROOT_VARIABLE}
# (default {lab.DEFAULTS["run_root"]}).

function __mpsocks_run_labs --description 'The labs that are up'
    set -l root {lab.DEFAULTS["run_root"]}
    set -q {LAB_ROOT_VARIABLE}; and set root ${LAB_ROOT_VARIABLE}
    for plan in $root/*/lab.json
        set -l parts (string split / -- $plan)
        echo $parts[-2]
    end
end

complete -c mpsocks-run -f
"""


def _fish_quote(text: str) -> str:
    """TEXT as one fish word."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_value(value: Value, option: bool) -> list[str]:
    """complete's arguments for VALUE, the value of an option (OPTION: it requires one, and no file name
    unless it is a file) or a positional."""
    requires = (["-r"] if value.kind == "file" else ["-x"]) if option else []
    arguments = {
        "words": ["-a", _fish_quote(" ".join(value.words))],
        "lab": ["-a", "'(__mpsocks_run_labs)'"],
        "dir": ["-a", "'(__fish_complete_directories)'"],
        "file": ["-F"],
        "text": [],
    }[value.kind]
    return requires + arguments


def _fish_condition(command: Command, paths: list[tuple[str, ...]]) -> str:
    """A test that the command line is at COMMAND: all its names seen, and none of a deeper path's."""
    deeper = {name for path in paths if path != command.path and set(command.path) <= set(path)
              for name in path} - set(command.path)
    tests = [f"__fish_seen_subcommand_from {name}" for name in command.path]
    tests += [f"not __fish_seen_subcommand_from {' '.join(sorted(deeper))}"] if deeper else []
    return "; and ".join(tests)


def fish_script(tree: Command) -> str:
    """The fish completion script: install it as mpsocks-run.fish in a completions folder, or source it."""
    paths = [command.path for command in walk(tree)]
    lines = [_FISH_HEAD]
    for command in walk(tree):
        condition = _fish_condition(command, paths)
        complete = f"complete -c mpsocks-run -n {_fish_quote(condition)}"
        lines.append(f"# {command.name}")
        lines += [f"{complete} -a {_fish_quote(sub.path[-1])} -d {_fish_quote(_short(sub.summary))}"
                  for sub in command.subcommands]
        for option in command.options:
            names = [f"-s {name[1:]}" if len(name) == 2 else f"-l {name[2:]}"
                     for name in option.action.option_strings]
            value = [] if option.value is None else _fish_value(option.value, option=True)
            lines.append(" ".join([complete, *names, *value, "-d",
                                   _fish_quote(_short(help_text(option.action)))]))
        for positional in command.positionals:
            value = positional.value
            if value.kind == "words":  # offered until one of them is given
                unused = f"{condition}; and not __fish_seen_subcommand_from {' '.join(value.words)}"
                lines.append(" ".join([f"complete -c mpsocks-run -n {_fish_quote(unused)}",
                                       *_fish_value(value, False)]))
            elif value.kind != "text":
                lines.append(" ".join([complete, *_fish_value(value, False)]))
    return "\n".join(lines) + "\n"


SCRIPTS = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}


# The manual page ----------------------------------------------------------------------------------------


def roff(text: str) -> str:
    """TEXT escaped for roff: backslashes, hyphens and quotes, and no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("'", "\\(aq").replace("`", "\\(ga")
    return "\n".join(f"\\&{line}" if line.startswith(".") else line for line in text.split("\n"))


def _paragraphs(text: str) -> str:
    """Prose TEXT (paragraphs apart by blank lines) as roff paragraphs."""
    paragraphs = [" ".join(part.split()) for part in re.split(r"\n\s*\n", text.strip())]
    return "\n.PP\n".join(roff(paragraph) for paragraph in paragraphs if paragraph)


def epilog_sections(text: str) -> dict[str, list[str]]:
    """An epilog (``examples:`` then indented lines, ...) as {title: lines}; text before a title is ''."""
    sections: dict[str, list[str]] = {}
    title = ""
    for line in (text or "").splitlines():
        if line.endswith(":") and not line.startswith(" "):
            title = line[:-1]
            sections[title] = []
        elif line.strip():
            sections.setdefault(title, []).append(line.strip())
    return sections


def _literal(lines: list[str]) -> str:
    """LINES as an indented block, printed as they are."""
    return "\n".join([".RS 4", ".nf", *(roff(line) for line in lines), ".fi", ".RE"])


def _metavar(action: argparse.Action) -> str:
    """How ACTION's value is written: \\fIMETAVAR\\fR, or its choices."""
    if action.choices is not None and action.metavar is None:
        return "{" + "|".join(f"\\fB{roff(str(choice))}\\fR" for choice in action.choices) + "}"
    name = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    text = f"\\fI{roff(name)}\\fR"
    return {"?": f"[{text}]", "*": f"[{text} ...]", "+": f"{text} [{text} ...]"}.get(action.nargs, text)


def _argument_item(argument: Argument) -> str:
    """ARGUMENT as a .TP item: its names and value, then its help."""
    action = argument.action
    names = ", ".join(f"\\fB{roff(name)}\\fR" for name in action.option_strings)
    tag = " ".join(part for part in (names, "" if argument.value is None else _metavar(action)) if part)
    return f".TP\n{tag}\n{_paragraphs(help_text(action))}"


def _command_section(command: Command, run_options: set[str]) -> str:
    """The subsection of a verb or action: synopsis, description, options, examples. RUN_OPTIONS: the
    option strings of the run options, which OPTIONS lists once."""
    names = {name for option in command.options for name in option.action.option_strings}
    takes_run_options = run_options <= names
    left_out = (run_options if takes_run_options else set()) | {"-h", "--help"}
    options = [option for option in command.options if not set(option.action.option_strings) & left_out]
    synopsis = [f"\\fB{roff(command.name)}\\fR"]
    synopsis += ["\\fIACTION\\fR"] if command.subcommands else []
    synopsis += ["[\\fIOPTIONS\\fR]"] if options else []
    synopsis += [_metavar(positional.action) for positional in command.positionals]
    parts = [f'.SS "{roff(command.name)}"', " ".join(synopsis), ".PP",
             _paragraphs(command.parser.description or command.summary)]
    if command.subcommands:
        actions = ", ".join(f"\\fB{roff(sub.path[-1])}\\fR" for sub in command.subcommands)
        parts.append(f".PP\nActions: {actions}.")
    parts += [_argument_item(argument) for argument in command.positionals + options]
    if takes_run_options:
        parts.append(".PP\nIt also takes the run options (see \\fBOPTIONS\\fR) after its name.")
    for title, lines in epilog_sections(command.parser.epilog).items():
        parts += [".PP", f"{roff(title.capitalize())}:" if title else "", _literal(lines)]
    return "\n".join(part for part in parts if part)


def man_page(tree: Command) -> str:
    """The manual page mpsocks-run(1), in roff."""
    parser = tree.parser
    top = epilog_sections(parser.epilog)
    run_options = {name for option in tree.options for name in option.action.option_strings
                   if option.action.dest not in ("help", "version")}
    name_line = re.split(r"\.\s", " ".join((parser.description or "").split()), maxsplit=1)[0].rstrip(".")
    exits = sorted((int(match[1]), match[2]) for line in top.get("exit status", [])
                   if (match := re.match(r"(\d+)\s+(.*)", line)))
    files = [
        (str(stack.STATE_FILE), "what up made, read by down, status, check and capture"),
        (f"{lab.DEFAULTS['run_root']}/NAME/", "the run folder of lab NAME; the lab is up while its lab.json "
                                              "(the plan it was built from) is there"),
        (str(stack.STATE_DIR), "what the VM backend builds and keeps: kernel, image, ssh key and kernel "
                               "build tree (down --purge removes it)"),
        ("$XDG_STATE_HOME/mpsocks/runs", "the run folders, one per run (XDG_STATE_HOME defaults to "
                                         "~/.local/state; --artifacts-dir names another base folder)"),
    ]
    parts = [
        '.TH MPSOCKS\\-RUN 1 "" "mpsocks" "User Commands"', ".nh", ".ad l",
        ".SH NAME", f"{roff(PROG)} \\- {roff(name_line[:1].lower() + name_line[1:])}",
        ".SH SYNOPSIS", f"\\fB{roff(PROG)}\\fR [\\fIRUN OPTIONS\\fR] \\fIVERB\\fR [\\fIACTION\\fR] "
                        "[\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]",
        ".br", f"\\fB{roff(PROG)}\\fR \\fB\\-\\-version\\fR | \\fB\\-\\-help\\fR",
        ".SH DESCRIPTION", _paragraphs(parser.description or ""),
        ".PP", "Every verb and action takes \\fB\\-h\\fR, \\fB\\-\\-help\\fR.",
        ".SH OPTIONS", *(_argument_item(option) for option in tree.options),
        ".SH VERBS", *(_command_section(command, run_options) for command in walk(tree) if command.path),
        ".SH EXIT STATUS", *(f".TP\n.B {code}\n{roff(text)}" for code, text in exits),
        ".SH EXAMPLES", _literal(top.get("examples", [])),
        ".SH FILES", *(f".TP\n.I {roff(path)}\n{roff(text)}" for path, text in files),
        ".SH SEE ALSO", "\\fBansible\\-playbook\\fR(1), \\fBip\\-netns\\fR(8)",
    ]
    return "\n".join(parts) + "\n"


# The verbs -------------------------------------------------------------------------------------------------


def print_completion(args: argparse.Namespace) -> int:
    """``completion SHELL``: print SHELL's completion script."""
    print(SCRIPTS[args.shell](command_tree()), end="", flush=True)
    return EXIT_OK


def print_man(args: argparse.Namespace) -> int:
    """``man``: print the manual page."""
    print(man_page(command_tree()), end="", flush=True)
    return EXIT_OK


def add_parser(verbs) -> None:
    """Register the ``completion`` and ``man`` verbs on the subparsers object VERBS."""
    completion = verbs.add_parser(
        "completion", help="print the completion script for bash, zsh or fish",
        description="Print a script that completes mpsocks-run's verbs, actions, options, their choices,\n"
                    "files, and the names of the labs that are up (every NAME with a NAME/lab.json under\n"
                    f"${LAB_ROOT_VARIABLE}, default {lab.DEFAULTS['run_root']}), in SHELL. It is generated "
                    "from the parser,\nso it knows every verb and option of this mpsocks-run; "
                    "runner/install.sh installs it\nfor the three shells, and the manual page.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    completion.add_argument("shell", choices=tuple(SCRIPTS), help="the shell the script is for")
    completion.set_defaults(command=print_completion)
    man = verbs.add_parser(
        "man", help="print the manual page mpsocks-run(1) in roff",
        description="Print the manual page mpsocks-run(1), generated from the parser: every verb, action\n"
                    "and option, the exit status and the files.",
        epilog="example:\n  mpsocks-run man | man -l -", formatter_class=argparse.RawDescriptionHelpFormatter)
    man.set_defaults(command=print_man)
