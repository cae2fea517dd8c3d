"""One normaliser from server replies to `Generation`, streamed or not.

Three reply shapes exist and all end up as the same `Generation`:
  * llama-server's native `/completion`: {"content", "tokens", "stop", "stop_type", "timings"}
  * OpenAI `/v1/completions`:             {"choices": [{"text", "finish_reason"}]}
  * OpenAI `/v1/chat/completions`:        {"choices": [{"message" | "delta", "finish_reason"}]}
Streams are SSE (`data: {...}` lines, `data: [DONE]` at the end of OpenAI streams);
chat tool calls arrive as deltas keyed by `index` with `id`/`name`/`arguments` pieces.

Input is untrusted (it comes from any OpenAI-compatible server and is fuzzed), so every
shape problem raises `StreamError` (a `BackendError`) naming what was wrong, never a
KeyError/TypeError from deep inside.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Iterator

from harness.backends.base import BackendError, Generation

# llama-server's native stop_type -> the OpenAI finish_reason vocabulary used everywhere.
NATIVE_FINISH = {"eos": "stop", "word": "stop", "limit": "length", "none": None}
MAX_TOOL_CALLS = 1024          # a fuzzed index of 10**9 must not allocate anything


class StreamError(BackendError):
    """A reply or stream did not have the expected shape."""


# --- SSE framing ----------------------------------------------------------------
_SSE_LINE_END = re.compile(r"\r\n|\r|\n")


def _lines(source: str | bytes | Iterable[str | bytes]) -> Iterator[str]:
    if isinstance(source, (str, bytes)):
        source = [source]
    for item in source:
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        elif not isinstance(item, str):
            raise StreamError(f"SSE input must be str or bytes lines, got {type(item).__name__}")
        # SSE ends lines only at CRLF, CR or LF. str.splitlines() also splits at U+2028, U+0085,
        # U+001C..U+001E..., which llama-server sends raw inside JSON strings: the data line was
        # cut and the event lost (found by tests/test_fuzz_stream.py)
        parts = _SSE_LINE_END.split(item)
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()                          # as splitlines(): a final line end adds no line
        yield from parts


def iter_sse_events(source: str | bytes | Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """Yield each `data:` payload as a JSON object; stop at `data: [DONE]`.

    Per the SSE spec an event's data lines are joined until a blank line; llama.cpp and
    most servers send one data line per event, and recordings often drop the blank
    lines, so a line that is complete JSON on its own is dispatched at once.
    """
    buf: list[str] = []

    def flush() -> Iterator[dict[str, Any]]:
        if buf:
            text = "\n".join(buf)
            buf.clear()
            yield _load_event(text)

    for line in _lines(source):
        if line == "":
            yield from flush()
            continue
        if line.startswith(":"):                 # comment / keep-alive ping (":\n\n")
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field != "data":                      # event:, id:, retry: carry nothing we need
            continue
        if not buf and value.strip() == "[DONE]":
            return
        if not buf:
            try:
                obj = json.loads(value)
            except ValueError:
                buf.append(value)
                continue
            yield _check_event(obj, value)
        else:
            buf.append(value)
    yield from flush()


def _load_event(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise StreamError(f"malformed SSE data (not JSON: {e}): {text[:200]!r}") from None
    return _check_event(obj, text)


def _check_event(obj: Any, text: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise StreamError(f"SSE data is not a JSON object: {text[:200]!r}")
    return obj


# --- helpers ----------------------------------------------------------------------
def _server_error(obj: dict[str, Any]) -> None:
    err = obj.get("error")
    if err is None:
        return
    if isinstance(err, dict):
        msg = err.get("message", json.dumps(err)[:500])
        code = err.get("code")
        raise BackendError(f"server error{f' {code}' if code is not None else ''}: {msg}")
    raise BackendError(f"server error: {str(err)[:500]}")


def _str_or_none(v: Any, what: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise StreamError(f"{what} must be a string or null, got {type(v).__name__}")


def _int_list(v: Any, what: str) -> list[int]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        raise StreamError(f"{what} must be a list of integers")
    return list(v)


def _dict_or_none(v: Any, what: str) -> dict[str, Any] | None:
    if v is None or isinstance(v, dict):
        return v
    raise StreamError(f"{what} must be an object, got {type(v).__name__}")


def _first_choice(obj: dict[str, Any]) -> dict[str, Any] | None:
    choices = obj.get("choices")
    if not isinstance(choices, list):
        raise StreamError("'choices' must be a list")
    if not choices:
        return None                              # e.g. the trailing usage-only chunk
    if len(choices) > 1 or not isinstance(choices[0], dict):
        raise StreamError("expected exactly one choice object (n=1)")
    idx = choices[0].get("index", 0)
    if idx != 0:
        raise StreamError(f"unexpected choice index {idx!r} (only n=1 is supported)")
    return choices[0]


def _normalise_tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    """OpenAI shape, minus stream-only fields: [{id, type, function: {name, arguments}}]."""
    if calls is None:
        return None
    if not isinstance(calls, list):
        raise StreamError("'tool_calls' must be a list")
    out = []
    for c in calls:
        if not isinstance(c, dict):
            raise StreamError("each tool call must be an object")
        fn = _dict_or_none(c.get("function"), "tool_call.function") or {}
        args = fn.get("arguments", "")
        if isinstance(args, (dict, list)):       # some servers send parsed arguments
            args = json.dumps(args, ensure_ascii=False)
        out.append({"id": _str_or_none(c.get("id"), "tool_call.id"),
                    "type": c["type"] if isinstance(c.get("type"), str) and c["type"] else "function",
                    "function": {"name": _str_or_none(fn.get("name"), "function.name") or "",
                                 "arguments": _str_or_none(args, "function.arguments") or ""}})
    return out or None                           # [] and absent mean the same: no calls


# --- non-streamed replies -------------------------------------------------------------
def generation_from_reply(obj: Any, kind: str | None = None) -> Generation:
    """A non-streamed reply (parsed JSON) of /completion, /v1/completions or /v1/chat/completions."""
    if not isinstance(obj, dict):
        raise StreamError(f"reply is not a JSON object: {str(obj)[:200]!r}")
    _server_error(obj)
    kind = kind or _detect_kind(obj)
    if kind == "completion":
        acc = StreamAccumulator("completion")
        acc.feed(obj)
        g = acc.result()
        g.chunks = None
        return g
    choice = _first_choice(obj)
    if choice is None:
        raise StreamError("reply has no choices")
    timings = _dict_or_none(obj.get("timings"), "timings")
    info = {"usage": obj["usage"]} if isinstance(obj.get("usage"), dict) else {}
    finish = _str_or_none(choice.get("finish_reason"), "finish_reason")
    if kind == "oai_completion":
        text = _str_or_none(choice.get("text"), "choices[0].text") or ""
        return Generation(text=text, finish_reason=finish, timings=timings, info=info)
    msg = _dict_or_none(choice.get("message"), "choices[0].message")
    if msg is None:
        raise StreamError("chat reply choice has no 'message'")
    content = msg.get("content")
    if isinstance(content, list):               # typed parts: join the text parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    text = _str_or_none(content, "message.content") or ""
    reasoning = _str_or_none(msg.get("reasoning_content"), "message.reasoning_content")
    if reasoning:
        info["reasoning_content"] = reasoning
    verbose = obj.get("__verbose")
    tokens = None
    if isinstance(verbose, dict) and verbose.get("tokens"):
        tokens = _int_list(verbose.get("tokens"), "__verbose.tokens")
    return Generation(text=text, finish_reason=finish, tokens=tokens, timings=timings,
                      tool_calls=_normalise_tool_calls(msg.get("tool_calls")), info=info)


def _detect_kind(obj: dict[str, Any]) -> str:
    if "choices" in obj:
        choice = _first_choice(obj)
        if choice is None:
            return "chat"                        # usage-only chunk: only OpenAI chat streams send it
        if "delta" in choice or "message" in choice:
            return "chat"
        if "text" in choice:
            return "oai_completion"
        raise StreamError("choice has none of 'message', 'delta', 'text'; cannot tell the reply kind")
    if "content" in obj or "stop" in obj:
        return "completion"
    raise StreamError(f"unrecognised reply shape (keys: {sorted(obj)[:10]})")


# --- streams -----------------------------------------------------------------------------
class StreamAccumulator:
    """Feed parsed chunks in order; `result()` gives the Generation the full reply would."""

    def __init__(self, kind: str | None = None):
        if kind not in (None, "completion", "oai_completion", "chat"):
            raise ValueError(f"unknown stream kind {kind!r}")
        self.kind = kind
        self.chunks: list[str] = []
        self.reasoning: list[str] = []
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.finished = False
        self.timings: dict[str, Any] | None = None
        self.info: dict[str, Any] = {}
        self._calls: dict[int, dict[str, Any]] = {}
        self._n_events = 0

    def feed(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise StreamError(f"stream chunk is not a JSON object: {str(obj)[:200]!r}")
        _server_error(obj)
        self._n_events += 1
        if self.kind is None:
            self.kind = _detect_kind(obj)
        if self.finished and self.kind == "completion":
            self.info["chunks_after_stop"] = self.info.get("chunks_after_stop", 0) + 1
        timings = _dict_or_none(obj.get("timings"), "timings")
        if timings is not None:
            self.timings = timings               # the last one is the final, complete figure
        if self.kind == "completion":
            self._feed_native(obj)
        else:
            self._feed_openai(obj)

    def _feed_native(self, obj: dict[str, Any]) -> None:
        content = _str_or_none(obj.get("content"), "content")
        if content:
            self.chunks.append(content)
        self.tokens.extend(_int_list(obj.get("tokens"), "tokens"))
        if obj.get("stop") is True:
            self.finished = True
            stop_type = obj.get("stop_type")
            if stop_type is not None and stop_type not in NATIVE_FINISH:
                raise StreamError(f"unknown stop_type {stop_type!r}")
            if stop_type is None:
                # servers before stop_type (2024) sent stopped_eos / stopped_word / stopped_limit
                stop_type = next((t for t in ("eos", "word", "limit") if obj.get(f"stopped_{t}") is True), None)
                if stop_type is None:
                    self.info["finish_reason_missing"] = True   # finished, but not said why
            self.finish_reason = NATIVE_FINISH.get(stop_type) if stop_type else None
            for k in ("stop_type", "stopping_word", "tokens_predicted", "tokens_evaluated", "truncated"):
                if k in obj:
                    self.info[k] = obj[k]

    def _feed_openai(self, obj: dict[str, Any]) -> None:
        if isinstance(obj.get("usage"), dict):
            self.info["usage"] = obj["usage"]
        choice = _first_choice(obj)
        if choice is None:
            return
        finish = _str_or_none(choice.get("finish_reason"), "finish_reason")
        if finish is not None:
            self.finish_reason, self.finished = finish, True
        if self.kind == "oai_completion":
            text = _str_or_none(choice.get("text"), "choices[0].text")
            if text:
                self.chunks.append(text)
            return
        delta = _dict_or_none(choice.get("delta"), "choices[0].delta")
        if delta is None:
            if "message" in choice:             # a non-streamed reply fed as one chunk
                raise StreamError("chat chunk carries 'message' instead of 'delta' (not a stream)")
            return
        content = _str_or_none(delta.get("content"), "delta.content")
        if content:
            self.chunks.append(content)
        reasoning = _str_or_none(delta.get("reasoning_content"), "delta.reasoning_content")
        if reasoning:
            self.reasoning.append(reasoning)
        calls = delta.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise StreamError("delta.tool_calls must be a list")
            for piece in calls:
                self._feed_tool_call(piece)

    def _feed_tool_call(self, piece: Any) -> None:
        if not isinstance(piece, dict):
            raise StreamError("each delta.tool_calls entry must be an object")
        idx = piece.get("index")
        call_id = _str_or_none(piece.get("id"), "tool_call.id")
        if idx is None:
            # Some servers omit `index`: a new id opens a new call, else continue the last.
            last = max(self._calls) if self._calls else None
            if last is None or (call_id and self._calls[last]["id"] not in (None, call_id)):
                idx = 0 if last is None else last + 1
            else:
                idx = last
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < MAX_TOOL_CALLS:
            raise StreamError(f"tool_call index must be an integer in [0, {MAX_TOOL_CALLS}), got {idx!r}")
        call = self._calls.setdefault(idx, {"id": None, "type": "function", "name": [], "arguments": []})
        if call_id and call["id"] is None:
            call["id"] = call_id
        if isinstance(piece.get("type"), str):
            call["type"] = piece["type"]
        fn = _dict_or_none(piece.get("function"), "tool_call.function")
        if fn:
            name = _str_or_none(fn.get("name"), "function.name")
            args = fn.get("arguments")
            if isinstance(args, (dict, list)):
                args = json.dumps(args, ensure_ascii=False)
            args = _str_or_none(args, "function.arguments")
            if name:
                call["name"].append(name)
            if args:
                call["arguments"].append(args)

    def result(self) -> Generation:
        if self._n_events == 0:
            raise StreamError("empty stream: no data events")
        info = dict(self.info)
        if not self.finished:
            info["incomplete_stream"] = True     # no finish marker: cut off or server died
        if self.reasoning:
            info["reasoning_content"] = "".join(self.reasoning)
        calls = None
        if self._calls:
            calls = [{"id": c["id"], "type": c["type"],
                      "function": {"name": "".join(c["name"]), "arguments": "".join(c["arguments"])}}
                     for _, c in sorted(self._calls.items())]
        return Generation(text="".join(self.chunks), finish_reason=self.finish_reason,
                          tokens=list(self.tokens) or None, tool_calls=calls,
                          chunks=list(self.chunks), timings=self.timings, info=info)


def normalise_stream(source: str | bytes | Iterable[Any], *, kind: str | None = None) -> Generation:
    """SSE text/lines, or already-parsed chunk dicts, -> Generation (with `chunks` set)."""
    acc = StreamAccumulator(kind)
    if isinstance(source, (str, bytes)):
        events: Iterable[Any] = iter_sse_events(source)
    else:
        items = list(source)
        if items and all(isinstance(i, dict) for i in items):
            events = items
        else:
            events = iter_sse_events(items)
    for ev in events:
        acc.feed(ev)
    return acc.result()
