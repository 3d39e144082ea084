"""The dashboard in a real browser: headless Chromium, driven by Selenium through the system's
chromedriver, against a real runtime on a real database, judged as a user reads it: times
relative with the exact one on hover, reasons shown whole, why an actor is broken, and
timelines scaled to the runs there are.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them);
without them this test is skipped, saying so. ``DASHBOARD_SCREENSHOT=path`` also saves the
screenshot there (docs/dashboard.png, on the dashboard page, is made that way).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import servers

from discord_actor import Actor, RunContext, actor
from discord_actor.config import HttpConfig, ScheduleConfig
from discord_actor.db import Database
from discord_actor.testing.harness import actor_config

TOKEN = "browser-test-operator-token"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the dashboard's browser test needs headless Chromium and its driver: "
    "apt-get install chromium chromium-driver (Debian; .ci/run installs them when missing)",
)


@actor(platform="console")
async def feed_sync(ctx: RunContext) -> None:
    await ctx.post(f"synced feed, run {ctx.run_id}")


@actor(platform="none")
async def db_report(ctx: RunContext) -> None:
    async with ctx.db() as conn:
        ctx.state["tables"] = await conn.fetchval("SELECT count(*) FROM pg_tables")


_sweeps = itertools.count(1)


@actor(platform="none")
async def moderation_sweep(ctx: RunContext) -> None:
    if next(_sweeps) % 3 == 0:  # one run in three: never enough in a row to trip the breaker
        raise RuntimeError("Discord answered 503 while listing members")


@actor(platform="none")
async def inbox_poll(ctx: RunContext) -> None:
    raise ConnectionError("the IMAP server closed the connection")


class InboxDigest(Actor):
    async def setup(self) -> None:
        raise ConnectionError("IMAP login refused for digest@example.org")

    async def run(self, ctx: RunContext) -> None:
        raise AssertionError("a broken actor does not run")


@actor(platform="none")
async def welcome(ctx: RunContext) -> None:
    ctx.state["greeted"] = ctx.run_id


@actor(platform="none")
async def launch_note(ctx: RunContext) -> None:
    ctx.state["posted"] = True


async def seed_history(database: Database) -> None:
    """A day of earlier runs, so that the timelines show what a day looks like, and the run a
    ``once`` of 2020 had when a server first started, long after its time."""
    schema = database.schema
    await database.pool.execute(
        f"""
        INSERT INTO {schema}.runs (task_id, scheduled_for, trigger, status, started_at,
                                   finished_at, duration_ms, error_type, error_message)
        SELECT t.id, slot, 'schedule',
               CASE WHEN t.actor = 'moderation_sweep' AND n % 9 = 0 THEN 'failed'
                    WHEN t.actor = 'db_report' AND n % 23 = 0 THEN 'timed_out'
                    ELSE 'succeeded' END,
               slot + make_interval(secs => CASE WHEN n % 17 = 0 THEN 240 ELSE 0.02 END),
               slot + interval '1 second', 35.0,
               CASE WHEN t.actor = 'moderation_sweep' AND n % 9 = 0 THEN 'RuntimeError' END,
               CASE WHEN t.actor = 'moderation_sweep' AND n % 9 = 0
                    THEN 'Discord answered 503 while listing members' END
        FROM {schema}.tasks t,
             generate_series(1, 96) AS n,
             LATERAL (SELECT now() - make_interval(mins => 15 * n) AS slot) s
        WHERE t.actor IN ('feed_sync', 'db_report', 'moderation_sweep')
        """
    )
    await database.pool.execute(
        f"""
        INSERT INTO {schema}.runs (task_id, scheduled_for, trigger, status, started_at,
                                   finished_at, duration_ms)
        SELECT t.id, '2020-01-01 08:00+00', 'catch_up', 'succeeded',
               now() - interval '20 seconds', now() - interval '20 seconds', 12.0
        FROM {schema}.tasks t WHERE t.actor = 'launch_note' AND t.key IS NULL
        """
    )
    await database.pool.execute(
        f"""
        UPDATE {schema}.tasks SET last_status = 'succeeded', last_run_at = now() - interval '20 s'
        WHERE actor = 'launch_note' AND key IS NULL
        """
    )


# What the browser reads of one actor's row: its cells' texts, its times and its timeline.
READ_ROW = """
const row = document.getElementById("actor-" + arguments[0]);
const svg = row.querySelector("svg.timeline");
const column = ["actor", "state", "next_run", "last_result"];
const times = [...row.querySelectorAll("time")].map(t => ({
    cell: column[t.closest("td").cellIndex], text: t.textContent, title: t.title,
    datetime: t.getAttribute("datetime")}));
const reasons = [...row.querySelectorAll(".reason")].map(r => ({
    text: r.textContent, clipped: r.scrollWidth > r.clientWidth + 1}));
