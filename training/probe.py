"""The linear probe lives with the classification kind (kinds/probe.py); this name stays for its importers."""

from prefix_registry.kinds.probe import C_GRID, FittedProbe, fit_probe, probe_summary

__all__ = ["C_GRID", "FittedProbe", "fit_probe", "probe_summary"]
