"""The /ui dashboard in real Chromium against a real daemon.

One daemon for the module: recurring traffic, then operator-started runs with a
small recipe and no gates (what is shown is under test here, not what is learned).
The tests run in order and share its state.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.harness import (
    MEMORYD,
    NO_GATES,
    SMALL_RECIPE,
    Daemon,
    deliver_recurring,
    write_config,
)

CHROMIUM = "/usr/bin/chromium"
FACTS = [
    "The archivist of Saltmere Library is Petra Quill.",
    "The reading room of Saltmere Library closes at six.",
    "The lighthouse of Saltmere is painted green.",
]
RUN_TIMEOUT_S = 400


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium (Playwright's own download is not used), for this module only.

    pytest-playwright's browser lives for the whole session, and its event loop
    would then still run under the asyncio tests of later modules.
    """
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def dash(make_daemon: Callable[..., Daemon], tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    config = tmp_path_factory.mktemp("dashboard-config") / "memoryd.yaml"
    write_config(config, {**SMALL_RECIPE, "epochs": 1, "replay_examples": 8}, NO_GATES)
    daemon = make_daemon(
        "dashboard",
        extra_env={"MEMORYD_CONFIG": str(config)},
        consolidation__idle_after_s="100000",
        consolidation__min_conversations="3",
    )
    deliver_recurring(daemon.openai(), FACTS)
    deadline = time.monotonic() + 60
    while len(facts(daemon)) < len(FACTS) and time.monotonic() < deadline:
        time.sleep(0.5)
    return daemon


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations
    yield page
    page.close()


def facts(daemon: Daemon) -> dict[str, dict[str, Any]]:
    return {f["text"]: f for f in daemon.admin("GET", "/admin/facts").json()["facts"]}


def test_memory_page_shows_recurring_facts(dash: Daemon, page: Page) -> None:
    page.goto(dash.url + "/ui/memory")
    rows = page.locator("#facts tr.fact")
    expect(rows).to_have_count(len(FACTS))
    for text in FACTS:
        row = rows.filter(has_text=text)
        expect(row.locator(".badge.pending")).to_be_visible()
        expect(row.locator("td.num").first).to_have_text("3")  # distinct conversations
    expect(page.locator("#passages tr.passage")).to_have_count(len(FACTS))
    expect(page.locator("#passages .asked").first).to_contain_text("asked:")

    page.fill("#search", "lighthouse")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("painted green")


def test_consolidation_progress_advances_live_to_promoted(dash: Daemon, page: Page) -> None:
    page.goto(dash.url + "/ui/consolidation")
    expect(page.locator("#live-state")).to_have_text("idle")
    run = dash.admin("POST", "/admin/consolidate").json()["run"]

    phases, steps = [], []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        state, phase = page.inner_text("#live-state"), page.inner_text("#live-phase")
        shown = page.inner_text("#live-steps")
        if phase and phase not in phases:
            phases.append(phase)
        if shown and shown not in steps:
            steps.append(shown)
        if state in ("promoted", "rejected", "failed"):
            break
        time.sleep(0.2)
    assert state == "promoted", dash.tail()
    assert [p for p in ("data", "train", "evaluate") if p in phases] == [
        "data",
        "train",
        "evaluate",
    ]
    numbers = [tuple(map(int, re.findall(r"\d+", s))) for s in steps]
    assert len(numbers) >= 2 and all(total == numbers[0][1] for _, total in numbers), steps
    assert [done for done, _ in numbers] == sorted({done for done, _ in numbers}), steps
    expect(page.locator(f'#runs li[data-run="{run}"] .badge')).to_have_text("promoted")
    expect(page.locator(f'#runs li[data-run="{run}"] table.gates tr.pass')).not_to_have_count(0)

    # The CLI follows the same feed: the same training progress, the same end.
    follow = dash.cli("consolidations", "follow", str(run), "--json")
    assert follow.returncode == 0, follow.stderr
    events = [json.loads(line) for line in follow.stdout.splitlines()]
    assert events[-1]["step"] == "promoted"
    cli_steps = {
        (e["detail"]["completed"], e["detail"]["total"]) for e in events if e["step"] == "progress"
    }
    assert set(numbers) <= cli_steps


def test_forget_and_pin_from_the_memory_page(dash: Daemon, page: Page) -> None:
    page.goto(dash.url + "/ui/memory")
    forgotten, pinned = FACTS[2], FACTS[0]
    row = page.locator("#facts tr.fact", has_text=forgotten)
    expect(row.locator(".badge.consolidated")).to_have_text("in v1")
    row.locator("button.forget").click()
    expect(page.locator("#facts tr.fact", has_text=forgotten).locator(".badge")).to_have_text(
        "forgotten"
    )
    page.locator("#facts tr.fact", has_text=pinned).locator("button.pin").click()
    expect(page.locator("#facts tr.fact", has_text=pinned).locator(".badge.pinned")).to_be_visible()

    stored = facts(dash)
    assert stored[pinned]["pinned"] is True
    # The forgotten fact keeps its record, not its words.
    gone = [f for f in stored.values() if f["status"] == "forgotten"]
    assert [(f["text"], f["reason"]) for f in gone] == [("", "forgotten by the operator")]
    assert forgotten not in str(stored)
    expect(page.locator("#facts tr.fact.forgotten")).to_have_count(1)


def test_roll_back_an_adapter(dash: Daemon, page: Page) -> None:
    waited = subprocess.run(
        [MEMORYD, "consolidate", "--wait"],
        env=dash.env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert waited.returncode == 0, waited.stderr
    assert "consolidation 2: promoted mem-v2" in waited.stdout
    assert re.search(r"run 2: promoted", waited.stdout), waited.stdout
    second = 2
    page.goto(dash.url + "/ui/adapters")
    expect(page.locator("#serving")).to_have_text(f"mem-v{second}")
    newest = page.locator(f'tr.adapter[data-version="{second}"]')
    expect(newest).not_to_contain_text(FACTS[2])  # forgotten before this run

    # v1 held the forgotten fact: retired once v2 replaced it.
    expect(page.locator('tr.adapter[data-version="1"]')).to_have_count(0)
    assert not (dash.state_dir / "adapters" / "v1").exists()

    # A copy of v2 as v3 is promoted from its row, then v2 rolled back to from its own.
    shutil.copytree(dash.state_dir / "adapters" / "v2", dash.state_dir / "adapters" / "v3")
    page.goto(dash.url + "/ui/adapters")
    page.locator('tr.adapter[data-version="3"] button.activate').click()
    expect(page.locator("#serving")).to_have_text("mem-v3")
    page.locator(f'tr.adapter[data-version="{second}"] button.activate').click()
    expect(page.locator("#serving")).to_have_text(f"mem-v{second}")
    assert dash.admin("GET", "/admin/adapters").json()["active"] == f"mem-v{second}"
