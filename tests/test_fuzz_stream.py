"""Fuzzing the stream normaliser (harness/backends/stream.py) for wrong results, not only crashes.

tests/test_server_stream.py fuzzes it with arbitrary JSON (no stray exception). This adds the
property that matters for conformance: a well-formed stream, however it is split and framed,
normalises to exactly the reply it carries (text, tool calls with their ids, names and
argument strings, finish reason, tokens), the same as the non-streamed reply; and a damaged
stream (cut, lines dropped or duplicated, bytes flipped) gives a StreamError/BackendError or a
Generation that says so (`incomplete_stream`), never a stray exception or a hang.

Payloads are serialised as llama-server sends them: UTF-8 JSON without escaping (ensure_ascii
false), so every code point reaches the SSE framing raw.

Found by this file and fixed in harness/backends/stream.py (reproducers kept below): content
holding U+2028, U+0085, U+001C..U+001E (characters str.splitlines() treats as line ends, SSE
does not) split a data line in two; the event was lost or the stream failed as "not JSON".
"""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from fuzzing import HANG_S, fuzz_settings, time_budget

from harness.backends.base import BackendError, Generation
from harness.backends.stream import generation_from_reply, normalise_stream

SETTINGS = fuzz_settings(400)
TIME_BUDGET_S = HANG_S



def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)          # as llama-server (nlohmann::json) sends it


# text that reaches the framing: line-end look-alikes, surrogate-free unicode, JSON-ish noise
LINE_LIKE = ["\u2028", "\u2029", "\x85", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c", "\r", "\n", "\r\n", "data: ",
             "[DONE]", ":", "{", "}", '"', "\\"]
text = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
                 st.lists(st.sampled_from(LINE_LIKE), min_size=1, max_size=4).map("".join))


def _split(s: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(s) + 1) for c in cuts} | {0, len(s)})
    return [s[a:b] for a, b in zip(points, points[1:])] or [s]


@st.composite
def chat_stream(draw):
    """A well-formed OpenAI chat stream and the reply it must normalise to."""
    content_parts = draw(st.lists(text, max_size=5))
    n_calls = draw(st.integers(0, 3))
    calls = []
    for i in range(n_calls):
        name = draw(st.sampled_from(["get_weather", "f", "名前", "a.b"]))
        args = dumps(draw(st.dictionaries(st.sampled_from(["city", "days", "x"]),
                                          st.one_of(text, st.integers(), st.booleans()), max_size=3)))
        calls.append({"id": f"call_{i}_{draw(st.integers(0, 999))}", "type": "function",
                      "function": {"name": name, "arguments": args}})
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]}]
    for part in content_parts:
        chunks.append({"choices": [{"index": 0, "delta": {"content": part}, "finish_reason": None}]})
    for i, call in enumerate(calls):
        pieces = _split(call["function"]["arguments"], draw(st.lists(st.integers(0, 200), max_size=4)))
        first = {"index": i, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": ""}}
        chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]})
        for piece in pieces:
            chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": i, "function": {"arguments": piece}}]}, "finish_reason": None}]})
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    reply = {"choices": [{"index": 0, "finish_reason": finish, "message": {
        "role": "assistant", "content": "".join(content_parts), "tool_calls": calls or None}}]}
    return chunks, reply


@st.composite
def native_stream(draw):
    """A well-formed llama-server /completion stream and its non-streamed reply."""
    parts = draw(st.lists(st.tuples(text, st.lists(st.integers(0, 50_000), max_size=3)), max_size=6))
    stop_type = draw(st.sampled_from(["eos", "word", "limit"]))
    chunks = [{"index": 0, "content": c, "tokens": t, "stop": False} for c, t in parts]
    chunks.append({"content": "", "tokens": [], "stop": True, "stop_type": stop_type})
    reply = {"content": "".join(c for c, _ in parts), "tokens": [i for _, t in parts for i in t], "stop": True,
             "stop_type": stop_type}
    return chunks, reply


