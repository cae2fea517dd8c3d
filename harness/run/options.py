"""The plugin's options that `harness run` accepts itself (README: "the plugin ... adds ...").

`harness run` is pytest with the repository's folders filled in. Every option the plugin
registers for a contributor (harness/plugin.py pytest_addoption) is also an option of
`harness run`, given the same way (`harness run --case X --model-dir DIR`), and passed on to
pytest unchanged; `-- --option` keeps working. One table, so an option added to the plugin is
one row here, and tests/test_run_options.py checks that the README, this table and the plugin
agree.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunOption:
    flag: str                 # the same spelling on `harness run` and on pytest
    help: str
    repeatable: bool = False
    path: bool = False        # resolved against the current folder before it goes to pytest
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return "opt_" + self.flag.lstrip("-").replace("-", "_")


# --case, --backend and --report-dir are harness run's own (they shape the run's folders too)
RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("--cases", "folder of case files (default: <root>/cases)", path=True, metavar="DIR"),
    RunOption("--golden-dir", "goldens folder (default: <root>/golden)", path=True, metavar="DIR"),
    RunOption("--model-dir", "look for model files here first (repeatable; also HARNESS_MODEL_DIR)",
              repeatable=True, path=True, metavar="DIR"),
    RunOption("--threads", "backend threads (default 1; recorded in results)", metavar="N"),
    RunOption("--seed", "sampling seed (default 1234; recorded in results)", metavar="N"),
    RunOption("--server-url", "attach the llama-server backend to a server you started", metavar="URL"),
    RunOption("--server-binary", "use this llama-server binary instead of building one", path=True,
              metavar="PATH"),
    RunOption("--llama-cpp-tree", "build llama-server from this llama.cpp tree (the upgrade use)", path=True,
              metavar="TREE"),
    RunOption("--openai-url", "also run the 'openai' backend against this OpenAI-compatible endpoint",
              metavar="URL"),
    RunOption("--openai-capabilities", "what --openai-url can do: chat,stream,complete,grammar,tools or "
                                       "@caps.yaml", metavar="CAPS"),
    RunOption("--case-timeout", "fail a check that runs longer than this (default 600; 0: off)",
              metavar="SECONDS"),
    RunOption("--memory-ceiling", "fail the running check past this resident memory (default 6144; 0: off)",
              metavar="MIB"),
)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    for o in RUN_OPTIONS:
        parser.add_argument(o.flag, dest=o.dest, help=o.help, metavar=o.metavar,
                            action="append" if o.repeatable else "store",
                            default=[] if o.repeatable else None)


def _value(o: RunOption, value: str) -> str:
    # "@caps.yaml" and URLs are not paths; a path option is made absolute, as pytest's rootdir may differ
    return str(Path(value).expanduser().resolve()) if o.path else value


def run_option_args(ns: argparse.Namespace) -> list[str]:
    """The pytest arguments for the options given on `harness run`."""
    args: list[str] = []
    for o in RUN_OPTIONS:
        value = getattr(ns, o.dest, None)
        # (a namespace not built by add_run_options, such as the overhead bench's, lacks them)
        for v in ((value or []) if o.repeatable else [value] if value is not None else []):
            args.append(f"{o.flag}={_value(o, v)}")
    return args


def openai_capabilities(value: str) -> list[str]:
    """--openai-capabilities: "chat,stream,tools" or "@path/to/file" holding a JSON or YAML list.
    Raises ValueError (with the file and the problem) for anything else."""
    if not value.startswith("@"):
        return [c.strip() for c in value.split(",") if c.strip()]
    path = Path(value[1:]).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--openai-capabilities {value}: cannot read {path}: {exc.strerror or exc}") from None
    import yaml                      # YAML is a superset of JSON: one parser reads both
    try:
        caps = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"--openai-capabilities {value}: {path} is neither JSON nor YAML: {exc}") from None
    if not isinstance(caps, list) or not all(isinstance(c, str) and c.strip() for c in caps):
        raise ValueError(f"--openai-capabilities {value}: {path} must hold a list of capability names, "
                         f"e.g. [chat, stream, tools]; got {json.dumps(caps)[:200]}")
    return [c.strip() for c in caps]
