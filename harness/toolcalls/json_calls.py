"""Formats whose calls are JSON between two markers: a list of call objects, or call
objects one after another.  One engine, one `JsonCalls` instance per wire format.

The spec of each format says which markers open and close the block (a missing close
marker means the block runs to the end of the output), which keys hold the name, the
arguments and the id, and which marker texts are pure markup to drop from the content
(Command R7B's <|START_RESPONSE|>, Granite's <response>).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Call, Format, Reasoning, Scan, THINK, ToolIndex, dumps, loads
from ._scan import COMPLETE, INCOMPLETE, MATCH, PARTIAL, json_call, match_seq, scan_json, scan_markers, skip_ws


@dataclass(frozen=True)
class CallKeys:
    name: str = "name"
    arguments: tuple[str, ...] = ("arguments", "parameters")
    id: str | None = None
    # {"get_weather": {"city": "Paris"}}: the object's only key is the name (Apertus)
    name_is_key: bool = False

    @property
    def standard(self) -> bool:
        """json_call() can stream these objects (name first, then the arguments)."""
        return self.name == "name" and not self.name_is_key and set(self.arguments) <= {"arguments", "parameters"}


def element(text: str, pos: int, final: bool, keys: CallKeys) -> tuple[Call | None, int]:
    """One call object at text[pos] == '{' (see _scan.json_call for the result)."""
    if keys.standard:
        return json_call(text, pos, final, id_key=keys.id)
    state, end = scan_json(text, pos, final)
    if state == INCOMPLETE:
        if final:
            return Call(pos, None, state="broken", error="truncated JSON (output ended inside the call)"), end
        return None, end
    if state != COMPLETE:
        return Call(pos, None, state="broken", error=f"malformed JSON near {text[max(0, end - 10):end + 10]!r}"), end + 1
    try:
        obj = loads(text[pos:end], reject_duplicates=True)
    except ValueError as e:
        return Call(pos, None, state="broken", error=f"malformed JSON ({e})"), end
    if not isinstance(obj, dict):
        return Call(pos, None, state="broken", error="a call must be a JSON object"), end
    if keys.name_is_key:
        if len(obj) != 1 or not next(iter(obj)):
            return Call(pos, None, state="broken", error="a call object must have exactly one key, the function name"), end
        name, args = next(iter(obj.items()))
        return Call(pos, name, args=dumps(args), state="done"), end
    name = obj.get(keys.name)
    if not isinstance(name, str) or not name:
        return Call(pos, None, state="broken", error=f"call object has no {keys.name!r} string"), end
    key = next((k for k in keys.arguments if k in obj), None)
    ident = obj.get(keys.id) if keys.id else None
    ident = ident if isinstance(ident, str) or ident is None else dumps(ident)
    return Call(pos, name, ident, args=dumps(obj[key]) if key else "{}", state="done"), end


class JsonCalls(Format):
    """open + (a JSON list of calls | call objects separated by whitespace) + close."""

    def __init__(self, name: str, open: str, close: str | None, description: str, *, keys: CallKeys = CallKeys(),
                 shape: str = "list", reasoning: Reasoning | None = THINK, drop: tuple[str, ...] = (),
                 end_of_turn: tuple[str, ...] = (), prefix: str = "", plain_unless_json: bool = False):
        self.name, self.open, self.close, self.description = name, open, close, description
        self.keys, self.shape, self.reasoning, self.drop, self.end_of_turn = keys, shape, reasoning, drop, end_of_turn
        self.prefix = prefix  # text between the open marker and the JSON (Command R+'s "```json")
        # the open marker is an ordinary word ("functools", "Action:"): without the JSON
        # right after it, it is just text
        self.plain_unless_json = plain_unless_json

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        def block(scan: Scan, i: int, marker: str) -> int | None:
            return self._block(scan, text, i, final) if marker == self.open else i + len(marker)  # markup: dropped
        return scan_markers(text, (self.open,) + self.drop, final, block)

    def _block(self, scan: Scan, text: str, start: int, final: bool) -> int | None:
        p = skip_ws(text, start + len(self.open))
        if self.prefix:
            status, p, _ = match_seq(text, p, (self.prefix,), final)
            if status == PARTIAL:
                return None
            if status != MATCH:
                if self.plain_unless_json:
                    scan.text(text[start:p])
                    return p
                return self._skip(scan, text, p, f"expected {self.prefix!r} after {self.open!r}")
            p = skip_ws(text, p)
        if p >= len(text):
            if final:
                scan.call(Call(start, None, state="broken", error=f"truncated: output ends after {self.open!r}"))
            return None
        opener = "[" if self.shape == "list" else "{"
        if text[p] != opener:
            if self.plain_unless_json:
                scan.text(text[start:p])
                return p
            return self._skip(scan, text, p, f"expected a JSON {'list' if opener == '[' else 'object'} after {self.open!r}")
        if self.shape == "list":
            p += 1
        first, last_end = True, p
        while True:
            p = skip_ws(text, p)
            if p >= len(text):
                if final and self.shape == "objects" and not first:
                    if self.close is None:
                        return last_end
                    scan.errors.append(f"missing {self.close!r} at end of output (calls kept: their JSON is complete)")
                elif final:
                    scan.errors.append(f"truncated {self.name} block (output ended inside it)")
                return None
            if self.shape == "list" and text[p] == "]":
                return self._close(scan, text, p + 1, final)
            if self.shape == "objects" and text[p] != "{" and not first:
                return self._close(scan, text, last_end, final)
            if text[p] != "{":
                return self._skip(scan, text, p, "expected a call object")
            call, end = element(text, p, final, self.keys)
            if call is None:
                return None
            if call.state == "broken":
                scan.call(call)
                return self._skip(scan, text, end, None)
            call.start = p
            scan.call(call)
            if call.state == "open":
                return None
            p, first, last_end = skip_ws(text, end), False, end
            if self.shape == "list":
                if p < len(text) and text[p] == ",":
                    p += 1
                elif p < len(text) and text[p] != "]":
                    return self._skip(scan, text, p, "expected ',' or ']' in the call list")

    def _close(self, scan: Scan, text: str, p: int, final: bool) -> int | None:
        if self.close is None:
            return p
        q = skip_ws(text, p)
        status, end, _ = match_seq(text, q, (self.close,), final)
        if status == MATCH:
            return end
        if status == PARTIAL:
            return None
        if self.close.startswith(text[q:]):  # final: the close marker is missing at the end
            scan.errors.append(f"missing {self.close!r} at end of output (calls kept: their JSON is complete)")
            return None
        scan.errors.append(f"unexpected text after the calls, before {self.close!r}")
        return self._skip(scan, text, q, None)

    def _skip(self, scan: Scan, text: str, p: int, error: str | None) -> int | None:
        """A malformed block: its text up to the close marker (or the end) is not content."""
        if error:
            scan.errors.append(error)
        if self.close is None:
            return None
        j = text.find(self.close, p)
        return None if j == -1 else j + len(self.close)


def _describe(example: str, extra: str = "") -> str:
    return (f"{example} Text before and after the block is content (stripped as a whole); complete call "
            "objects are kept when a later one is truncated or malformed (reported as an error); the "
            "block's text is never content; a complete block whose close marker is missing at the very "
            "end keeps its calls, with an error." + (" " + extra if extra else ""))


FORMATS = {
    "nemotron-v2": JsonCalls(
        "nemotron-v2", "<TOOLCALL>", "</TOOLCALL>", _describe(
            'NVIDIA Nemotron Nano v2 writes a JSON list in one tag pair: <TOOLCALL>[{"name": "get_weather", '
            '"arguments": {"city": "Paris"}}]</TOOLCALL>, after an optional <think>...</think> block.'),
        end_of_turn=("<SPECIAL_12>",)),
    "apriel": JsonCalls(
        "apriel", "<tool_calls>", "</tool_calls>", _describe(
            'Apriel 1.5/1.6 Thinker reason first (the generation prompt opens the reasoning with "Here are '
            'my reasoning steps:", which [BEGIN FINAL RESPONSE] closes), then answer; calls are a JSON list: '
            '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "x"}]</tool_calls>.'),
        keys=CallKeys(id="id"), reasoning=Reasoning("Here are my reasoning steps:", "[BEGIN FINAL RESPONSE]"),
        end_of_turn=("<|end|>",)),
    "granite": JsonCalls(
        "granite", "<|tool_call|>", None, _describe(
            'IBM Granite 3.x answers a call with <|tool_call|> followed by a JSON list: <|tool_call|>[{"name": '
            '"get_weather", "arguments": {"city": "Paris"}}]; the list runs to its closing bracket (there is '
            'no close marker). Granite 3.3 reasons in <think>...</think> and wraps its answer in '
            '<response>...</response>; those two tags are markup, not content.'),
        drop=("<response>", "</response>"), end_of_turn=("<|end_of_text|>",)),
    "firefunction-v2": JsonCalls(
        "firefunction-v2", "functools", None, _describe(
            'FireFunction v2 (Llama 3 based) prefixes its calls with the marker " functools" and one JSON '
            'list: functools[{"name": "get_weather", "arguments": {"city": "Paris"}}] (no close marker).'),
        reasoning=None, end_of_turn=("<|eot_id|>",), plain_unless_json=True),
    "command-r7b": JsonCalls(
        "command-r7b", "<|START_ACTION|>", "<|END_ACTION|>", _describe(
            'Command R7B (and Cohere2 / Command A) plan in <|START_THINKING|>...<|END_THINKING|> and act with '
            '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": '
            '"Paris"}}]<|END_ACTION|>; a reply is wrapped in <|START_RESPONSE|>...<|END_RESPONSE|>, which '
            'are markup, not content. The tool_call_id is the call id.'),
        keys=CallKeys(name="tool_name", arguments=("parameters",), id="tool_call_id"),
        reasoning=Reasoning("<|START_THINKING|>", "<|END_THINKING|>"),
        drop=("<|START_RESPONSE|>", "<|END_RESPONSE|>"), end_of_turn=("<|END_OF_TURN_TOKEN|>",)),
    "command-r-plus": JsonCalls(
        "command-r-plus", "Action:", "```", _describe(
            'Command R+ (tool-use template) writes "Action:" and a fenced JSON list: Action:\\n```json\\n'
            '[{"tool_name": "get_weather", "parameters": {"city": "Paris"}}]\\n```.'),
        keys=CallKeys(name="tool_name", arguments=("parameters",)), reasoning=None, prefix="```json",
        end_of_turn=("<|END_OF_TURN_TOKEN|>",), plain_unless_json=True),
    "apertus": JsonCalls(
        "apertus", "<|tools_prefix|>", "<|tools_suffix|>", _describe(
            'Apertus keys each call object by the function name: <|tools_prefix|>[{"get_weather": {"city": '
            '"Paris"}}]<|tools_suffix|>; it reasons in <|inner_prefix|>...<|inner_suffix|>.'),
        keys=CallKeys(name_is_key=True), reasoning=Reasoning("<|inner_prefix|>", "<|inner_suffix|>"),
        end_of_turn=("<|assistant_end|>",)),
    "minimax-m1": JsonCalls(
        "minimax-m1", "<tool_calls>", "</tool_calls>", _describe(
            'MiniMax-M1 writes one JSON object per line inside one tag pair: <tool_calls>\\n{"name": '
            '"get_weather", "arguments": {"city": "Paris"}}\\n{"name": ...}\\n</tool_calls>, after an '
            'optional <think>...</think> block.'),
        shape="objects", end_of_turn=("<end_of_sentence>",)),
    "gigachat3": JsonCalls(
        "gigachat3", "function call<|role_sep|>", None, _describe(
            'GigaChat 3 answers a call with a message of its own role: function call<|role_sep|>\\n{"name": '
            '"get_weather", "arguments": {"city": "Paris"}}<|message_sep|>; <|message_sep|> is markup. Only '
            "one call per turn is rendered by its template."),
        shape="objects", reasoning=None, drop=("<|message_sep|>",)),
    "gigachat": JsonCalls(
        "gigachat", "<|function_call|>", None, _describe(
            'GigaChat 3.1 answers a call with <|function_call|> and one JSON object: <|function_call|>{"name": '
            '"get_weather", "arguments": {"city": "Paris"}}. Only one call per turn is rendered by its template.'),
        shape="objects", reasoning=None, end_of_turn=("<|message_sep|>",)),
}
