"""The one atomic write: a reader sees the whole old file or the whole new one, never a part
(reports, goldens index, results.json, the llama-server build memo, probe memos). The temporary
file is unique per call (mkstemp), so concurrent writers (xdist workers, threads) never share
one; the last os.replace wins."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
