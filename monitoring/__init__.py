"""Monitoring: judging traffic. Drift of recent windows against a reference, its reports, verdicts and alerts."""
