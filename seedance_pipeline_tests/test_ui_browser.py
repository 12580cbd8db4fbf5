"""After `seedance-pipeline demo`, the Dagster UI shows the sample days (headless Chromium).

Drives Debian's chromium through Playwright (no browser download). Without the browser the test
skips with the reason, except in CI (CI=true), where `.ci/run` installs it and a skip would hide
a missing install step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .fault_support import free_port
from .pipeline_support import copy_sample_data

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DAYS = ["2026-11-20", "2026-11-21", "2026-11-22"]
UI_TIMEOUT_MS = 120_000


def _chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    reason = f"no {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _wait_until_served(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"dagster-webserver did not answer in 180 s:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(900)
def test_after_the_demo_the_ui_shows_three_days_of_videos_and_their_check(tmp_path):
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    copy_sample_data(tmp_path / "data")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "EVOLINK_", "SEEDANCE_"))
    }
    # The README's commands, from the project folder: no DAGSTER_HOME, no SEEDANCE_DATA_DIR.
    demo = subprocess.run(
        [sys.executable, "-m", "seedance_pipeline.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    home = tmp_path / "dagster_home"
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")  # no first-visit pop-up

    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "webserver.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                "-m",
                "seedance_pipeline.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                url.rsplit(":", 1)[1],
            ],
            cwd=tmp_path,
            env=env | {"DAGSTER_HOME": str(home), "EVOLINK_API_KEY": "sk-evo-placeholder"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped whole below
        )
    try:
        _wait_until_served(url, server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/assets/generated_videos?view=partitions")
            page.get_by_text("Materialized (3)").wait_for(timeout=UI_TIMEOUT_MS)
            for day in DAYS:
                assert page.get_by_text(day, exact=True).count() >= 1, day
            page.screenshot(path=tmp_path / "generated_videos_partitions.png")

            page.goto(f"{url}/assets/generated_videos?view=events")
            page.get_by_text(f"Partition {DAYS[-1]} materialized").wait_for(timeout=UI_TIMEOUT_MS)
            for day in DAYS:  # one materialisation event listed per day
                assert page.get_by_text(day, exact=True).count() >= 1, day

            page.goto(f"{url}/assets/generated_videos?view=checks")
            page.get_by_text("videos_match_requests").first.wait_for(timeout=UI_TIMEOUT_MS)
            page.get_by_text("Passed", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
            page.screenshot(path=tmp_path / "generated_videos_check.png")
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
