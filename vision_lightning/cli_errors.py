"""Config and command-line mistakes in one line: the offending key, what is wrong, and a hint.

jsonargparse reports a mistyped key with the whole usage text (about 80 lines for `fit`) and a
wrong value with every member of the type union it tried. `VisionArgumentParser` prints one line
instead, e.g. `error: trainer has no option max_epoch (did you mean max_epochs?); see fit --help`.
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from vision_lightning.utils.hparams import import_path, trusted_class_path

_NOT_ACCEPTED = re.compile(
    r"(?:Subcommand '(?P<sub>[^']+)' does not accept option|No action for key) '(?P<key>[^']+)'"
)
_CLASS = re.compile(r"Problem with given class_path '(?P<cls>[^']+)'")
_OPTION = re.compile(r"Option '(?P<key>[^']+)' is not accepted")
_PARSER_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)":\s*(?P<rest>.*)$')
_GIVEN = re.compile(r"^Given value: (?P<value>.*)$")
_NOISE = ("Expected a <class 'NoneType'>", "Does not validate against any of the Union subtypes")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """` (did you mean X?)` for the closest of `choices`, or nothing."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _parser_keys(parser: Any) -> list[str]:
    return [action.dest for action in getattr(parser, "_actions", []) if getattr(action, "dest", None)]


def _class_arguments(class_path: str) -> list[str]:
    cls = import_path(class_path) if trusted_class_path(class_path) else None
    if cls is None:
        return []
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return []
    return [name for name in parameters if name != "self" and not name.startswith("_")]


def _unknown_key(match: re.Match, parser: Any) -> str:
    key = match.group("key")
    section, _, option = key.rpartition(".")
    keys = _parser_keys(parser)
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == section]
    where = section or "the config"
    return f"{where} has no option {option}{did_you_mean(option, siblings)}"


def _unknown_class_argument(lines: list[str]) -> str | None:
    class_path = None
    for line in lines:
        found = _CLASS.search(line)
        if found:
            class_path = found.group("cls")
        option = _OPTION.search(line)
        if option and class_path:
            name = option.group("key")
            hint = did_you_mean(name, _class_arguments(class_path))
            return f"{class_path.rsplit('.', 1)[-1]} has no argument {name}{hint}"
    return None


_NOT_A_REASON = (
    "Does not validate",
    "Subtypes:",
    "Errors:",
    "Given value",
    "Problem with given class_path",
    "Parser key",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
    "Expected a dot import path",
    "Type typing.",
)
_GIVEN_CLASS = re.compile(r"class_path='(?P<cls>[^']+)'")
_NESTED_VALUE = re.compile(r"^NestedArg\(key='[^']*', val='(?P<val>.*)'\)$")
_REQUIRED = "the following arguments are required"


def _bad_value(lines: list[str]) -> str:
    """`model.lr_scheduler (StepLR): the following arguments are required: step_size` or
    `model.optimizer.lr: expected float, got abc` from a nested report: the chain of keys, the
    innermost reason, the value given there."""
    text = re.sub(r'(Parser key "[^"]+":)', r"\n\1\n", "\n".join(lines))
    stripped = [line.strip().lstrip("- ").strip() for line in text.splitlines() if line.strip()]
    keys, last_key = [], 0
    for index, line in enumerate(stripped):
        key = _PARSER_KEY.match(line)
        if key:
            keys.append(key.group("key"))
            last_key = index
    inner = stripped[last_key + 1 :]
    reason = next((line[line.index(_REQUIRED) :] for line in inner if _REQUIRED in line), None)
    reason = reason or next((line for line in inner if not line.startswith(_NOT_A_REASON)), "")
    reason = re.sub(r"Expected a <class '([^']+)'>", r"expected \1", reason) or "not a valid value"
    where = ".".join(keys)
    given = next((m.group("value") for line in inner if (m := _GIVEN.match(line))), None)
    if given is not None and "Got value" not in reason:
        value = given.split(". Got value:")[0]
        nested = _NESTED_VALUE.match(value)
        value = nested.group("val") if nested else value
        given_class = _GIVEN_CLASS.search(value) if value.startswith("Namespace(") else None
        if given_class:
            where += f" ({given_class.group('cls').rsplit('.', 1)[-1]})"
        elif len(value) <= 60:
            reason += f", got {value}"
    return f"{where}: {reason}"


def concise(message: str, parser: Any = None, config_files: Iterable[str] = ()) -> str:
    """jsonargparse's error `message` as one line naming the key and what is wrong."""
    lines = [line for line in message.splitlines() if line.strip()]
    if not lines:
        return "the command line or config could not be parsed"
    unknown = _NOT_ACCEPTED.search(lines[0])
    if unknown:
        return _unknown_key(unknown, parser)
    argument = _unknown_class_argument(lines)
    if argument:
        return argument
    if lines[0].startswith("Problems parsing config"):
        where = ", ".join(config_files) or "the config"
        detail = " ".join(line.strip() for line in lines).replace('in "<unicode string>", ', "")
        return f"{where} is not valid YAML: {detail.removeprefix('Problems parsing config: ')}"
    key = _PARSER_KEY.match(lines[0])
    if key:
        if key.group("key") == "config":
            return key.group("rest").replace("File does not exist", "config file does not exist")
        return _bad_value(lines)
    return " ".join(line.strip() for line in lines)


def config_files(argv: list[str]) -> list[str]:
    """The files given with `--config` / `-c` in `argv`."""
    files = []
    for index, arg in enumerate(argv):
        if arg in ("--config", "-c") and index + 1 < len(argv):
            files.append(argv[index + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


class VisionArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose errors are one line (`concise`) and exit status 2, without the
    usage text; `--help` still shows every option. `config_files` (set by the CLI) name the files a
    YAML syntax error is in."""

    config_files: list[str] = []

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        line = concise(message, parser, self.config_files)
        if "did you mean" not in line and "has no" in line:
            command = " ".join([*parser.prog.replace(" [options]", "").split()[1:], "--help"])
            line += f"; `python -m vision_lightning {command}` lists them"
        sys.stderr.write(f"error: {line}\n")
        self.exit(2)
