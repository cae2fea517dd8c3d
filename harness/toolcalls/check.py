"""Stream-vs-finished equivalence check, with the smallest failing split in the report.

Shared by the tests and the main suite (which passes a real tokenizer's token pieces)."""

from __future__ import annotations

import json
from typing import Callable, Iterable

from ..corpus import StableRandom
from .base import CallDelta, Extraction, Format, reconstruct

MAX_SHRINK_ATTEMPTS = 400


def _canon(ex: Extraction) -> dict:
    return {"calls": [c.to_dict() for c in ex.calls], "content": ex.content, "reasoning": ex.reasoning}


def run_stream(fmt: Format, pieces: list[str], tools: list[dict] | None = None, **message) -> tuple[list[CallDelta], list[str]]:
    """Feed pieces, finish, and return (deltas, protocol problems).  message: the
    reasoning mode and `opened` flag, as for Format.extract()."""
    parser = fmt.stream_parser(tools, **message)
    deltas: list[CallDelta] = []
    for piece in pieces:
        deltas.extend(parser.feed(piece))
    deltas.extend(parser.finish())
    problems = list(getattr(parser, "violations", []))
    introduced: set[int] = set()
    for d in deltas:
        if d.index < 0:
            continue
        if d.index not in introduced:
            if d.index != len(introduced):
                problems.append(f"call index {d.index} introduced out of order")
            if d.name is None:
                problems.append(f"first delta of call {d.index} has no name")
            introduced.add(d.index)
        elif d.name is not None or d.id is not None:
            problems.append(f"call {d.index}: name/id emitted again ({d.name!r}, {d.id!r})")
    return deltas, problems


def _problem(fmt: Format, pieces: list[str], want: dict, tools, message: dict) -> str | None:
    deltas, problems = run_stream(fmt, pieces, tools, **message)
    got = _canon(reconstruct(deltas))
    if got != want:
        problems.append(
            "reconstruct(deltas) != extract(text):\n"
            f"    expected: {json.dumps(want, ensure_ascii=False)}\n"
            f"    streamed: {json.dumps(got, ensure_ascii=False)}"
        )
    return "\n  ".join(problems) or None


def _shrink(pieces: list[str], fails: Callable[[list[str]], bool]) -> list[str]:
    """Merge adjacent pieces while the failure persists (coarse groups first)."""
    attempts, granularity = 0, 2
    while len(pieces) > 2 and attempts < MAX_SHRINK_ATTEMPTS:
        size = max(1, len(pieces) // granularity)
        for start in range(0, len(pieces) - 1, size):
            merged = pieces[:start] + ["".join(pieces[start:start + size + 1])] + pieces[start + size + 1:]
            attempts += 1
            if fails(merged):
                pieces = merged
                granularity = max(2, granularity // 2)
                break
            if attempts >= MAX_SHRINK_ATTEMPTS:
                break
        else:
            if size == 1:
                break
            granularity = min(len(pieces), granularity * 2)
    return pieces


def _random_pieces(text: str, seed: int) -> list[str]:
    # harness.corpus.StableRandom: the same groupings on every Python version (random.Random's
    # choice/randint are not guaranteed to be)
    rng = StableRandom(seed)
    widest = rng.choice((2, 3, 5, 8, 16))
    pieces, pos = [], 0
    while pos < len(text):
        step = rng.between(1, widest)
        pieces.append(text[pos:pos + step])
        pos += step
    return pieces


SPLIT_KINDS = ("whole", "two-way", "tokens", "chars", "random")


def split_plans(text: str, tokens_as_text: list[str] | None = None, seeds: Iterable[int] = range(20)):
    """(kind, label, pieces) for every split tried, smallest first."""
    yield "whole", "whole output as one delta", [text]
    for cut in range(1, len(text)):
        yield "two-way", f"two deltas split at offset {cut}", [text[:cut], text[cut:]]
    if tokens_as_text is not None:
        yield "tokens", f"{len(tokens_as_text)} token pieces", list(tokens_as_text)
    if len(text) > 2:
        yield "chars", "one character per delta", list(text)
    for seed in seeds:
        yield "random", f"random grouping, seed {seed}", _random_pieces(text, seed)


def check_streaming(
    fmt: Format | str,
    text: str,
    tokens_as_text: list[str] | None = None,
    seeds: Iterable[int] = range(20),
    tools: list[dict] | None = None,
    kinds: Iterable[str] = SPLIT_KINDS,
    reasoning: str = "separate",
    opened: bool = False,
) -> str | None:
    """None if every split of `text` streams to the same result as extract(text).

    Splits tried, smallest first: one delta; every two-way split; the given token pieces;
    one character per delta; random groupings per seed (restrict with `kinds`).  The
    message names the first failing split; splits of more than two deltas are shrunk to
    the fewest pieces that still fail."""
    if isinstance(fmt, str):
        from . import get_format

        fmt = get_format(fmt)
    if tokens_as_text is not None and "".join(tokens_as_text) != text:
        return f"{fmt.name}: token pieces do not concatenate to the output text"
    message = {"reasoning": reasoning, "opened": opened}
    want = _canon(streamed_reference(fmt, text, tools, reasoning, opened))
    kinds = set(kinds)

    def fails(pieces: list[str]) -> bool:
        return _problem(fmt, pieces, want, tools, message) is not None

    for kind, label, pieces in split_plans(text, tokens_as_text, seeds):
        if kind not in kinds or not fails(pieces):
            continue
        if len(pieces) > 2:
            pieces = _shrink(pieces, fails)
            label += f", shrunk to {len(pieces)} deltas"
        return (f"{fmt.name}: streaming differs from extract() ({label}):\n"
                f"  deltas: {pieces!r}\n  {_problem(fmt, pieces, want, tools, message)}")
    return None


def streamed_reference(fmt: Format, text: str, tools, reasoning: str = "separate", opened: bool = False) -> Extraction:
    """What a stream of `text` must reconstruct to under a reasoning mode."""
    from .base import ToolIndex, build_extraction, stream_view

    view = stream_view(reasoning, streaming=True)
    return build_extraction(fmt.message_scan(text, ToolIndex.of(tools), True, view, opened))
