"""OpenAI tool definitions, indexed for the formats that need parameter schemas."""

from __future__ import annotations


class ToolIndex:
    """OpenAI tool definitions indexed by function name (tolerates bare function dicts)."""

    def __init__(self, tools: list[dict] | None = None):
        self.functions: dict[str, dict] = {}
        for tool in tools or []:
            if not isinstance(tool, dict):
                continue
            fn = tool.get("function", tool)
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                self.functions[fn["name"]] = fn

    @classmethod
    def of(cls, tools: "list[dict] | ToolIndex | None") -> "ToolIndex":
        return tools if isinstance(tools, ToolIndex) else cls(tools)

    def __bool__(self) -> bool:
        return bool(self.functions)

    def param_schema(self, function: str, param: str) -> dict | None:
        params = self.functions.get(function, {}).get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        schema = props.get(param) if isinstance(props, dict) else None
        return schema if isinstance(schema, dict) else None
