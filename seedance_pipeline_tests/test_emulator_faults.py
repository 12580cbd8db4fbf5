"""The emulator's injected gateway and CDN misbehaviour, over real loopback HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

import av
import httpx
import pytest

from seedance_pipeline.emulator import DEFAULT_API_KEY
from seedance_pipeline.emulator.config import PRICES
from seedance_pipeline.emulator.render import FPS
from seedance_pipeline.media import measure
from seedance_pipeline.seedance import PriceTable

T2V = "seedance-2.0-text-to-video"
AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
BODY = {"model": T2V, "prompt": "a paper boat on a pond", "duration": 4, "quality": "480p"}
RESERVED = PriceTable.load().estimate_credits(BODY)


def create(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/videos/generations", json=BODY, headers=AUTH)


def poll(url: str, task_id: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/tasks/{task_id}", headers=AUTH)


def ledger(url: str) -> dict:
    return httpx.get(f"{url}/emulator/ledger").json()


def completed(url: str, task_id: str) -> dict:
    """Poll until the task's answer is completed with results (faults may delay that)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = poll(url, task_id)
        if r.status_code == 200 and r.headers["content-type"].startswith("application/json"):
            answer = r.json()
            if answer.get("status") == "completed" and answer.get("results"):
                return answer
        time.sleep(0.05)
    raise AssertionError(f"{task_id} did not complete")


def made_task(url: str) -> str:
    """Create a task through faults that hide its id; the ledger knows it."""
    create(url)
    return ledger(url)["tasks"][-1]["id"]


def test_post_create_gateway_errors_bill_the_task_they_hide(start_emulator):
    url = start_emulator(post_create_error_rate=1.0)
    answers = [create(url) for _ in range(8)]
    assert {r.status_code for r in answers} <= {502, 503, 504}
    kinds = {r.headers["content-type"].split(";")[0] for r in answers}
    assert kinds == {"text/html", "application/json"}, kinds
    html = next(r for r in answers if r.headers["content-type"].startswith("text/html"))
    assert f"<h1>{html.status_code} " in html.text
    book = ledger(url)
    assert len(book["tasks"]) == 8
    assert all(t["create_fault"].startswith("gateway_") for t in book["tasks"])
    assert [int(t["create_fault"].split("_")[1]) for t in book["tasks"]] == [
        r.status_code for r in answers
    ]
    assert book["credits_remaining"] == pytest.approx(100000.0 - 8 * RESERVED)
    done = completed(url, book["tasks"][0]["id"])
    assert done["usage"]["credits_reserved"] == RESERVED


def test_garbled_create_answers_are_200_without_a_usable_task(start_emulator):
    url = start_emulator(garbled_create_rate=1.0)
    answers = [create(url) for _ in range(9)]
    assert all(r.status_code == 200 for r in answers)
    faults = [t["create_fault"] for t in ledger(url)["tasks"]]
    assert set(faults) == {"garbled_non_json", "garbled_truncated", "garbled_schemaless"}
    for r, fault in zip(answers, faults, strict=True):
        if fault == "garbled_schemaless":
            assert "id" not in r.json() and "status" not in r.json()
        else:
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.text)
    assert ledger(url)["credits_remaining"] == pytest.approx(100000.0 - 9 * RESERVED)


def test_faults_are_seeded_and_listed_per_task(start_emulator, tmp_path):
    rates = {"post_create_error_rate": 0.3, "poll_fault_rate": 0.5, "link_fault_rate": 0.5}
    books = []
    for run in ("a", "b"):
        url = start_emulator(state_dir=tmp_path / run, **rates)
        for _ in range(12):
            create(url)
        books.append(
            [(t["create_fault"], t["poll_fault"], t["link_fault"]) for t in ledger(url)["tasks"]]
        )
    assert books[0] == books[1]
    assert {c for c, _, _ in books[0]} > {None}
    assert {p for _, p, _ in books[0]} > {None}
    assert {li for _, _, li in books[0]} > {None}


@pytest.mark.parametrize("kind", ["queued", "transient_404", "non_json", "huge_body"])
def test_poll_faults_alter_the_first_polls_then_stop(start_emulator, kind):
    url = start_emulator(poll_fault_rate=1.0, poll_faults=(kind,), poll_fault_polls=2)
    task_id = create(url).json()["id"]
    first = [poll(url, task_id) for _ in range(2)]
    for r in first:
        if kind == "queued":
            assert (r.status_code, r.json()["status"]) == (200, "queued")
        elif kind == "transient_404":
            assert r.status_code == 404
            assert r.json()["error"]["message"] == "Task not found or expired"
        elif kind == "non_json":
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        else:
            assert r.status_code == 200 and len(r.content) > 16 * 1024**2
    normal = poll(url, task_id)
    assert normal.status_code == 200 and len(normal.content) < 4096
    assert normal.json()["status"] in ("pending", "processing", "completed")
    entry = ledger(url)["tasks"][0]
    assert (entry["poll_fault"], entry["polls"], entry["poll_faults_served"]) == (kind, 3, 2)


def test_completed_without_results_on_the_first_completed_polls(start_emulator):
    url = start_emulator(
        poll_fault_rate=1.0, poll_faults=("completed_without_results",), poll_fault_polls=2
    )
    task_id = create(url).json()["id"]
    time.sleep(0.3)  # 4 s at 480p takes 0.06 s at this time scale
    answers = [poll(url, task_id).json() for _ in range(3)]
    assert [a["status"] for a in answers] == ["completed"] * 3
    assert ["results" in a for a in answers] == [False, False, True]


