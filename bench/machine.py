"""What a benchmark ran on, recorded with its figures (timings mean little without it)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any


def machine_info(packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """CPU, threads, load, Python, platform, and the versions of torch, transformers, peft and `packages`."""
    import torch

    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "peft", *packages):
        try:
            versions[f"{name.replace('-', '_')}_version"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[f"{name.replace('-', '_')}_version"] = None
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.is_available(),
        **versions,
    }
