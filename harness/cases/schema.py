"""The case-file schema (version 1), as JSON Schema, with friendly error messages.

Validation uses `jsonschema`; its errors are translated into `Problem`s that name the
file, line, column and key path, with a "did you mean" for unknown keys. Each check
family owns its fragment under `checks:` so later families extend the schema additively.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import jsonschema

from harness.errors import Problem
from harness.cases.yamlio import Located

SCHEMA_VERSION = 1

_ID = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]*$"}
_SHA256 = {"type": "string", "pattern": r"^[0-9a-f]{64}$"}
_TEXT = {"type": "string", "minLength": 1}

_PYPI_MEMBER = {
    "type": "object", "additionalProperties": False,
    "required": ["member"],
    "properties": {
        "pypi": {"type": "string", "pattern": r"^[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+$"},
        "pypi_sdist": {"type": "string", "pattern": r"^[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+$"},
        "member": _TEXT,
    },
    "oneOf": [{"required": ["pypi"]}, {"required": ["pypi_sdist"]}],
}
_MIRROR = {
    "oneOf": [
        _PYPI_MEMBER,
        {"type": "object", "additionalProperties": False, "required": ["parts"],
         "properties": {"parts": {"type": "array", "minItems": 1, "items": _PYPI_MEMBER}}},
    ]
}
_HUB = {
    "type": "object", "additionalProperties": False, "required": ["repo"],
    "properties": {"repo": {"type": "string", "pattern": r"^[\w.-]+/[\w.-]+$"},
                   "revision": _TEXT},
}
_FILE_SOURCE = {
    "type": "object", "additionalProperties": False, "required": ["file", "sha256"],
    "properties": {
        "file": _TEXT,
        "sha256": _SHA256,
        "size": {"type": "integer", "minimum": 1},
        "hub": _HUB,
        "mirror": {"type": "array", "items": _MIRROR},
    },
}
_WHERE = {"type": "object", "additionalProperties": {"type": "string"}}
_KNOWN_DEFECT = {
    "type": "object", "additionalProperties": False, "required": ["check", "description"],
    "properties": {
        "check": {"type": "string", "pattern": r"^[a-z_]+(\.[a-z_]+)?$"},
        "where": _WHERE,
        "description": {"type": "string", "minLength": 10},
        "reported": _TEXT,
        # a regular expression the failure's message must contain (re.search): pins the defect
        # itself, so that a different disagreement on the same check is not taken for it
        "match": {"type": "string", "minLength": 1},
    },
}
_RENDERERS = {"type": "array", "items": _TEXT, "uniqueItems": True}
_CONTEXT_REFS = {"type": "array", "items": _ID, "uniqueItems": True, "minItems": 1}

# Each check family's options. Families added later extend this table.
CHECK_FRAGMENTS: dict[str, dict[str, Any]] = {
    "templates": {
        "type": "object", "additionalProperties": False,
        "properties": {"renderers": _RENDERERS, "contexts": _CONTEXT_REFS},
    },
    "tokenizer": {
        "type": "object", "additionalProperties": False,
        "properties": {
            # llama.cpp's HF-generated reference ids (models/ggml-vocab-*.gguf.inp/.out)
            "reference": {"type": "object", "additionalProperties": False,
                          "required": ["pypi_sdist", "inp", "out"],
                          "properties": {"pypi_sdist": _PYPI_MEMBER["properties"]["pypi_sdist"],
                                         "inp": _TEXT, "out": _TEXT}},
            # differential testing against transformers on generated strings
            "differential": {"type": "object", "additionalProperties": False,
                             "properties": {"examples": {"type": "integer", "minimum": 1},
                                            "seed": {"type": "integer"}}},
            # decode(encode(s)) == s is promised; false for normalising tokenizers (BERT)
            "lossless": {"type": "boolean"},
            "lossless_reason": _TEXT,
        },
    },
    # generation with real weights (harness/families/generation/checks.py): grammars, stops, special tokens
    "generation": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 256},
            # the end-of-generation ids the model must have (llama_vocab_is_eog), checked exactly
            "eog_ids": {"type": "array", "items": {"type": "integer", "minimum": 0}, "uniqueItems": True,
                        "minItems": 1},
            # extra end-of-turn texts that must never leak (the model's EOG texts are always included)
            "end_of_turn": {"type": "array", "items": _TEXT, "uniqueItems": True},
            # conversations for the chat-template check (missing or mismatched templates)
            "contexts": _CONTEXT_REFS,
            # the model's end-of-turn text, substituted for {turn_end} in shared grammars and stop sets
            "turn_end": _TEXT,
            # ids of shared grammars (cases/grammars/, harness/cases/shared.py) or inline objects
            "grammars": {"type": "array", "minItems": 1, "items": {"oneOf": [_ID, {
                "type": "object", "additionalProperties": False,
                "required": ["id", "accept", "reject"],
                "properties": {
                    "id": _ID,
                    "description": _TEXT,
                    "gbnf": _TEXT,
                    "json_schema": {"type": "object"},
                    "prompt": _TEXT,
                    "messages": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False, "required": ["role", "content"],
                        "properties": {"role": {"enum": ["system", "user", "assistant"]},
                                       "content": {"type": "string"}}}},
                    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 256},
                    "accept": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "reject": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                },
                "allOf": [{"oneOf": [{"required": ["gbnf"]}, {"required": ["json_schema"]}]},
                          {"oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}]}],
            }]}},
            # a shared stop set's id (cases/stops/), or a list of stop-set ids and inline entries (an
            # inline entry replaces the set's entry of the same id)
            "stops": {"oneOf": [_ID, {"type": "array", "minItems": 1, "items": {"oneOf": [_ID, {
                "type": "object", "additionalProperties": False,
                "required": ["id", "prompt", "expect_finish"],
                "properties": {
                    "id": _ID,
                    "description": _TEXT,
                    "prompt": _TEXT,
                    "stop": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                    "stop_ids": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                    "grammar": _TEXT,           # optional GBNF, e.g. to force a special token
                    "spans_tokens": {"type": "integer", "minimum": 2},   # the stop must cover >= N tokens
                    "expect_finish": {"enum": ["stop", "length"]},
                    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 256},
                },
                "oneOf": [{"required": ["stop"]}, {"required": ["stop_ids"]}],
            }]}}]},
            # a shared stop set's id (its special_rendering list) or an inline list
            "special_rendering": {"oneOf": [_ID, {"type": "array", "minItems": 1, "items": {"oneOf": [_ID, {
                "type": "object", "additionalProperties": False,
                "required": ["id", "prompt"],
                "properties": {
                    "id": _ID,
                    "description": _TEXT,
                    "prompt": _TEXT,
                    "grammar": _TEXT,
                    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 256},
                },
            }]}}]},
        },
    },
    # throughput benchmarks (`harness bench`, harness/bench/core.py); not run by `harness run`
    "throughput": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 1, "maximum": 2048},
            "gen_tokens": {"type": "integer", "minimum": 2, "maximum": 1024},
            # with and without a grammar: none, a GBNF grammar, a JSON schema
            "constraints": {"type": "array", "items": {"enum": ["none", "gbnf", "json_schema"]},
                            "uniqueItems": True, "minItems": 1},
            "backends": {"type": "array", "uniqueItems": True, "minItems": 1,
                         "items": {"enum": ["llama-cpp-python", "llama-cpp-python-eval", "llama-server"]}},
            "rounds": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    },
    # tool calls (harness/families/toolcalls/checks.py): round trip, hand-built handler prompts, streaming
    # of the canned outputs in the model's tokens, real tool-call generations
    "toolcalls": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "contexts": _CONTEXT_REFS,
            # the wire format per template stem (template sets) or case id (models), glob;
            # overrides detect_format(); null: no extractor (round trip checks presence only)
            "formats": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["match", "format"],
                "properties": {"match": _TEXT, "format": {"type": ["string", "null"], "minLength": 1},
                               "why": {"type": "string", "minLength": 10}}}},
            # round trips that lose something by design; the losses must be exactly these
            "lossy": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["where", "loses", "description"],
                "properties": {
                    "where": _WHERE,
                    "loses": {"type": "array", "uniqueItems": True, "minItems": 1,
                              "items": {"enum": ["refused", "calls", "names", "arguments", "ids", "reasoning"]}},
                    "description": {"type": "string", "minLength": 10}}}},
            # LLaMA-Factory's tool utils (harness/families/toolcalls/llamafactory*.py): its extractors
            # on every canned output, its tool prompts against the model templates; one case runs them
            "llamafactory": {"type": "boolean"},
            # stream every canned output of cases/toolcall-outputs/ in this model's real tokens
            "canned_outputs": {"type": "object", "additionalProperties": False,
                               "properties": {"tokenizer": {"enum": ["llama-cpp-python"]}}},
            # llama.cpp's own parser (toolcalls.llama_parse) on this wire format's canned outputs with
            # the GGUF's template (a template set's templates get theirs from `formats`)
            "llama_parse": {"type": "object", "additionalProperties": False, "required": ["format"],
                            "properties": {"format": _TEXT}},
            # llama-cpp-python chat handlers that build the tool prompt by hand
            "handlers": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["handler"],
                "properties": {
                    "handler": _TEXT,
                    "contexts": _CONTEXT_REFS,
                    "tool_choice": {"type": "array", "uniqueItems": True, "minItems": 1,
                                    "items": {"enum": ["auto", "omitted", "named"]}},
                    "reference": {"type": "object", "additionalProperties": False, "required": ["pypi_sdist", "member"],
                                  "properties": {"pypi_sdist": _PYPI_MEMBER["properties"]["pypi_sdist"], "member": _TEXT,
                                                 "bos_token": {"type": "string"}, "eos_token": {"type": "string"}}},
                    "no_reference": _TEXT},
                "oneOf": [{"required": ["reference"]}, {"required": ["no_reference"]}]}},
            # real tool-call generations with a tool-capable template for this model's weights
            # a shared setup's id (cases/toolcall-generation/), or an object ({use: ID, ...} overrides keys)
            "generation": {"oneOf": [_ID, {
                "type": "object", "additionalProperties": False,
                "anyOf": [{"required": ["use"]}, {"required": ["template", "format", "context"]}],
                "properties": {
                    "use": _ID,
                    "template": {"type": "object", "additionalProperties": False, "required": ["pypi_sdist", "member"],
                                  "properties": {"pypi_sdist": _PYPI_MEMBER["properties"]["pypi_sdist"], "member": _TEXT,
                                                 "bos_token": {"type": "string"}, "eos_token": {"type": "string"}}},
                    "format": _TEXT,
                    "context": _ID,
                    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 256},
                    "chat_max_tokens": {"type": "integer", "minimum": 1, "maximum": 256},
                    "tool_choice": {"type": "array", "uniqueItems": True, "minItems": 1,
                                    "items": {"enum": ["required", "named"]}},
                    "backends": {"type": "array", "uniqueItems": True, "minItems": 1,
                                 "items": {"enum": ["llama-cpp-python", "llama-server", "openai", "llama-cpp-python-server"]}}}}]},
        },
    },
}

CASE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["schema", "id", "description"],
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "id": _ID,
        "kind": {"enum": ["model", "template-set"]},
        "description": _TEXT,
        "tags": {"type": "array", "items": _ID},
        "model": {
            "type": "object", "additionalProperties": False, "required": ["gguf"],
            "properties": {
                "gguf": _FILE_SOURCE,
                "weights": {"type": "boolean"},
                "chat_template": {"enum": ["embedded", "none"]},
                "tokenizer": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"hub": _HUB, "from_gguf": {"type": "boolean"}},
                },
            },
        },
        "templates": {
            "type": "object", "additionalProperties": False, "required": ["from"],
            "properties": {
                "from": {
                    "type": "object", "additionalProperties": False,
                    "required": ["pypi_sdist", "glob"],
                    "properties": {"pypi_sdist": _PYPI_MEMBER["properties"]["pypi_sdist"], "glob": _TEXT},
                },
                "bos_token": {"type": "string"},
                "eos_token": {"type": "string"},
                "overrides": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["match"],
                    "properties": {"match": _TEXT, "bos_token": {"type": "string"},
                                   "eos_token": {"type": "string"}}}},
            },
        },
        "contexts": _CONTEXT_REFS,
        "checks": {"type": "object", "additionalProperties": False, "properties": CHECK_FRAGMENTS},
        "known_defects": {"type": "array", "items": _KNOWN_DEFECT},
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": "template-set"}}, "required": ["kind"]},
         "then": {"required": ["templates"], "not": {"required": ["model"]}},
         "else": {"required": ["model"], "not": {"required": ["templates"]}}},
    ],
}

_MESSAGE = {
    "type": "object", "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool", "developer"]},
        "content": {"type": ["string", "null", "array"]},
        "tool_calls": {"type": "array"},
        "tool_call_id": {"type": "string"},
        "name": {"type": "string"},
        "reasoning_content": {"type": "string"},
    },
    "additionalProperties": False,
}
CONTEXT_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["schema", "id", "description", "messages"],
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "id": _ID,
        "description": _TEXT,
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "tools": _ID,
        "add_generation_prompt": {"type": "array", "items": {"type": "boolean"}, "minItems": 1,
                                  "uniqueItems": True},
    },
}
TOOLSET_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["schema", "id", "description", "tools"],
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "id": _ID,
        "description": _TEXT,
        "tools": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["type", "function"], "additionalProperties": False,
            "properties": {"type": {"const": "function"}, "function": {
                "type": "object", "required": ["name", "parameters"],
                "properties": {"name": _TEXT, "description": {"type": "string"},
                               "parameters": {"type": "object"}}}}}},
    },
}


# shared generation pieces (harness/cases/shared.py): the same objects a case may write inline
_GRAMMAR_ITEM = CHECK_FRAGMENTS["generation"]["properties"]["grammars"]["items"]["oneOf"][1]
_STOP_ITEM = CHECK_FRAGMENTS["generation"]["properties"]["stops"]["oneOf"][1]["items"]["oneOf"][1]
_TOOLGEN = CHECK_FRAGMENTS["toolcalls"]["properties"]["generation"]["oneOf"][1]
_HEADER = {"schema": {"const": SCHEMA_VERSION}, "id": _ID}
GRAMMAR_FILE_SCHEMA: dict[str, Any] = {
    **_GRAMMAR_ITEM, "required": ["schema", "id", "description", "accept", "reject"],
    "properties": {**_GRAMMAR_ITEM["properties"], **_HEADER}}
_SHARED_STOP = {**_STOP_ITEM, "properties": {
    **_STOP_ITEM["properties"],
    # "eog": the model's end-of-generation ids (llama.cpp's), filled in at run time
    "stop_ids": {"oneOf": [_STOP_ITEM["properties"]["stop_ids"], {"const": "eog"}]}}}
STOPSET_FILE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["schema", "id", "description", "stops"],
    "properties": {**_HEADER, "description": _TEXT,
                   "stops": {"type": "array", "minItems": 1, "items": _SHARED_STOP},
                   "special_rendering": {"type": "array", "minItems": 1, "items": CHECK_FRAGMENTS["generation"]["properties"][
                       "special_rendering"]["oneOf"][1]["items"]["oneOf"][1]}}}
TOOLGEN_FILE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["schema", "id", "description", "template", "format", "context"],
    "properties": {**{k: v for k, v in _TOOLGEN["properties"].items() if k != "use"}, **_HEADER,
                   "description": _TEXT}}


_UNEXPECTED = re.compile(r"\('?(.+?)'? (?:was|were) unexpected\)")


def _allowed_keys(schema: dict[str, Any]) -> list[str]:
    return sorted(schema.get("properties", {}))


def _translate(error: jsonschema.ValidationError, located: Located) -> list[Problem]:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = _allowed_keys(error.schema)
        out = []
        for key in error.instance:
            if key in allowed or (isinstance(error.schema.get("additionalProperties"), dict)):
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"
            out.append(located.problem((*path, key), f"unknown key '{key}'{hint}"))
        return out
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        name = missing[0] if missing else error.message
        return [located.problem((*path, name) if missing else path, "required key is missing")]
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [located.problem(path, f"expected {expected}, got {type(error.instance).__name__} "
                                      f"{_short(error.instance)}")]
    if error.validator == "const" and path == ("schema",):
        return [located.problem(path, f"unsupported schema version {error.instance!r}; "
                                      f"this harness reads version {SCHEMA_VERSION}")]
    if error.validator == "pattern":
        return [located.problem(path, f"{_short(error.instance)} does not match {error.validator_value}")]
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        close = difflib.get_close_matches(str(error.instance), list(map(str, error.validator_value)), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return [located.problem(path, f"{_short(error.instance)} is not one of: {allowed}{hint}")]
    if error.validator in ("oneOf", "anyOf", "allOf", "if", "not") and error.context:
        # pick the most specific sub-error: the deepest path, then the first
        # (an id-or-object value: the object's own error says more than "expected string")
        best = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type",
                                                 -e.relative_schema_path.__len__()))
        return _translate(best, located)
    if error.validator == "not" and error.validator_value.get("required"):
        return [located.problem(path, f"'{error.validator_value['required'][0]}' is not allowed here")]
    return [located.problem(path, error.message)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(located: Located, schema: dict[str, Any]) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(located.data), key=lambda e: list(map(str, e.absolute_path))):
        problems.extend(_translate(error, located))
    # one problem per place is enough
    seen, unique = set(), []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            unique.append(p)
    return unique
