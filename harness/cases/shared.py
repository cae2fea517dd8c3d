"""Shared generation pieces, referred to by id like contexts and tool sets.

    cases/grammars/<id>.yaml             one grammar (GBNF) or JSON schema, with its prompt and the
                                         strings it must accept and reject
    cases/stops/<id>.yaml                a stop set: stop checks on raw prompts of one prompt format
    cases/toolcall-generation/<id>.yaml  the setup of real tool-call generations (tool-capable
                                         reference template, wire format, context, token limits)

A case names them where it used to write them inline:

    checks:
      generation:
        turn_end: "<|im_end|>"             # substituted for {turn_end} in shared grammars
        grammars: [yes-no, person, list]   # ids, or inline objects as before (mixed freely)
        stops: chatml                      # a stop-set id, or an inline list as before
      toolcalls:
        generation: hermes-qwen2.5         # an id, or an inline object; {use: ID, ...} overrides keys

They are resolved when the case is loaded: the validated case's `raw` holds the same entries an
inline case would, so item ids, goldens and results do not depend on where an entry was written.
Two values are the model's and only known once it is loaded; a stop set may name them and the
generation family fills them in at run time (harness.generation.concrete_stop):
`stop_ids: eog` (llama.cpp's end-of-generation ids) and the stop text "{eog_texts}" (their texts,
the case's turn_end first).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import CaseError, Problem
from harness.cases.yamlio import Located

EOG_TEXTS = "{eog_texts}"
TURN_END = "{turn_end}"


@dataclass(frozen=True)
class Piece:
    kind: str          # "grammar" | "stop set" | "tool-call generation setup"
    id: str
    data: dict[str, Any]
    file: str


@dataclass
class Pieces:
    grammars: dict[str, Piece]
    stops: dict[str, Piece]
    toolcall_generation: dict[str, Piece]

    def all(self) -> list[Piece]:
        return [*self.grammars.values(), *self.stops.values(), *self.toolcall_generation.values()]


# (folder, CaseSet-like attribute, kind)
FOLDERS = (("grammars", "grammars", "grammar"), ("stops", "stops", "stop set"),
           ("toolcall-generation", "toolcall_generation", "tool-call generation setup"))


def load_pieces(root: Path, load_shared, out) -> Pieces:
    """Every shared piece under `root` (`load_shared` is cases._load_shared: validated, id = file
    name, a broken file is an error of its own in `out`)."""
    from harness.cases.schema import GRAMMAR_FILE_SCHEMA, STOPSET_FILE_SCHEMA, TOOLGEN_FILE_SCHEMA
    schemas = {"grammars": GRAMMAR_FILE_SCHEMA, "stops": STOPSET_FILE_SCHEMA,
               "toolcall-generation": TOOLGEN_FILE_SCHEMA}
    found: dict[str, dict[str, Piece]] = {}
    for folder, attr, kind in FOLDERS:
        found[attr] = {}
        for located, display in load_shared(root, folder, schemas[folder], out):
            d = {k: v for k, v in located.data.items() if k not in ("schema",)}
            found[attr][d["id"]] = Piece(kind, d["id"], d, display)
    return Pieces(**found)


def _missing(located: Located, path: tuple, kind: str, name: str, known) -> Problem:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known) or 'none'})"
    return located.problem(path, f"unknown {kind} '{name}'{hint}")


def _substitute(value: Any, turn_end: str | None) -> Any:
    if isinstance(value, str):
        return value.replace(TURN_END, turn_end) if turn_end is not None else value
    if isinstance(value, list):
        return [_substitute(v, turn_end) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, turn_end) for k, v in value.items()}
    return value


def _mentions(value: Any, text: str) -> bool:
    if isinstance(value, str):
        return text in value
    if isinstance(value, list):
        return any(_mentions(v, text) for v in value)
    if isinstance(value, dict):
        return any(_mentions(v, text) for v in value.values())
    return False


def _entries_of(located: Located, key: str, refs: list, listed: bool, pieces: Pieces, problems: list[Problem],
                used: set[str]) -> list[dict[str, Any]]:
    """A stop set's (or its special_rendering's) entries for each id, inline entries as given;
    an inline entry with the id of a set's entry takes its place."""
    out: list[dict[str, Any]] = []
    for i, ref in enumerate(refs):
        path = ("checks", "generation", key) + ((i,) if listed else ())
        if not isinstance(ref, str):
            at = next((k for k, e in enumerate(out) if e.get("id") == ref.get("id")), None)
            if at is None:
                out.append(copy.deepcopy(ref))
            else:
                out[at] = copy.deepcopy(ref)
            continue
        have = [k for k, p in pieces.stops.items() if p.data.get(key)]
        piece = pieces.stops.get(ref)
        if piece is None or not piece.data.get(key):
            problems.append(_missing(located, path, "stop set" if key == "stops" else
                                     "stop set with special_rendering", ref, have))
            continue
        used.add(piece.file)
        out.extend(copy.deepcopy(piece.data[key]))
    return out


