"""Reasoning blocks and end-of-turn markers: where they are in a (possibly partial) output.

Pure string logic, shared by every format through Format.message_scan(): the reasoning
block is cut out *before* the format looks for calls, so call markup written inside
reasoning is never a call.  A block is recognised only at the start of the output
(after whitespace), or from the very first character when the generation prompt opened
it (`opened`: read from the rendered prompt's tail with Reasoning.opened_by).
"""

from __future__ import annotations

from dataclasses import dataclass

# The three ways stacks hand reasoning back (llama.cpp's --reasoning-format names):
# separate   -- reasoning in its own field (llama.cpp "deepseek"/"auto", vLLM, SGLang);
# none       -- left in the content, tags and all;
# deepseek-legacy -- separate in a finished reply, but a stream carries it inline in the
#               content between the open and close tags (llama.cpp's legacy behaviour).
REASONING_MODES = ("separate", "none", "deepseek-legacy")


@dataclass(frozen=True)
class Reasoning:
    open: str
    close: str

    def opened_by(self, prompt: str | None) -> bool:
        """True when the rendered generation prompt ends inside an open block, so the
        model's output starts in the reasoning (DeepSeek R1, Qwen3 thinking, GLM-4.5+)."""
        return bool(prompt) and prompt.rstrip().endswith(self.open.rstrip())

    def to_dict(self) -> dict:
        return {"open": self.open, "close": self.close}


THINK = Reasoning("<think>", "</think>")


def held(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest proper prefix of a marker that `text` ends with."""
    best = 0
    for m in markers:
        for k in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:k]):
                best = k
                break
    return best


def cut_turn(text: str, markers: tuple[str, ...], final: bool) -> tuple[int, str | None]:
    """(end of this turn's text, the end-of-turn marker found there or None).

    Without a marker a partial text stops before a trailing prefix of one."""
    best, found = len(text), None
    for m in markers:
        i = text.find(m)
        if i != -1 and (found is None or i < best):
            best, found = i, m
    if found is None and not final:
        best = len(text) - held(text, markers)
    return best, found


@dataclass(frozen=True)
class Split:
    """Reasoning text is text[start:end]; the rest of the output starts at body (None
    while a partial output is still inside the block).  No block: 0, 0, 0."""

    start: int
    end: int
    body: int | None
    closed: bool
    tag_written: bool  # the output itself wrote the open tag


NO_BLOCK = Split(0, 0, 0, False, False)


def split_reasoning(r: Reasoning, text: str, final: bool, opened: bool) -> Split | None:
    """Where the reasoning block is; None while a partial output cannot tell yet."""
    p = len(text) - len(text.lstrip())
    rest = text[p:]
    written = rest.startswith(r.open)
    if written:
        p += len(r.open)
    elif not final and r.open.startswith(rest) and (rest or not opened):
        return None  # the open tag may be arriving
    elif not opened:
        return NO_BLOCK
    else:
        p = 0  # opened by the prompt: the reasoning starts at the first character
    j = text.find(r.close, p)
    if j != -1:
        return Split(p, j, j + len(r.close), True, written)
    if final:  # cut off inside the reasoning: it is still reasoning
        return Split(p, len(text), len(text), False, written)
    return Split(p, len(text) - held(text[p:], (r.close,)), None, False, written)