return {
    state: row.cells[1].innerText,
    next_run: row.cells[2].innerText,
    last_result: row.cells[3].innerText,
    text: row.innerText, times: times, reasons: reasons,
    width: svg.viewBox.baseVal.width,
    marks: [...svg.querySelectorAll(".mark rect")].map(r => parseFloat(r.getAttribute("x"))),
    late: [...svg.querySelectorAll(".mark line.late")].map(l => [
        parseFloat(l.getAttribute("x1")), parseFloat(l.getAttribute("x2"))]),
    span: svg.dataset.span};
"""


def browse(url: str, screenshot: Path) -> dict[str, Any]:
    """Load the dashboard, read its rows, see it refresh, log in, pause feed_sync and see it
    paused; save a screenshot."""
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1130", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    found: dict[str, Any] = {}

    def row(name: str) -> dict[str, Any]:
        read: dict[str, Any] = driver.execute_script(READ_ROW, name)
        return read

    try:
        # The page reloads its content every few seconds: an element found may be replaced.
        wait = WebDriverWait(driver, 20, ignored_exceptions=[StaleElementReferenceException])
        driver.get(url)
        wait.until(seen.presence_of_element_located((By.ID, "actor-feed_sync")))
        found["title"] = driver.title
        found["actors"] = [row.get_attribute("data-actor") for row in
                           driver.find_elements(By.CSS_SELECTOR, "tr[data-actor]")]
        found["marks"] = len(driver.find_elements(By.CSS_SELECTOR, "#actor-feed_sync .mark"))
        found["buttons_before_login"] = len(driver.find_elements(By.CSS_SELECTOR, "button.btn"))
        found["rows"] = {name: row(name) for name in found["actors"]}

        # The refresh script brings the relative times up to date with the rest of the page.
        def last_result(name: str) -> str | None:
            times = [t["text"] for t in row(name)["times"] if t["cell"] == "last_result"]
            return times[0] if times else None

        first = last_result("inbox_poll")  # paused: its last run stays where it is
        if first is not None:
            wait.until(lambda d: last_result("inbox_poll") != first)
        found["refreshed"] = (first, last_result("inbox_poll"))

        driver.find_element(By.LINK_TEXT, "Log in").click()
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()

        def click_pause(d: Any) -> bool:
            d.find_element(By.CSS_SELECTOR, "#actor-feed_sync button[data-action=pause]").click()
            return True

        wait.until(click_pause)
        wait.until(lambda d: d.find_element(By.ID, "actor-feed_sync")
                   .get_attribute("data-state") == "paused")
        paused = driver.find_element(By.ID, "actor-feed_sync")
        found["state"] = paused.get_attribute("data-state")
        found["badge"] = paused.find_element(By.CSS_SELECTOR, ".badge").text
        found["notice"] = driver.find_element(By.CSS_SELECTOR, ".notice").text
        found["resume"] = len(paused.find_elements(By.CSS_SELECTOR, "button[data-action=resume]"))
        found["paused_row"] = row("feed_sync")
        driver.save_screenshot(str(screenshot))

        # A failed run's page shows its traceback.
        driver.get(f"{url}actors/moderation_sweep")
        failed = [a for a in driver.find_elements(By.CSS_SELECTOR, "table.runs tr")
                  if "failed" in a.text and a.find_elements(By.CSS_SELECTOR, "a")]
        if failed:
            failed[0].find_element(By.CSS_SELECTOR, "a").click()
            found["run_page"] = driver.find_element(By.TAG_NAME, "main").text
    finally:
        driver.quit()
    return found


async def test_an_operator_logs_in_and_pauses_an_actor_in_chromium(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_http import free_port

    monkeypatch.setenv("BROWSER_TEST_TOKEN", TOKEN)
    http = HttpConfig(enabled=True, port=free_port(), token_env="BROWSER_TEST_TOKEN")
    every = ScheduleConfig(type="interval", timezone="UTC", seconds=2)
    each_second = ScheduleConfig(type="interval", timezone="UTC", seconds=1)
    hourly = ScheduleConfig(type="cron", timezone="Europe/Berlin", expression="0 * * * *")
    berlin = ZoneInfo("Europe/Berlin")
    in_2020 = ScheduleConfig(type="once", timezone="Europe/Berlin",
                             at=datetime(2020, 1, 1, 9, tzinfo=berlin))
    actors = {"feed_sync": (feed_sync, every), "db_report": (db_report, hourly),
              "moderation_sweep": (moderation_sweep, every),
              "inbox_poll": (inbox_poll, each_second), "inbox_digest": (InboxDigest, hourly),
              "welcome": (welcome, each_second), "launch_note": (launch_note, in_2020)}
    configs = [(impl, actor_config(name, schedule=schedule, platform="none",
                                   max_connections=2 if name == "db_report" else 1,
                                   max_consecutive_failures=3 if name == "inbox_poll" else 5))
               for name, (impl, schedule) in actors.items()]
    assembly = servers.assembly_for(database, configs, http=http)
    runtime = await assembly.start()
    try:
        await seed_history(database)
        # A few live runs (a failed one among them), and inbox_poll's circuit breaker trips.
        deadline = time.monotonic() + 20
        await asyncio.sleep(6)
        while not (await runtime.store.operator.task("inbox_poll") or {}).get("paused"):
            assert time.monotonic() < deadline, "inbox_poll's circuit breaker did not trip"
            await asyncio.sleep(0.2)
        screenshot = tmp_path / "dashboard.png"
        found = await asyncio.to_thread(browse, f"http://127.0.0.1:{http.port}/", screenshot)
        task = await runtime.store.operator.task("feed_sync")
    finally:
        await assembly.stop()
    assert found["title"] == "Actors · discord-actor"
    assert found["actors"] == list(actors)
    assert found["marks"] >= 96  # a mark per run of the last day
    assert found["buttons_before_login"] == 0  # reading is open, acting needs the token
    assert found["state"] == "paused" and found["badge"] == "paused"
    assert found["notice"] == "paused feed_sync" and found["resume"] == 1
    assert task is not None and task["paused"]
    assert "paused by the holder of the HTTP token via dashboard" in task["paused_reason"]
    assert "Traceback" in found.get("run_page", "") or "RuntimeError" in found.get("run_page", "")
    assert screenshot.stat().st_size > 10_000
    for check in (times_are_relative, reasons_are_whole, timelines_are_scaled):
        check(found)
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["DASHBOARD_SCREENSHOT"])


def times_are_relative(found: dict[str, Any]) -> None:
    """Times read relative ("in 12 min", "3 s ago"), never as ISO strings of mixed offsets; the
    exact time and its zone are on hover; the refresh script keeps them current."""
    rows = found["rows"]
    shown = [r[cell] for r in rows.values() for cell in ("next_run", "last_result")]
    assert not [t for t in shown if re.search(r"\d{4}-\d\d-\d\dT\d\d:", t)], shown
    (report_next,) = [t for t in rows["db_report"]["times"] if t["cell"] == "next_run"]
    assert re.fullmatch(r"in \d+ (s|min)", report_next["text"]), report_next
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00:00 CES?T \(UTC\+0[12]:00, Europe/Berlin\)",
                        report_next["title"]), report_next
    slot = datetime.fromisoformat(report_next["datetime"])
    assert slot.utcoffset() == slot.astimezone(ZoneInfo("Europe/Berlin")).utcoffset()
    assert report_next["title"].startswith(slot.strftime("%Y-%m-%d %H:%M:%S"))
    (sweep_last,) = [t for t in rows["moderation_sweep"]["times"] if t["cell"] == "last_result"]
    assert re.fullmatch(r"now|\d+ s ago", sweep_last["text"]), sweep_last
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", sweep_last["title"]), sweep_last
    before, after = found["refreshed"]
    assert re.fullmatch(r"\d+ s ago", before) and re.fullmatch(r"\d+ s ago", after)


def reasons_are_whole(found: dict[str, Any]) -> None:
    """Pause reasons are shown whole (wrapped), a broken actor's row says why, and the next
    run's place says why none is coming."""
    rows = found["rows"]
    breaker = rows["inbox_poll"]
    assert breaker["reasons"] == [
        {"text": "circuit breaker: 3 consecutive failures", "clipped": False}]
    assert breaker["next_run"] == "paused"
    by_operator = found["paused_row"]
    reason = "paused by the holder of the HTTP token via dashboard from 127.0.0.1"
    assert by_operator["reasons"] == [{"text": reason, "clipped": False}]
    assert by_operator["next_run"] == "paused"
    broken = rows["inbox_digest"]
    assert broken["state"].startswith("broken")
    assert ("setup() failed: ConnectionError: IMAP login refused for digest@example.org"
            in broken["state"])
    assert broken["next_run"] == "broken"


def timelines_are_scaled(found: dict[str, Any]) -> None:
    """A fresh actor's few seconds of runs spread over its timeline, not a sliver at its end; a
    day of runs fills it; a once of 2020 run today has its mark on it and a short stub towards
    its slot, no "late" line across the whole bar."""
    rows = found["rows"]
    fresh = rows["welcome"]
    assert fresh["marks"] and min(fresh["marks"]) < fresh["width"] / 2, fresh
    assert re.fullmatch(r"last \d+ s", fresh["span"]), fresh["span"]
    day = rows["db_report"]
    assert day["span"] == "last 24 h" and min(day["marks"]) < day["width"] * 0.05
    once = rows["launch_note"]
    assert once["marks"] and all(0 <= x <= once["width"] for x in once["marks"])
    assert once["late"] and all(0 <= a < b <= once["width"] and b - a <= once["width"] * 0.05
                                for a, b in once["late"]), once