def test_foreign_host_link_heals_after_k_answers(start_emulator):
    url = start_emulator(
        link_fault_rate=1.0, link_faults=("foreign_host",), link_fault_heal_after=1
    )
    task_id = create(url).json()["id"]
    time.sleep(0.3)
    foreign = poll(url, task_id).json()["results"][0]
    assert urlsplit(foreign).hostname in ("127.0.0.2", "169.254.169.254")
    assert urlsplit(foreign).path == f"/results/{task_id}.mp4"
    own = poll(url, task_id).json()["results"][0]
    assert own.startswith(url)
    assert httpx.get(own).status_code == 200


def result(url: str, task_id: str) -> str:
    return completed(url, task_id)["results"][0]


def test_private_redirect_html_and_truncated_links(start_emulator, tmp_path):
    sizes = {}
    for kind in ("private_redirect", "html", "truncated", None):
        faults = {"link_fault_rate": 1.0, "link_faults": (kind,)} if kind else {}
        url = start_emulator(state_dir=tmp_path / str(kind), **faults)
        r = httpx.get(result(url, create(url).json()["id"]))
        if kind == "private_redirect":
            assert r.status_code == 302
            assert urlsplit(r.headers["location"]).hostname in ("169.254.169.254", "10.0.0.7")
        elif kind == "html":
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert r.text.startswith("<!DOCTYPE html>")
        else:
            saved = tmp_path / f"{kind}.mp4"
            saved.write_bytes(r.content)
            sizes[kind] = len(r.content)
    assert sizes["truncated"] == sizes[None] // 2
    assert measure(tmp_path / "None.mp4", "video").duration_s == pytest.approx(4, abs=0.1)
    assert frames(tmp_path / "None.mp4") == 4 * FPS
    assert frames(tmp_path / "truncated.mp4") < 3 * FPS  # its header still claims 4 s


def frames(path: Path) -> int:
    """Video frames that decode before the data ends or breaks."""
    count = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(video=0):
                count += 1
        except av.error.FFmpegError:
            pass
    return count


def test_endless_and_oversize_links_stream_past_any_sane_size(start_emulator, tmp_path):
    for kind in ("endless", "oversize"):
        url = start_emulator(state_dir=tmp_path / kind, link_fault_rate=1.0, link_faults=(kind,))
        with httpx.stream("GET", result(url, create(url).json()["id"])) as r:
            assert r.status_code == 200
            if kind == "oversize":
                assert int(r.headers["content-length"]) == 4 * 1024**3
            else:
                assert "content-length" not in r.headers
            received = 0
            for chunk in r.iter_bytes():
                received += len(chunk)
                if received > 8 * 1024**2:
                    break
        assert received > 8 * 1024**2


def test_slow_drip_sends_a_byte_per_interval(start_emulator):
    url = start_emulator(link_fault_rate=1.0, link_faults=("slow_drip",), link_drip_seconds=0.2)
    with httpx.stream("GET", result(url, create(url).json()["id"])) as r:
        assert int(r.headers["content-length"]) > 10_000
        arrivals = []
        for chunk in r.iter_raw():
            arrivals += [time.monotonic()] * len(chunk)
            if len(arrivals) >= 4:
                break
    assert arrivals[3] - arrivals[0] >= 0.5


def test_link_fault_heals_after_k_fetches_and_ledger_counts(start_emulator, tmp_path):
    url = start_emulator(link_fault_rate=1.0, link_faults=("truncated",), link_fault_heal_after=2)
    task_id = create(url).json()["id"]
    link = result(url, task_id)
    sizes = [len(httpx.get(link).content) for _ in range(3)]
    assert sizes[0] == sizes[1] == sizes[2] // 2
    (tmp_path / "healed.mp4").write_bytes(httpx.get(link).content)
    assert measure(tmp_path / "healed.mp4", "video").duration_s == pytest.approx(4, abs=0.1)
    entry = ledger(url)["tasks"][0]
    assert (entry["link_fault"], entry["link_fetches"], entry["link_faults_served"]) == (
        "truncated",
        4,
        2,
    )


def test_price_table_flag_prices_from_the_emulators_own_table(tmp_path):
    table = json.loads(PRICES.read_text())
    table["credits_per_second"]["standard"]["without_reference_video"]["480p"] = 9.0
    custom = tmp_path / "prices.json"
    custom.write_text(json.dumps(table))
    cli = Path(sys.executable).with_name("seedance-pipeline")
    args = ["emulator", "--port", "0", "--seed", "1", "--state-dir", str(tmp_path / "state")]
    args += ["--price-table", str(custom), "--time-scale", "0.01", "--post-create-error-rate", "1"]
    proc = subprocess.Popen([cli, *args], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split(" listening on ")[1].split()[0]  # printed when up
        assert create(url).status_code in (502, 503, 504)
        entry = ledger(url)["tasks"][0]
        assert entry["credits_reserved"] == 36.0 != RESERVED
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_default_table_is_the_bundled_one_plus_an_assumed_mini_tier():
    bundled = json.loads(files("seedance_pipeline.seedance").joinpath("prices.json").read_text())
    own = json.loads(PRICES.read_text())
    mini = own["credits_per_second"].pop("mini")
    assert own == bundled
    fast = bundled["credits_per_second"]["fast"]
    for column, rates in mini.items():
        assert set(rates) == {"480p", "720p"}
        assert rates == {q: round(r * 0.7, 4) for q, r in fast[column].items()}
