"""gpt-oss Harmony: the output is a sequence of channel messages.

    <|channel|>analysis<|message|>Need weather.<|end|>
    <|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city": "Paris"}<|call|>
    <|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>

The generation prompt ends with "<|start|>assistant", so the first message has no
<|start|>.  The recipient (to=functions.NAME) may sit in the role header or after the
channel name.  analysis is reasoning, final (and commentary without a recipient, a
preamble) is content, commentary to=functions.NAME is a call with JSON arguments.
"""

from __future__ import annotations

import re

from .base import Format, Scan, ToolIndex
from ._scan import find_marker, json_args, skip_ws

START, CHANNEL, MESSAGE = "<|start|>", "<|channel|>", "<|message|>"
ENDS = ("<|end|>", "<|call|>", "<|return|>")
HEADER = re.compile(r"[^<]*(?:<\|constrain\|>[^<]*)?")
RECIPIENT = re.compile(r"\bto=(\S+)")
CHANNEL_NAME = re.compile(r"\s*(\w+)")
# what may stand between <|start|> (or the output's start) and <|channel|>
ROLE_HEADER = re.compile(r"\s*(?:assistant)?(?:\s*to=[^\s<]+)?\s*")
_ROLE_PREFIX = re.compile(r"\s*(?:assistant|a(?:s(?:s(?:i(?:s(?:t(?:a(?:n)?)?)?)?)?)?)?)?\s*(?:t|to|to=[^\s<]*)?")


def maybe_role_header(s: str) -> bool:
    """Could `s` still grow into a role header?"""
    return bool(ROLE_HEADER.fullmatch(s) or _ROLE_PREFIX.fullmatch(s))


class Harmony(Format):
    name = "harmony"
    reasoning = None  # the analysis channel is reported by scan() itself
    end_of_turn = ("<|return|>",)
    description = (
        "gpt-oss (Harmony) writes channel messages: <|channel|>analysis<|message|>...<|end|> is reasoning; "
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>"
        "{\"city\": \"Paris\"}<|call|> is a call (the recipient may also follow the channel name); "
        "<|channel|>final<|message|>...<|return|> and commentary without a recipient are content. The first "
        "message may lack <|start|>assistant (the generation prompt wrote it). Text outside any message is "
        "content. A call whose JSON is truncated or malformed yields no call and an error; a message cut "
        "off keeps the text it has (reasoning cut off is reasoning). A recipient other than functions.NAME "
        "(the built-in browser/python tools) is a call to that name."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos, n = Scan(), 0, len(text)
        while pos < n:
            p = skip_ws(text, pos)
            head_at = p
            if text.startswith(START, p):
                p += len(START)
            elif not final and START.startswith(text[p:]) and p < n:
                return scan
            j, marker = find_marker(text, p, (CHANNEL,), final)
            # a role header ("assistant to=functions.f") needs <|start|>, except on the first
            # message, whose <|start|>assistant the generation prompt wrote
            header_allowed = head_at != p or head_at == skip_ws(text, 0)
            if marker is None and not final and header_allowed and maybe_role_header(text[p:j]):
                return scan  # a message header may still be arriving
            if marker is None or not ROLE_HEADER.fullmatch(text[p:j]) or (not header_allowed and text[p:j].strip()):
                # not a message: plain text up to the next message start
                k, m = find_marker(text, pos + 1, (START, CHANNEL), final)
                if m is None and not final:
                    k = min(k, j)  # the text may end in the start of <|channel|>
                scan.text(text[pos:k])
                if m is None:
                    return scan
                pos = k
                continue
            role_header = text[p:j]
            m = HEADER.match(text, j + len(CHANNEL))
            h_end = m.end()
            if not text.startswith(MESSAGE, h_end):
                if not final and (h_end >= n or MESSAGE.startswith(text[h_end:])):
                    return scan
                cut = h_end >= n or MESSAGE.startswith(text[h_end:])
                scan.errors.append("truncated: output ended inside a Harmony header" if cut
                                   else f"malformed Harmony header near {text[j:j + 40]!r}")
                k, mk = find_marker(text, h_end, ENDS, True)
                pos = n if mk is None else k + len(mk)
                continue
            header = text[j + len(CHANNEL):h_end]
            ch = CHANNEL_NAME.match(header)
            channel = ch.group(1) if ch else ""
            to = RECIPIENT.search(role_header) or RECIPIENT.search(header)
            body = h_end + len(MESSAGE)
            pos = self._message(scan, text, head_at, body, channel, to.group(1) if to else None, final)
            if pos is None:
                return scan
        return scan

    def _message(self, scan: Scan, text: str, start: int, body: int, channel: str, to: str | None,
                 final: bool) -> int | None:
        if to is not None:
            name = to[len("functions."):] if to.startswith("functions.") else to
            call, end = json_args(start, name, text, skip_ws(text, body), final)
            scan.call(call)
            if call.state == "open":
                return None
            k, mk = find_marker(text, end, ENDS, final)
            if call.state == "done":
                if mk is None:
                    if not final:
                        call.state = "open"
                        return None
                    call.error = "missing <|call|> at end of output (call kept: its JSON is complete)"
                    return None
                if text[end:k].strip():
                    call.state, call.error = "broken", "unexpected text after the arguments"
            return None if mk is None else k + len(mk)
        k, mk = find_marker(text, body, ENDS, final)
        literal = text[start:k + len(mk) if mk else k]
        if channel == "analysis":
            scan.think(text[body:k], literal)
        else:
            scan.text(text[body:k])
            if channel not in ("final", "commentary"):
                scan.errors.append(f"unknown Harmony channel {channel!r} (its text kept as content)")
        return None if mk is None else k + len(mk)


FORMAT = Harmony()
