"""YAML loading that remembers where every key and value came from.

PyYAML's composer keeps start marks on nodes; we construct plain Python data from
the node tree ourselves and record (line, column) for each path, so validation errors
can name `file:line:col`. Only the safe subset of YAML is accepted (no tags that build
Python objects).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import CaseError, Problem

Path_ = tuple[str | int, ...]


class Located:
    """Parsed data plus a map from key path to 1-based (line, column)."""

    def __init__(self, data: Any, marks: dict[Path_, tuple[int, int]], file: str):
        self.data = data
        self.marks = marks
        self.file = file

    def where(self, path: Path_) -> tuple[int, int]:
        """The position of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), (1, 1))

    def problem(self, path: Path_, message: str) -> Problem:
        line, col = self.where(path)
        return Problem(self.file, line, col, tuple(path), message)


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool", "null")}


def _construct(node: yaml.Node, path: Path_, marks: dict, file: str) -> Any:
    marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if node.tag not in _PLAIN_TAGS:
        raise CaseError([Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, path,
                                 f"unsupported YAML tag {node.tag!r}: case files are plain data")])
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise CaseError([Problem(file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                         path, "YAML merge keys (<<) are not supported; use `use:` references")])
            key = yaml.SafeLoader.construct_scalar(yaml.SafeLoader(""), key_node) if isinstance(
                key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise CaseError([Problem(file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                         path, "mapping keys must be plain strings")])
            if key in out:
                raise CaseError([Problem(file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                         (*path, key), "duplicate key")])
            # the key's own position is the most useful place to point at
            marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _construct(value_node, (*path, key), marks, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), marks, file) for i, item in enumerate(node.value)]
    # scalars: let the safe constructor resolve ints, floats, bools, nulls, strings
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise CaseError([Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, path,
                                 f"unsupported YAML value: {exc.problem}")]) from None
    except (ValueError, IndexError, TypeError, OverflowError):  # found by fuzzing: `!!int` with no digits
        tag = node.tag.rsplit(":", 1)[-1]
        raise CaseError([Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, path,
                                 f"invalid YAML value for !!{tag}: {str(node.value)[:40]!r}")]) from None
    finally:
        loader.dispose()


class _NoAliasLoader(yaml.SafeLoader):
    """Refuses anchors/aliases: case files are plain data. (Found by tests/test_fuzz_cases.py:
    `a: &a [*a]` made _construct recurse for ever (RecursionError), and nested aliases expand
    exponentially, "billion laughs": 6 levels of 9 took 14 s.)"""

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise CaseError([Problem(self._harness_file, mark.line + 1, mark.column + 1, (),
                                     "YAML aliases (*name) are not supported: case files are plain data")])
        return super().compose_node(parent, index)


def load_located(text: str, file: str) -> Located:
    """Parse one YAML document. Syntax errors become a CaseError with the position."""
    try:
        loader = _NoAliasLoader(text)     # the reader already checks the characters
        loader._harness_file = file       # for the alias error's location
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise CaseError([Problem(file, line, col, (), f"invalid YAML: {exc.problem or exc}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (e.g. NUL): name its place
        before = text[:exc.position]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise CaseError([Problem(file, line, col, (), f"invalid YAML: unacceptable character #x{exc.character:04x}: "
                                                      f"{exc.reason}")]) from None
    except yaml.YAMLError as exc:  # e.g. several documents in one file
        raise CaseError([Problem(file, 0, 0, (), f"invalid YAML: {exc}")]) from None
    except RecursionError:  # found by fuzzing: "[" * 2000 + "]" * 2000
        raise CaseError([Problem(file, 0, 0, (), "invalid YAML: nested too deeply")]) from None
    if node is None:
        raise CaseError([Problem(file, 1, 1, (), "the file is empty")])
    marks: dict[Path_, tuple[int, int]] = {}
    try:
        data = _construct(node, (), marks, file)
    except RecursionError:
        raise CaseError([Problem(file, 0, 0, (), "invalid YAML: nested too deeply")]) from None
    return Located(data, marks, file)


def load_file(path: Path, display: str | None = None) -> Located:
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CaseError([Problem(display, 0, 0, (), f"not UTF-8 text: {exc}")]) from None
    except OSError as exc:
        raise CaseError([Problem(display, 0, 0, (), f"cannot read: {exc.strerror}")]) from None
    return load_located(text, display)


# --- writing: the scalars harness new-case emits ----------------------------------------------
def _plain_ok(s: str) -> bool:
    if not s or not re.match(r"^[A-Za-z0-9_./=+@-][A-Za-z0-9_./=+@ -]*$", s) or s.endswith(" "):
        return False
    try:
        return yaml.safe_load(s) == s
    except yaml.YAMLError:
        return False


def yaml_scalar(s: str) -> str:
    """A YAML scalar for `s`: plain where that reads back as the same string, else JSON-quoted."""
    return s if _plain_ok(s) else json.dumps(s, ensure_ascii=False)
