"""Canonical tool-call types, the shared streaming engine and reconstruct().

Every wire format is a `Format` whose only job is `scan(text, tools, final)`: cut the
model output into text pieces (content) and `Call` pieces.  `extract()` and
`stream_parser()` are derived from that one function, so streamed and finished
results cannot drift apart by construction of two parsers:

* extract(text) = scan(text, final=True)
* the stream parser re-scans its buffer with final=False on every feed() and emits
  only what was not emitted yet (the approach vLLM and llama.cpp take).  A partial
  scan must be *settled*: text it reports as content, and the name/id of calls it
  reports, never change later; argument text only grows.

A call's last argument character is held back until the format reports the call
`done`.  A call that is cut off or turns out malformed therefore never has valid JSON
arguments in the stream, and reconstruct() drops it, exactly as extract() does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

# Re-exported: format modules take their JSON helpers and ToolIndex from here.
from ._json import dumps, loads, normalize_arguments
from ._reason import NO_BLOCK, REASONING_MODES, THINK, Reasoning, cut_turn, split_reasoning
from .tools import ToolIndex

# --- canonical results ---------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Any
    id: str | None = None
    # Why `arguments` is not a JSON object; the value is then kept as the model gave it.
    invalid: str | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "arguments": self.arguments}
        if self.id is not None:
            out["id"] = self.id
        if self.invalid is not None:
            out["invalid"] = self.invalid
        return out

    @classmethod
    def from_value(cls, name: str, value: Any, id: str | None = None) -> "ToolCall":
        value, invalid = normalize_arguments(value)
        return cls(name=name, arguments=value, id=id, invalid=invalid)


@dataclass
class Extraction:
    """The parsed assistant message: content, reasoning ("" when none; OpenAI-style
    `reasoning_content`) and calls, plus the extractor's error string (None when clean)."""

    calls: list[ToolCall] = field(default_factory=list)
    content: str = ""
    error: str | None = None
    reasoning: str = ""

    def to_dict(self) -> dict:
        return {"calls": [c.to_dict() for c in self.calls], "content": self.content,
                "reasoning": self.reasoning, "error": self.error}


@dataclass(frozen=True)
class CallDelta:
    """One streaming event in the OpenAI shape.  index == -1 carries content only."""

    index: int = -1
    name: str | None = None
    id: str | None = None
    arguments_delta: str = ""
    content_delta: str = ""
    reasoning_delta: str = ""


# --- what a format's scan() returns ----------------------------------------------------


@dataclass
class Call:
    """A call region found by a scanner.

    state: "open" (partial scans only: more text may follow), "done", "broken".
    args: for done calls the complete arguments JSON text; for open calls a prefix of it
    ("" when the format cannot stream them).  start: offset of the region, used by the
    stream engine to recognise the same call across re-scans.
    error: for broken calls the reason; for done calls an optional warning.
    """

    start: int
    name: str | None
    id: str | None = None
    args: str = ""
    state: str = "open"
    error: str | None = None


@dataclass(frozen=True)
class Think:
    """A piece of reasoning: its text, and the literal output it came from (which is
    content instead when the stack leaves reasoning in the content)."""

    text: str
    literal: str = ""


@dataclass
class Scan:
    pieces: list = field(default_factory=list)  # str (content) | Think | Call, in text order
    errors: list[str] = field(default_factory=list)

    def text(self, s: str) -> None:
        if s:
            self.pieces.append(s)

    def think(self, s: str, literal: str) -> None:
        if s or literal:
            self.pieces.append(Think(s, literal))

    def reasoning(self) -> str:
        return "".join(p.text for p in self.pieces if isinstance(p, Think)).strip()

    def call(self, c: Call) -> Call:
        self.pieces.append(c)
        return c

    def calls(self) -> list[Call]:
        return [p for p in self.pieces if isinstance(p, Call)]

    def content(self) -> str:
        # Every format strips the content as a whole; inner whitespace is kept verbatim.
        return "".join(p for p in self.pieces if isinstance(p, str)).strip()


