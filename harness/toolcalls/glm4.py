"""GLM-4 (glm-4-9b-chat, GLM-4-0414): the function name on its own line, then JSON."""

from __future__ import annotations

from .base import Format, Scan, ToolIndex
from ._scan import MATCH, NAME, PARTIAL, find_marker, json_args, match_seq, skip_ws

ASSISTANT, OBSERVATION = "<|assistant|>", "<|observation|>"


class Glm4(Format):
    name = "glm4"
    reasoning = None  # these models write no reasoning block
    description = (
        "GLM-4 (glm-4-9b-chat, GLM-4-0414) puts a tool call in the assistant message's "
        'metadata line: get_weather\\n{"city": "Paris"}. Several calls are separate assistant '
        'messages (get_weather\\n{...}<|assistant|>get_time\\n{...}) or simply follow each '
        "other. Because the syntax has no markup, a call is only recognised where a message "
        "starts - at the beginning of the output, right after <|assistant|>, or right after "
        "another call - as a name line followed by a line starting with '{'; when tools are "
        "given the name must be one of them. <|assistant|> and <|observation|> (the stop "
        "token after a call) are dropped; everything else is content. Truncated or malformed "
        "JSON yields no call and an error."
    )

    def scan(self, text: str, tools: ToolIndex, final: bool) -> Scan:
        scan, pos, call_position = Scan(), 0, True
        while True:
            if call_position:
                p = skip_ws(text, pos)
                status, brace, caps = match_seq(text, p, (NAME, "\n", "{"), final)
                if status == PARTIAL:
                    return scan
                if status == MATCH and (not tools or caps[0] in tools.functions):
                    call, end = json_args(p, caps[0], text, brace - 1, final)
                    scan.call(call)
                    if call.state == "done":
                        pos = end
                        continue
                    if call.state == "open":
                        return scan
                    # The rest of a malformed message is not content.
                    i, marker = find_marker(text, min(end, len(text)), (ASSISTANT,), True)
                    if marker is None:
                        return scan
                    pos = i
            i, marker = find_marker(text, pos, (ASSISTANT, OBSERVATION), final)
            scan.text(text[pos:i])
            if marker is None:
                return scan
            pos, call_position = i + len(marker), marker == ASSISTANT


FORMAT = Glm4()
