"""What the daemon and its consolidator child agree on, defined once for both sides.

The verdict is the run's state in Redis (daemon.memory.lifecycle); the child's
exit code repeats it for logs and supervisors. EXIT_CLAIMED: the child did
nothing, because another worker holds the run's claim or the run was no longer
queued. The daemon pauses the child for chat with PAUSE (the child aborts its
engine requests at once; SIGSTOP follows a moment later) and lets it go on
with RESUME. PAUSE is ignored by default, so one that arrives before the child
listens does no harm.
"""

from __future__ import annotations

import signal

EXIT_PASSED, EXIT_FAILED, EXIT_REJECTED, EXIT_CLAIMED = 0, 1, 3, 4
PAUSE, RESUME = signal.SIGURG, signal.SIGCONT