def build_extraction(scan: Scan) -> Extraction:
    calls: list[ToolCall] = []
    errors: list[str] = []
    for c in scan.calls():
        label = f"call {c.name!r}" if c.name else "tool call"
        if c.state == "done":
            try:
                tc = ToolCall.from_value(c.name or "", loads(c.args), c.id)
            except ValueError as e:  # a format bug, reported rather than raised
                errors.append(f"{label}: internal parser error: arguments text is not JSON ({e})")
                continue
            calls.append(tc)
            if tc.invalid:
                errors.append(f"{label}: {tc.invalid}")
            if c.error:
                errors.append(f"{label}: {c.error}")
        else:
            errors.append(f"{label}: {c.error or 'incomplete call'}")
    errors.extend(scan.errors)
    return Extraction(calls=calls, content=scan.content(), error="; ".join(errors) or None,
                      reasoning=scan.reasoning())


# --- format interface and the generic stream engine -----------------------------------


class Format:
    """A wire format.  Subclasses implement scan() over the part of the output after any
    reasoning block; the message layer (message_scan) handles reasoning and end of turn.

    reasoning: the block's delimiters (None: the format has none, or its scan reports
    reasoning itself, as Harmony's analysis channel does).  end_of_turn: markers that end
    the assistant's turn when a stack leaves them in the text (an EOS the model wrote)."""

    name: str = ""
    description: str = ""
    reasoning: Reasoning | None = THINK
    end_of_turn: tuple[str, ...] = ()

    def scan(self, text: str, tools: "ToolIndex", final: bool) -> Scan:  # pragma: no cover
        raise NotImplementedError

    def _safe_scan(self, text: str, tools: "ToolIndex", final: bool) -> Scan:
        # Bad model output must never raise; a crash here is a parser bug, surfaced as an
        # error string that the fuzz tests look for.
        try:
            return self.scan(text, tools, final)
        except Exception as e:  # noqa: BLE001
            scan = Scan()
            if final:
                scan.text(text)
                scan.errors.append(f"internal parser error in {self.name}: {type(e).__name__}: {e}")
            return scan

    def message_scan(self, text: str, tools: "ToolIndex", final: bool, view: str = "separate",
                     opened: bool = False) -> Scan:
        """The whole output: end of turn, then the reasoning block, then scan() on the rest.

        view: "separate" (reasoning as Think pieces), "none" (their literal text is content)
        or "tagged" (content, between the open and close tags: deepseek-legacy streams)."""
        end, marker = cut_turn(text, self.end_of_turn, final)
        errors: list[str] = []
        if marker is not None:
            final = True  # the turn is over: what follows the marker is not part of it
            if final and text[end + len(marker):].strip():
                errors.append(f"text after the end of turn {marker!r} ignored")
        text = text[:end]
        split = NO_BLOCK if self.reasoning is None else split_reasoning(self.reasoning, text, final, opened)
        if split is None:
            return Scan()
        pieces: list = []
        if split is not NO_BLOCK:
            stop = split.body if split.body is not None else split.end
            literal = text[:stop]
            if view == "tagged":
                r, inner = self.reasoning, text[split.start:split.end]
                literal = r.open + inner + r.close if split.closed else (r.open + inner if inner else "")
            pieces.append(Think(text[split.start:split.end], literal))
        if split.body is not None:
            body = self._safe_scan(text[split.body:], tools, final)
            for p in body.pieces:
                if isinstance(p, Call):
                    p.start += split.body
            pieces.extend(body.pieces)
            errors = body.errors + errors
        if view != "separate":
            pieces = [p.literal if isinstance(p, Think) else p for p in pieces]
        return Scan(pieces, errors)

    def extract(self, text: str, tools: list[dict] | None = None, *, reasoning: str = "separate",
                opened: bool = False) -> Extraction:
        """The finished message.  reasoning: one of REASONING_MODES; opened: the generation
        prompt opened the reasoning block (see Reasoning.opened_by / opened_by_prompt)."""
        view = stream_view(reasoning, streaming=False)
        return build_extraction(self.message_scan(text, ToolIndex.of(tools), True, view, opened))

    def stream_parser(self, tools: list[dict] | None = None, *, reasoning: str = "separate",
                      opened: bool = False) -> "StreamParser":
        return StreamParser(self, tools, reasoning=reasoning, opened=opened)

    def opened_by_prompt(self, prompt: str | None) -> bool:
        return self.reasoning is not None and self.reasoning.opened_by(prompt)

    def __repr__(self) -> str:
        return f"<tool-call format {self.name}>"


def stream_view(mode: str, streaming: bool) -> str:
    if mode not in REASONING_MODES:
        raise ValueError(f"unknown reasoning mode {mode!r} (known: {', '.join(REASONING_MODES)})")
    if mode == "deepseek-legacy":
        return "tagged" if streaming else "separate"
    return mode


