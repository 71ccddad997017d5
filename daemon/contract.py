"""What the daemon and its consolidator child agree on, defined once for both sides.

The child reports its verdict as its exit code. The daemon pauses it for chat
with PAUSE (the child aborts its engine requests at once; SIGSTOP follows a
moment later) and lets it go on with RESUME. PAUSE is ignored by default, so
one that arrives before the child listens does no harm.
"""

from __future__ import annotations

import signal

EXIT_PASSED, EXIT_FAILED, EXIT_REJECTED = 0, 1, 3
PAUSE, RESUME = signal.SIGURG, signal.SIGCONT
