"""A consolidation worker as a service of its own: it takes queued runs from Redis.

For training on a GPU or a host apart from serving. The daemon runs with
``consolidation.runner: workers``: it queues a run when it is idle and there is
something new to learn, and promotes a run that passed. This loop takes each
queued run in turn and runs it as a child process, the same ``python -m
consolidator`` the daemon would start itself; the child claims the run with an
expiring lease (daemon.memory.lifecycle), so two workers never run one job, and
leaves its verdict in Redis. Every tenant's queue is looked at, in turn.
Adapters are written under ``state_dir`` (``adapters/``, a named tenant's
``tenants/<name>/adapters/``), which the serving engines must read (the same
path on shared storage).

    python -m consolidator.service --config /etc/memoryd/memoryd.yaml \\
        --engine-url http://vllm-host:8100

A worker that stops (SIGTERM) stops its child; the run's lease runs out and the
daemon counts it as one try, so the fact set is queued again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from pydantic import BaseModel

from daemon import logs
from daemon.config import Settings, load_settings
from daemon.contract import WorkerArgs
from daemon.memory.records import RunState
from daemon.memory.store import Store, connect
from daemon.scope import Scope, all_scopes
from daemon.supervisor import Child, Command

log = logging.getLogger("memoryd.worker")


class ServiceArgs(BaseModel):
    redis_url: str
    engine_url: str
    poll_s: float


def parse() -> tuple[Settings, ServiceArgs]:
    parser = argparse.ArgumentParser(prog="python -m consolidator.service")
    parser.add_argument("--config", help="memoryd's YAML config (else MEMORYD_CONFIG)")
    parser.add_argument("--redis-url", default="", help="default: redis.url from the config")
    parser.add_argument(
        "--engine-url",
        default="",
        help="a vLLM with the base model and runtime LoRA loading, for the teacher and the gates; "
        "default: the first engine.upstreams entry, else the managed port on this host",
    )
    parser.add_argument("--poll-s", type=float, default=2.0, help="between looks at the queue")
    raw = parser.parse_args()
    settings = load_settings(raw.config)
    redis_url = raw.redis_url or settings.redis.url
    if not redis_url:
        parser.error("a worker needs the daemon's Redis: set redis.url or pass --redis-url")
    engine_url = raw.engine_url or (
        settings.engine.upstreams[0]
        if settings.engine.upstreams
        else f"http://127.0.0.1:{settings.engine.port}"
    )
    return settings, ServiceArgs(redis_url=redis_url, engine_url=engine_url, poll_s=raw.poll_s)


async def run_one(
    settings: Settings, args: ServiceArgs, scope: Scope, run_id: int, stop: asyncio.Event
) -> int:
    """Run one queued run as a child; its exit code (daemon.contract), or -SIGTERM when stopped."""
    settings_file = scope.run_dir / f"worker-settings-{run_id}.json"
    settings.write_for_child(settings_file)
    argv = WorkerArgs(
        settings=settings_file,
        run_id=run_id,
        redis_url=args.redis_url,
        engine_url=args.engine_url,
        tenant=scope.tenant,
    ).argv()
    log_file = scope.logs_dir / f"consolidation-{run_id}.log"
    child = await Child.spawn(
        Command(name=f"consolidation {run_id}", argv=argv, log_file=log_file, stop_grace_s=20.0)
    )
    try:
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait(
            {stopping, asyncio.ensure_future(child.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if stopping in done:
            await child.stop()
        stopping.cancel()
        return await child.wait()
    finally:
        settings_file.unlink(missing_ok=True)


async def queued(store: Store) -> list[int]:
    """Ids of the runs that wait for a worker, oldest first; none while Redis cannot answer."""
    try:
        runs = await store.open_runs()
    except Exception as exc:  # Redis restarting: look again later
        log.warning("cannot read the queue: %s", exc)
        return []
    return [run.id for run, claimed in runs if run.state == RunState.queued and not claimed]


async def serve(settings: Settings, args: ServiceArgs, stop: asyncio.Event) -> None:
    """Take queued runs, one at a time, each tenant in turn, until ``stop`` is set."""
    redis = connect(args.redis_url, settings.redis)
    log.info("worker taking consolidations from %s, engine %s", args.redis_url, args.engine_url)
    try:
        while not stop.is_set():
            took = False
            try:  # end users' scopes appear as they are first used
                scopes = await all_scopes(redis, settings)
            except Exception as exc:  # Redis restarting: look again later
                log.warning("cannot list the tenants' scopes: %s", exc)
                scopes = []
            for scope in scopes:
                store = Store(redis, scope.prefix)
                for run_id in (await queued(store))[:1]:
                    took = True
                    log.info("consolidation %s of tenant %s taken", run_id, scope.tenant)
                    code = await run_one(settings, args, scope, run_id, stop)
                    log.info("consolidation %s: the consolidator exited with %s", run_id, code)
                if stop.is_set():
                    break
            if not took:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.poll_s)
    finally:
        await redis.aclose()


def main() -> None:
    settings, args = parse()
    logs.configure(settings.log_level, settings.log_format)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, args, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
