"""Named points where the fault suite (tests/faults) parks a process so it can SIGKILL it exactly there.

`PREFIX_REGISTRY_FAILPOINT=alias-move:after-history-entry prefixctl promote ...` stops that command right after it
wrote the history entry and before it moved the alias, prints one line to stderr, and waits to be killed. Unset (as
always outside the fault suite), a failpoint is one environment look-up and nothing else. A test hook, not a
setting: it is deliberately absent from `Settings`.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "PREFIX_REGISTRY_FAILPOINT"
ALIAS_MOVE_AFTER_HISTORY = "alias-move:after-history-entry"
REGISTER_BEFORE_VERSION = "register:before-create-version"


def failpoint(name: str) -> None:
    """Park this process forever when `name` is the failpoint asked for; return at once otherwise."""
    if os.environ.get(ENV) != name:
        return
    sys.stderr.write(f"FAILPOINT {name} reached in pid {os.getpid()}\n")
    sys.stderr.flush()
    while True:
        time.sleep(3600)
