"""Child processes (vLLM, redis-server, the consolidator) die with the daemon.

They run in their own sessions (so a signal to one reaches its whole process
group), which also means they would outlive a daemon killed with SIGKILL. On
Linux the kernel can deliver SIGTERM to a child when its parent dies.
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: ask the kernel for SIGTERM when the daemon dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