class StreamParser:
    """feed() text deltas, then finish(); each returns the new CallDeltas.

    `violations` lists any partial scan that contradicted what was already emitted (a
    format bug: the tests require it to stay empty)."""

    def __init__(self, fmt: Format, tools: list[dict] | None = None, *, reasoning: str = "separate",
                 opened: bool = False):
        self._fmt = fmt
        self._tools = ToolIndex.of(tools)
        self._view = stream_view(reasoning, streaming=True)
        self._opened = opened
        self._buf = ""
        self._content = ""  # content emitted so far
        self._reasoning = ""  # reasoning emitted so far
        self._calls: dict[int, list] = {}  # region start -> [index, name, id, args emitted]
        self.violations: list[str] = []  # partial scans that contradicted earlier ones
        self.finished = False

    def feed(self, delta: str) -> list[CallDelta]:
        if self.finished:
            raise RuntimeError("feed() after finish()")
        self._buf += delta
        return self._emit(final=False)

    def finish(self) -> list[CallDelta]:
        if self.finished:
            return []
        self.finished = True
        return self._emit(final=True)

    def _emit(self, final: bool) -> list[CallDelta]:
        scan = self._fmt.message_scan(self._buf, self._tools, final, self._view, self._opened)
        out: list[CallDelta] = []
        for kind, now in (("reasoning", scan.reasoning()), ("content", scan.content())):
            sent = getattr(self, f"_{kind}")
            if not now.startswith(sent):
                self.violations.append(f"{kind} changed after emission: {sent!r} -> {now!r}")
            elif len(now) > len(sent):
                out.append(CallDelta(**{f"{kind}_delta": now[len(sent):]}))
                setattr(self, f"_{kind}", now)
        calls = scan.calls()
        seen = {c.start for c in calls}
        for start, slot in self._calls.items():
            if start not in seen:
                self.violations.append(f"call {slot[0]} ({slot[1]!r}) disappeared from a later scan")
        for c in calls:
            slot = self._calls.get(c.start)
            first = slot is None
            if first:
                if c.name is None:
                    continue
                slot = self._calls[c.start] = [len(self._calls), c.name, c.id, ""]
            elif (slot[1], slot[2]) != (c.name, c.id):
                self.violations.append(f"call {slot[0]} changed name/id: {slot[1:3]} -> {[c.name, c.id]}")
                continue
            if c.state == "done":
                avail = c.args
            elif c.state == "open" and c.args.startswith("{"):
                avail = c.args[:-1]  # hold the closing character until the call is done
            else:
                avail = ""
            add = ""
            if avail.startswith(slot[3]):
                add = avail[len(slot[3]):]
            elif not slot[3].startswith(avail):
                self.violations.append(f"call {slot[0]} arguments changed: {slot[3]!r} -> {avail!r}")
            if first or add:
                out.append(CallDelta(slot[0], c.name if first else None, c.id if first else None, add))
                slot[3] += add
        return out


def reconstruct(deltas: Iterable[CallDelta]) -> Extraction:
    """Merge streamed deltas into an Extraction comparable with Format.extract().

    Calls whose concatenated argument text is not valid JSON were cut off or malformed
    mid-stream; they are dropped and reported, as extract() does."""
    content: list[str] = []
    reasoning: list[str] = []
    slots: dict[int, list] = {}
    errors: list[str] = []
    for d in deltas:
        content.append(d.content_delta)
        reasoning.append(d.reasoning_delta)
        if d.index < 0:
            continue
        slot = slots.get(d.index)
        if slot is None:
            if d.name is None:
                errors.append(f"call {d.index}: first delta has no name")
            slot = slots[d.index] = [d.name or "", d.id, []]
        elif d.name is not None or d.id is not None:
            errors.append(f"call {d.index}: name/id emitted more than once")
        slot[2].append(d.arguments_delta)
    calls = []
    for index in sorted(slots):
        name, id_, parts = slots[index]
        try:
            value = loads("".join(parts))
        except ValueError:
            errors.append(f"call {index} ({name!r}): arguments never became valid JSON (cut off or malformed)")
            continue
        tc = ToolCall.from_value(name, value, id_)
        if tc.invalid:
            errors.append(f"call {name!r}: {tc.invalid}")
        calls.append(tc)
    return Extraction(calls=calls, content="".join(content), error="; ".join(errors) or None,
                      reasoning="".join(reasoning))
