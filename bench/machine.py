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
        "load_average": load_averages(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.is_available(),
        **versions,
    }


def load_average_1m() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def load_averages() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, or None where the platform has none."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
