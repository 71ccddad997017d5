"""Screenshots of the /ui dashboard in a realistic state, for docs/screenshots/.

A real daemon (vLLM on this machine) gets the made-up facts of bench/facts.tsv and
two documents of the documents suite in recurring conversations, then several
consolidations with a small recipe: one under the default gates (the 135M model
usually fails them: a rejection with its reasons), then, restarted without gates,
two promoted runs around a forgotten fact and a pin, a roll back, and a run
caught mid-training. Takes about a quarter of an hour on two CPU cores.

    .venv/bin/python -m bench.screenshots [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from bench.documents import deliver, load
from tests.harness import (
    NO_GATES,
    ROOT,
    SMALL_RECIPE,
    Daemon,
    daemon_env,
    deliver_recurring,
    wait_for_run,
    write_config,
)

CHROMIUM = "/usr/bin/chromium"
DOCUMENTS = ["tarrowmere", "fernhollow-foods-leave"]


def facts_tsv() -> list[str]:
    lines = (ROOT / "bench" / "facts.tsv").read_text().splitlines()
    return [line.split("\t")[0] for line in lines if line and not line.startswith("#")]


def start(state: Path, model: Path, config: Path) -> Daemon:
    env, port = daemon_env(
        state, model, consolidation__idle_after_s="100000", consolidation__min_conversations="3"
    )
    env["MEMORYD_CONFIG"] = str(config)
    daemon = Daemon(state, port, env)
    daemon.start()
    return daemon


def run(daemon: Daemon) -> dict[str, object]:
    run_id = daemon.admin("POST", "/admin/consolidate").json()["run"]
    return wait_for_run(daemon, 1200, run_id)


def shot(page: Page, url: str, path: Path) -> None:
    page.goto(url)
    page.wait_for_timeout(800)  # the plots draw after load
    page.screenshot(path=str(path), full_page=True)
    print("wrote", path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = Path(os.environ.get("MEMORYD_TEST_MODEL", ROOT / "var/models/SmolLM2-135M-Instruct"))
    work = Path(tempfile.mkdtemp(prefix="memoryd-screens-"))
    strict, lax = work / "strict.yaml", work / "lax.yaml"
    write_config(strict, SMALL_RECIPE, {})
    write_config(lax, SMALL_RECIPE, NO_GATES)

    daemon = start(work / "state", model, strict)
    try:
        client = daemon.openai()
        deliver_recurring(client, facts_tsv())
        docs = [d for d in load(ROOT / "bench" / "documents") if d.slug in DOCUMENTS]
        deliver(client, docs)
        time.sleep(5)  # the observer's queue drains
        print("run 1:", run(daemon)["state"])
    finally:
        daemon.stop()

    daemon = start(work / "state", model, lax)
    try:
        print("run 2:", run(daemon)["state"])
        facts = daemon.admin("GET", "/admin/facts").json()["facts"]
        daemon.admin("DELETE", f"/admin/facts/{facts[0]['id']}")
        daemon.admin("PUT", f"/admin/facts/{facts[1]['id']}/pin")
        print("run 3:", run(daemon)["state"])
        daemon.admin("POST", "/admin/adapters/2/activate")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            shot(page, daemon.url + "/ui/memory", args.out / "memory.png")
            shot(page, daemon.url + "/ui/adapters", args.out / "adapters.png")
            page.goto(daemon.url + "/ui/consolidation")
            last = daemon.admin("POST", "/admin/consolidate").json()["run"]
            page.wait_for_function(
                "document.getElementById('live-steps').textContent.includes('step')",
                timeout=900_000,
            )
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "consolidation.png"), full_page=True)
            print("wrote", args.out / "consolidation.png")
            browser.close()
        wait_for_run(daemon, 1200, last)
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
