"""Partial-input scanning helpers shared by the format modules.

Every helper takes `final`: when False the text may still grow, so a decision that
depends on characters not seen yet is reported as PARTIAL instead of guessed.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Call, Scan, ToolIndex, dumps, loads

MATCH, PARTIAL, NO = "match", "partial", "no"
COMPLETE, INCOMPLETE, INVALID = "complete", "incomplete", "invalid"

WS = re.compile(r"\s*")
SPACES = re.compile(r"[ \t]*")
NAME = re.compile(r"[A-Za-z_][\w.\-]*")  # a function name as written by models
# A JSON string, complete; unrolled-loop form so failure on unterminated input is linear.
JSON_STRING = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*"')
_STRUCT = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*"|["{}\[\]]')
_SCALAR = re.compile(r'[^\s,:\[\]{}"]+')
_CLOSER = {"{": "}", "[": "]"}


def skip_ws(text: str, pos: int) -> int:
    return WS.match(text, pos).end()


def find_marker(text: str, pos: int, markers: tuple[str, ...], final: bool) -> tuple[int, str | None]:
    """Earliest marker at/after pos as (index, marker); else (safe_end, None).

    When more text may follow, safe_end stops before a trailing proper prefix of a
    marker, so that text is not reported as content too early."""
    best, found = -1, None
    for m in markers:
        i = text.find(m, pos)
        if i != -1 and (best == -1 or i < best):
            best, found = i, m
    if found is not None:
        return best, found
    if final:
        return len(text), None
    hold = 0
    for m in markers:
        for k in range(min(len(m) - 1, len(text) - pos), hold, -1):
            if text.endswith(m[:k]):
                hold = k
                break
    return len(text) - hold, None


def scan_markers(text: str, markers: tuple[str, ...], final: bool, block) -> Scan:
    """The loop every marker-led format runs: text up to the next marker is content, then
    block(scan, marker_start, marker) reads the call(s) there and returns where content
    resumes, or None when the rest of the text is spoken for (or still arriving)."""
    scan, pos = Scan(), 0
    while True:
        i, marker = find_marker(text, pos, markers, final)
        scan.text(text[pos:i])
        if marker is None:
            return scan
        pos = block(scan, i, marker)
        if pos is None:
            return scan


def match_seq(text: str, pos: int, parts: tuple, final: bool) -> tuple[str, int, list[str]]:
    """Match literals (str) and greedy regex tokens (re.Pattern) in sequence at pos.

    Returns (MATCH, end, captured regex tokens), or PARTIAL when the text ended before
    the sequence could be decided, or NO."""
    caps: list[str] = []
    n = len(text)
    for part in parts:
        if isinstance(part, str):
            if text.startswith(part, pos):
                pos += len(part)
                continue
            if not final and part.startswith(text[pos:]):
                return PARTIAL, pos, caps
            return NO, pos, caps
        m = part.match(text, pos)
        if m is None:
            return (PARTIAL if pos >= n and not final else NO), pos, caps
        caps.append(m.group())
        pos = m.end()
        if pos >= n and not final:
            return PARTIAL, pos, caps  # the token may still grow
    return MATCH, pos, caps


def cut_header(text: str, pos: int, parts: tuple) -> bool:
    """True if the output ends inside a header that could still have matched `parts`:
    the model was opening a call when it was cut off."""
    return match_seq(text, pos, parts, False)[0] == PARTIAL


def scan_json(text: str, pos: int, final: bool) -> tuple[str, int]:
    """Find where the JSON value starting exactly at pos ends, without validating it.

    Returns (COMPLETE, end), (INCOMPLETE, len(text)) if the text ends inside the value,
    or (INVALID, index of the offending character)."""
    n = len(text)
    if pos >= n:
        return (INCOMPLETE if not final else INVALID), n
    c = text[pos]
    if c in "{[":
        stack: list[str] = []
        for m in _STRUCT.finditer(text, pos):
            tok = m.group()
            if tok == '"':
                return INCOMPLETE, n  # unterminated string
            if tok[0] == '"':
                continue
            if tok in "{[":
                stack.append(_CLOSER[tok])
            elif not stack or stack.pop() != tok:
                return INVALID, m.start()
            if not stack:
                return COMPLETE, m.end()
        return INCOMPLETE, n
    if c == '"':
        m = JSON_STRING.match(text, pos)
        return (COMPLETE, m.end()) if m else (INCOMPLETE, n)
    m = _SCALAR.match(text, pos)
    if m is None:
        return INVALID, pos
    if m.end() >= n and not final:
        return INCOMPLETE, n  # a number or literal may still grow
    return COMPLETE, m.end()


ARGS_KEYS = ("arguments", "parameters")


def json_call_header(text: str, pos: int, final: bool, id_key: str | None) -> tuple[str, str | None, str | None, int]:
    """Can the call object at text[pos] == '{' stream its arguments?

    MATCH once "name" (and id_key, when given) have been read and an arguments key
    follows: returns (MATCH, name, id, position of the arguments value).  NO when the
    members come in another order (the call is then only emitted once complete)."""
    n, i = len(text), pos + 1
    name = ident = None
    seen: set[str] = set()
    while True:
        i = skip_ws(text, i)
        m = JSON_STRING.match(text, i)
        if m is None:
            return (PARTIAL if not final and (i >= n or text[i] == '"') else NO), None, None, 0
        try:
            key = loads(m.group())
        except ValueError:
            return NO, None, None, 0
        i = skip_ws(text, m.end())
        if i >= n:
            return (PARTIAL if not final else NO), None, None, 0
        if text[i] != ":":
            return NO, None, None, 0
        i = skip_ws(text, i + 1)
        if i >= n:
            return (PARTIAL if not final else NO), None, None, 0
        if key in ARGS_KEYS:
            ok = name is not None and (id_key is None or ident is not None)
            return (MATCH, name, ident, i) if ok else (NO, None, None, 0)
        if key in seen or key not in ("name", "type", id_key):
            return NO, None, None, 0
        seen.add(key)
        m = JSON_STRING.match(text, i)
        if m is None:
            return (PARTIAL if not final and text[i] == '"' else NO), None, None, 0
        try:
            value = loads(m.group())
        except ValueError:
            return NO, None, None, 0
        if key == "name":
            if not value:
                return NO, None, None, 0
            name = value
        elif key == id_key:
            ident = value
        i = skip_ws(text, m.end())
        if i >= n:
            return (PARTIAL if not final else NO), None, None, 0
        if text[i] != ",":
            return NO, None, None, 0
        i += 1


def json_call(text: str, pos: int, final: bool, id_key: str | None = None) -> tuple[Call | None, int]:
    """Parse a {"name": ..., "arguments"|"parameters": ...} object starting at pos.

    Returns (call, end).  call is None while nothing can be said yet (partial only);
    an "open" call has a name and an arguments prefix; "done" means the object is
    complete and valid (end = just after it); "broken" carries the error and end is
    where the bad object stops."""
    state, end = scan_json(text, pos, final)
    hdr, name, ident, args_pos = json_call_header(text, pos, final, id_key)
    if hdr != MATCH:
        name = ident = None
    if state == INCOMPLETE:
        if final:
            return Call(pos, name, ident, state="broken", error="truncated JSON (output ended inside the call)"), end
        if hdr != MATCH:
            return None, end
        return Call(pos, name, ident, args=text[args_pos:scan_json(text, args_pos, final)[1]]), end
    if state == INVALID:
        return Call(pos, name, ident, state="broken", error=f"malformed JSON near {_snippet(text, end)}"), end + 1
    try:
        obj = loads(text[pos:end], reject_duplicates=True)
    except ValueError as e:
        return Call(pos, name, ident, state="broken", error=f"malformed JSON ({e})"), end
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return Call(pos, name, ident, state="broken", error="call object has no \"name\" string"), end
    if hdr == MATCH:
        args = text[args_pos:scan_json(text, args_pos, final)[1]]
    else:
        key = next((k for k in obj if k in ARGS_KEYS), None)
        args = dumps(obj[key]) if key else "{}"
        if id_key and id_key in obj:
            ident = obj[id_key] if isinstance(obj[id_key], str) else dumps(obj[id_key])
    return Call(pos, obj["name"], ident, args=args, state="done"), end


def json_args(start: int, name: str, text: str, pos: int, final: bool) -> tuple[Call, int]:
    """A call whose arguments are the bare JSON value at pos (name already known)."""
    state, end = scan_json(text, pos, final)
    if state == INCOMPLETE or pos >= len(text):
        if final:
            return Call(start, name, state="broken", error="truncated JSON arguments"), len(text)
        return Call(start, name, args=text[pos:end]), end
    if state == INVALID:
        return Call(start, name, state="broken", error=f"malformed JSON arguments near {_snippet(text, end)}"), end + 1
    try:
        loads(text[pos:end])
    except ValueError as e:
        return Call(start, name, state="broken", error=f"malformed JSON arguments ({e})"), end
    return Call(start, name, args=text[pos:end], state="done"), end


def _snippet(text: str, pos: int) -> str:
    return repr(text[max(0, pos - 10):pos + 10])


def code_args(code: str, done: bool) -> str:
    """Arguments text for raw code sent to a python tool: {"code": ...}.

    The open form stops inside the string, and escaping is per character, so every
    partial form is a prefix of the final one."""
    return dumps({"code": code}) if done else '{"code": ' + dumps(code)[:-1]


# --- typing string-valued parameters (Qwen3-Coder, GLM-4.5) -----------------------------


def schema_types(schema: dict | None) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    t = schema.get("type")
    types = {t} if isinstance(t, str) else {x for x in t if isinstance(x, str)} if isinstance(t, list) else set()
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            types |= schema_types(sub)
    if not types and isinstance(schema.get("enum"), list):
        types = {"string" if isinstance(v, str) else "json" for v in schema["enum"]}
    return types


_INT = re.compile(r"-?\d+")


def coerce_value(raw: str, schema: dict | None, untyped_json: bool) -> Any:
    """Type a parameter that travels as text, following its JSON schema.

    Tries each non-string type the schema allows; falls back to the raw string (also
    when the text does not fit the declared type, which validation reports later).
    Without a schema: parse as JSON when untyped_json, else keep the string."""
    types = schema_types(schema)
    if not types:
        types = {"json"} if untyped_json else {"string"}
    s = raw.strip()
    if "null" in types and s == "null":
        return None
    if "boolean" in types and s.lower() in ("true", "false"):
        return s.lower() == "true"
    if "integer" in types and _INT.fullmatch(s):
        try:
            return int(s)
        except ValueError:  # beyond Python's int/str digit limit: keep the text
            return raw
    wanted = {"number": (int, float), "object": dict, "array": list, "json": object}
    if types & wanted.keys():
        try:
            value = loads(s)
        except ValueError:
            return raw
        for t in types & wanted.keys():
            if isinstance(value, wanted[t]) and not isinstance(value, bool) or t == "json":
                return value
    return raw