def frame(chunks: list[dict], style: int, done: bool) -> str | list:
    lines = [f"data: {dumps(c)}" for c in chunks] + (["data: [DONE]"] if done else [])
    if style == 0:
        return "".join(f"{ln}\n\n" for ln in lines)
    if style == 1:
        return "".join(f"{ln}\r\n\r\n" for ln in lines)
    if style == 2:
        return [ln.encode("utf-8") for ln in lines]        # requests' iter_lines()
    if style == 3:
        return "\n".join(lines)                             # recordings without blank lines
    return ":\n\n" + "".join(f"event: message\n{ln}\n\n: ping\n" for ln in lines)


def canon_calls(calls):
    return [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls or []]


REPRO_CONTENT = ["a\u2028b", "\x85", "x\x1cy", "\x1d\x1e", "\u2029", "line\rbreak"]


@SETTINGS
@example(pair=([{"choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]} for c in REPRO_CONTENT]
               + [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}],
               {"choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"content": "".join(REPRO_CONTENT)}}]}), style=0, done=True)
@given(pair=chat_stream(), style=st.integers(0, 4), done=st.booleans())
def test_well_formed_chat_stream_normalises_to_its_reply(pair, style, done):
    chunks, reply = pair
    with time_budget(TIME_BUDGET_S):
        got = normalise_stream(frame(chunks, style, done), kind="chat")
        whole = generation_from_reply(reply, "chat")
    assert got.text == whole.text
    assert canon_calls(got.tool_calls) == canon_calls(whole.tool_calls)
    assert got.finish_reason == whole.finish_reason
    assert "incomplete_stream" not in got.info


@SETTINGS
@given(pair=native_stream(), style=st.integers(0, 4))
def test_well_formed_native_stream_normalises_to_its_reply(pair, style):
    chunks, reply = pair
    with time_budget(TIME_BUDGET_S):
        got = normalise_stream(frame(chunks, style, False), kind="completion")
        whole = generation_from_reply(reply, "completion")
    assert (got.text, got.tokens or [], got.finish_reason) == (whole.text, whole.tokens or [], whole.finish_reason)


@st.composite
def damaged(draw):
    chunks, _ = draw(st.one_of(chat_stream(), native_stream()))
    lines = [f"data: {dumps(c)}" for c in chunks] + ["data: [DONE]"]
    ops = draw(st.lists(st.tuples(st.sampled_from(["cut", "drop", "dup", "flip", "swap"]), st.integers(0, 10_000),
                                  st.integers(0, 255)), min_size=1, max_size=3))
    for op, pos, byte in ops:
        if not lines:
            break
        i = pos % len(lines)
        if op == "cut":
            lines = lines[:i]
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = (i + 1) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "flip":
            raw = bytearray(lines[i].encode("utf-8"))
            if raw:
                raw[pos % len(raw)] = byte
            lines[i] = raw.decode("utf-8", errors="replace")
    return lines


@SETTINGS
@given(lines=damaged(), style=st.integers(0, 2))
@example(lines=['data: {"content": "", "tokens": [], "stop": true, "s op_type": "eos"}', 'data: [DONE]'], style=0)
def test_damaged_streams_fail_cleanly_or_say_they_are_incomplete(lines, style):
    source = ("".join(f"{ln}\n\n" for ln in lines) if style == 0 else [ln.encode("utf-8") for ln in lines]
              if style == 1 else lines)
    with time_budget(TIME_BUDGET_S):
        try:
            g = normalise_stream(source)
        except BackendError:
            return
    assert isinstance(g, Generation) and isinstance(g.text, str)
    if g.finish_reason is None:      # never silently: cut off, or finished without saying why
        assert g.info.get("incomplete_stream") is True or g.info.get("finish_reason_missing") is True, g
    for call in g.tool_calls or []:
        assert isinstance(call["function"]["name"], str) and isinstance(call["function"]["arguments"], str)
