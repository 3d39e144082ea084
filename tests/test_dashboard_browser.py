"""The dashboard in a real browser: headless Chromium, driven by Selenium through the system's
chromedriver, against a real runtime on a real database.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them);
without them this test is skipped, saying so. ``DASHBOARD_SCREENSHOT=path`` also saves the
screenshot there (the README's is made that way).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import servers

from discord_actor import RunContext, actor
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


@actor(platform="none")
async def moderation_sweep(ctx: RunContext) -> None:
    if ctx.run_id % 3 == 0:
        raise RuntimeError("Discord answered 503 while listing members")


async def seed_history(database: Database) -> None:
    """A day of earlier runs, so that the timelines show what a day looks like."""
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


def browse(url: str, screenshot: Path) -> dict[str, Any]:
    """Load the dashboard, log in, pause feed_sync and see it paused; save a screenshot."""
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,860", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    found: dict[str, Any] = {}
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

        driver.find_element(By.LINK_TEXT, "Log in").click()
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()

        def click_pause(d: Any) -> bool:
            d.find_element(By.CSS_SELECTOR, "#actor-feed_sync button[data-action=pause]").click()
            return True

        wait.until(click_pause)
        wait.until(lambda d: d.find_element(By.ID, "actor-feed_sync")
                   .get_attribute("data-state") == "paused")
        row = driver.find_element(By.ID, "actor-feed_sync")
        found["state"] = row.get_attribute("data-state")
        found["badge"] = row.find_element(By.CSS_SELECTOR, ".badge").text
        found["notice"] = driver.find_element(By.CSS_SELECTOR, ".notice").text
        found["resume"] = len(row.find_elements(By.CSS_SELECTOR, "button[data-action=resume]"))
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
    hourly = ScheduleConfig(type="cron", timezone="Europe/Berlin", expression="0 * * * *")
    actors = {"feed_sync": (feed_sync, every), "db_report": (db_report, hourly),
              "moderation_sweep": (moderation_sweep, every)}
    configs = [(impl, actor_config(name, schedule=schedule, platform="none",
                                   max_connections=2 if name == "db_report" else 1))
               for name, (impl, schedule) in actors.items()]
    assembly = servers.assembly_for(database, configs, http=http)
    runtime = await assembly.start()
    try:
        await seed_history(database)
        await asyncio.sleep(4)  # a few live runs, a failed one among them
        screenshot = tmp_path / "dashboard.png"
        found = await asyncio.to_thread(browse, f"http://127.0.0.1:{http.port}/", screenshot)
        task = await runtime.store.operator.task("feed_sync")
    finally:
        await assembly.stop()
    assert found["title"] == "Actors · discord-actor"
    assert found["actors"] == ["feed_sync", "db_report", "moderation_sweep"]
    assert found["marks"] >= 96  # a mark per run of the last day
    assert found["buttons_before_login"] == 0  # reading is open, acting needs the token
    assert found["state"] == "paused" and found["badge"] == "paused"
    assert found["notice"] == "paused feed_sync" and found["resume"] == 1
    assert task is not None and task["paused"]
    assert "paused by the holder of the HTTP token via dashboard" in task["paused_reason"]
    assert "Traceback" in found.get("run_page", "") or "RuntimeError" in found.get("run_page", "")
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["DASHBOARD_SCREENSHOT"])