def resolve(located: Located, pieces: Pieces) -> tuple[dict[str, Any], list[Problem], set[str]]:
    """(the case's data with every reference replaced by a copy of its piece, problems, the
    files of the pieces it uses). The located data itself is not changed."""
    d = located.data
    checks = d.get("checks") or {}
    problems: list[Problem] = []
    used: set[str] = set()
    gen = checks.get("generation")
    new_gen = copy.deepcopy(gen) if isinstance(gen, dict) else gen
    if isinstance(gen, dict):
        turn_end = gen.get("turn_end")
        grammars = gen.get("grammars")
        if isinstance(grammars, list):
            out = []
            for i, g in enumerate(grammars):
                if not isinstance(g, str):
                    out.append(copy.deepcopy(g))
                    continue
                piece = pieces.grammars.get(g)
                if piece is None:
                    problems.append(_missing(located, ("checks", "generation", "grammars", i), "grammar", g,
                                             pieces.grammars))
                    continue
                if turn_end is None and _mentions(piece.data, TURN_END):
                    problems.append(located.problem(("checks", "generation", "grammars", i),
                                                    f"grammar '{g}' ({piece.file}) uses {TURN_END}: set "
                                                    "checks.generation.turn_end to the model's end-of-turn text"))
                used.add(piece.file)
                out.append(_substitute(copy.deepcopy(piece.data), turn_end))
            new_gen["grammars"] = out
        for key in ("stops", "special_rendering"):
            value = gen.get(key)
            if isinstance(value, str) or (isinstance(value, list) and any(isinstance(v, str) for v in value)):
                entries = _entries_of(located, key, value if isinstance(value, list) else [value],
                                      isinstance(value, list), pieces, problems, used)
                new_gen[key] = _substitute(entries, turn_end)
    tc = checks.get("toolcalls")
    new_tc = copy.deepcopy(tc) if isinstance(tc, dict) else tc
    if isinstance(tc, dict):
        setup = tc.get("generation")
        ref = setup if isinstance(setup, str) else setup.get("use") if isinstance(setup, dict) else None
        if ref is not None:
            piece = pieces.toolcall_generation.get(ref)
            path = ("checks", "toolcalls", "generation") + (() if isinstance(setup, str) else ("use",))
            if piece is None:
                problems.append(_missing(located, path, "tool-call generation setup", ref, pieces.toolcall_generation))
            else:
                used.add(piece.file)
                merged = {k: copy.deepcopy(v) for k, v in piece.data.items() if k not in ("id", "description")}
                if isinstance(setup, dict):
                    merged.update({k: copy.deepcopy(v) for k, v in setup.items() if k != "use"})
                new_tc["generation"] = merged
                if not {"template", "format", "context"} <= set(merged):
                    problems.append(located.problem(path, "the tool-call generation setup needs template, format "
                                                          "and context (from the shared setup or given here)"))
    if not problems and (new_gen is not gen or new_tc is not tc):
        d = dict(d)
        d["checks"] = dict(checks)
        if gen is not None:
            d["checks"]["generation"] = new_gen
        if tc is not None:
            d["checks"]["toolcalls"] = new_tc
    return d, problems, used


def raise_if(problems: list[Problem]) -> None:
    if problems:
        raise CaseError(problems)


def fill_stop(entry: dict[str, Any], eog_ids: list[int], text_of, turn_end: str | None) -> dict[str, Any]:
    """A stop entry with the model's values filled in: `stop_ids: eog` -> its end-of-generation ids,
    the stop text "{eog_texts}" -> their texts, turn_end first (others in id order)."""
    if entry.get("stop_ids") != "eog" and EOG_TEXTS not in (entry.get("stop") or ()):
        return entry
    out = dict(entry)
    if out.get("stop_ids") == "eog":
        out["stop_ids"] = sorted(eog_ids)
    if EOG_TEXTS in (out.get("stop") or ()):
        texts = [t for t in (text_of(i) for i in sorted(eog_ids)) if t]
        if turn_end in texts:
            texts = [turn_end] + [t for t in texts if t != turn_end]
        stops: list[str] = []
        for s in out["stop"]:
            stops.extend(texts if s == EOG_TEXTS else [s])
        out["stop"] = list(dict.fromkeys(stops))
    return out
