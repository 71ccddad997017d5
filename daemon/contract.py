"""What the daemon and its consolidator agree on, defined once for both sides.

Redis key names (``Keys``): the daemon writes passages, facts and queued runs;
a consolidator reads them and writes its run's progress and verdict, so both
build every key here. The records stored under them are the pydantic models
of daemon.memory.records.

The verdict is the run's state in Redis (daemon.memory.lifecycle); the child's
exit code repeats it for logs and supervisors. EXIT_CLAIMED: the child did
nothing, because another worker holds the run's claim or the run was no longer
queued. The daemon pauses the child for chat with PAUSE (the child aborts its
engine requests at once; SIGSTOP follows a moment later) and lets it go on
with RESUME. PAUSE is ignored by default, so one that arrives before the child
listens does no harm.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from daemon.config import DEFAULT_TENANT

EXIT_PASSED, EXIT_FAILED, EXIT_REJECTED, EXIT_CLAIMED = 0, 1, 3, 4
PAUSE, RESUME = signal.SIGURG, signal.SIGCONT


@dataclass(frozen=True)
class Keys:
    """Every Redis key memoryd uses, under the configured prefix ``P`` (redis.key_prefix).

    Memory (daemon.memory.store):
      P:passages                  zset  passage id -> last seen
      P:passage:<id>              hash  the Passage's scalar fields
      P:passage:<id>:convs        HyperLogLog of conversation keys (distinct conversations)
      P:passage:<id>:facts        list  ids of its statements, in order
      P:passage:<id>:questions    list  capped sample of user questions asked with it in context
      P:facts                     zset  fact id -> last seen
      P:fact:<id>                 hash  the Fact's scalar fields (text, source, passage, ...)
      P:fact:<id>:convs           HyperLogLog of conversation keys
      P:fact:<id>:variants        list  capped sample of other wordings merged into it
      P:aliases                   hash  id of a wording -> id of the fact it was merged into
      (a fact's hash field ``pinned`` 1: it and its passage never decay)
    Runs (daemon.memory.lifecycle, daemon.memory.runlog):
      P:run:<id>                  string  Consolidation JSON; its state is written only by lifecycle
      P:run:<id>:claim            string  token of the worker holding the run; expires unless renewed
      P:run:seq                   counter for run ids (= adapter versions)
      P:runs                      zset  run id -> started at
      P:runs:open                 set   ids of runs not settled (queued, running, passed)
      P:tries                     hash  fact-set fingerprint -> its runs ended without a verdict
      P:events                    stream  consolidation log an operator can tail
      P:active                    string  active adapter version
      P:last_attempt              string  fingerprint of the memory last consolidated
    Tenants (daemon.tenants): the default tenant's keys are the ones above; a named
    tenant T has every one of them under ``P:t:<T>`` (``tenant``), so its memory
    is SCANned and wiped by that prefix alone.
    """

    prefix: str

    def _k(self, *parts: object) -> str:
        return ":".join([self.prefix, *(str(p) for p in parts if p is not None)])

    def tenant(self, name: str) -> Keys:
        """The keys of named tenant ``name``: the same names, under ``P:t:<name>``."""
        return Keys(self._k("t", name))

    # --- memory ---------------------------------------------------------------
    @property
    def passages(self) -> str:
        return self._k("passages")

    def passage(self, pid: str, part: str | None = None) -> str:
        """``part``: None (the hash), "convs", "facts" or "questions"."""
        return self._k("passage", pid, part)

    @property
    def facts(self) -> str:
        return self._k("facts")

    def fact(self, fid: str, part: str | None = None) -> str:
        """``part``: None (the hash), "convs" or "variants"."""
        return self._k("fact", fid, part)

    @property
    def aliases(self) -> str:
        return self._k("aliases")

    # --- runs -----------------------------------------------------------------
    def run(self, run_id: int | str) -> str:
        return self._k("run", run_id)

    def claim(self, run_id: int | str) -> str:
        return self._k("run", run_id, "claim")

    @property
    def run_seq(self) -> str:
        return self._k("run", "seq")

    @property
    def runs(self) -> str:
        return self._k("runs")

    @property
    def open_runs(self) -> str:
        return self._k("runs", "open")

    @property
    def tries(self) -> str:
        return self._k("tries")

    @property
    def events(self) -> str:
        return self._k("events")

    @property
    def active(self) -> str:
        return self._k("active")

    @property
    def last_attempt(self) -> str:
        return self._k("last_attempt")


class WorkerArgs(BaseModel):
    """A consolidator's command line: which run, the daemon's settings, where Redis and vLLM are.

    The daemon spawns its child with ``argv()``; a worker started by hand (or a
    second one on the same run) takes the same options, read back by ``parse``.
    """

    settings: Path  # JSON dump of the daemon's Settings
    run_id: int
    redis_url: str
    engine_url: str
    tenant: str = DEFAULT_TENANT  # whose memory: its keys, its adapters (daemon.tenants.Scope)

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "consolidator",
            "--settings", str(self.settings),
            "--run-id", str(self.run_id),
            "--redis-url", self.redis_url,
            "--engine-url", self.engine_url,
            "--tenant", self.tenant,
        ]  # fmt: skip

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> WorkerArgs:
        parser = argparse.ArgumentParser(prog="python -m consolidator")
        parser.add_argument("--settings", required=True, help="JSON dump of the daemon's settings")
        parser.add_argument("--run-id", type=int, required=True)
        parser.add_argument("--redis-url", required=True)
        parser.add_argument("--engine-url", required=True)
        parser.add_argument("--tenant", default=DEFAULT_TENANT)
        return cls.model_validate(vars(parser.parse_args(argv)))
