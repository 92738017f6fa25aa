"""The fault suite: `python -m tests.faults` (all scenarios) or `python -m tests.faults --fast` (the CI part)."""
