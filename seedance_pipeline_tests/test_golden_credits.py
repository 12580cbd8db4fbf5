"""Credits worked out by hand from the vendor's price table, against estimate and reservation.

Rates (credits per output second, EvoLink's table; 1080p is our stated assumption, the 720p rate
x 2.25):

    tier      reference video   480p    720p    1080p
    standard  no                6.251   13.50   30.375  (13.50 x 2.25)
    standard  yes               3.807   8.222   18.4995 (8.222 x 2.25)
    fast      no                5.063   10.935  -
    fast      yes               3.012   6.506   -

Without a reference video: seconds x rate. With reference videos: (max(reference seconds,
output seconds) + output seconds) x rate. Images, audio and web search add nothing.

Each expectation below is a literal with its arithmetic; none comes from the code's own table.
The same rows are planned from a real catalog (as `generation_requests` and `seedance-pipeline
plan` plan them) and sent, with their media uploaded, to the emulator over HTTP, whose
`usage.credits_reserved` must agree.
"""

from __future__ import annotations

import csv
import json
import subprocess

import httpx
import pytest

from seedance_pipeline.cli import main
from seedance_pipeline.media import ffmpeg
from seedance_pipeline.planning import PENDING_UPLOAD

from .model_ids import FI2V, FR2V, FT2V, I2V, R2V, T2V
from .pipeline_support import DAY, copy_sample_data, plan_day

# prompt_id: (catalog row, expected credits). Sample media: vid_wide lasts 4 s, vid_square and
# vid_hd 3 s each, clip_5s (made below) 5 s; img_* and aud_* are never billed.
GOLDEN = {
    "t2v-720p-4s": (dict(model=T2V, duration=4, quality="720p"), 54.0),  # 4 x 13.50
    "t2v-defaults": (dict(model=T2V), 67.5),  # 5 s 720p by default: 5 x 13.50
    "t2v-480p-10s": (dict(model=T2V, duration=10, quality="480p"), 62.51),  # 10 x 6.251
    "fast-t2v-480p-4s-web-search": (
        dict(model=FT2V, duration=4, quality="480p", web_search="true"),
        20.252,  # 4 x 5.063; searches are billed per search run, not estimated
    ),
    "fast-t2v-720p-15s": (dict(model=FT2V, duration=15, quality="720p"), 164.025),  # 15 x 10.935
    "i2v-720p-8s": (
        dict(model=I2V, duration=8, quality="720p", image_ids="img_product"),
        108.0,  # 8 x 13.50
    ),
    "fast-i2v-480p-6s-two-images": (
        dict(model=FI2V, duration=6, quality="480p", image_ids="img_product|img_last_frame"),
        30.378,  # 6 x 5.063
    ),
    "r2v-720p-10s-5s-reference": (
        dict(model=R2V, duration=10, quality="720p", video_ids="clip_5s"),
        164.44,  # (max(5, 10) + 10) x 8.222 = 20 x 8.222 (the vendor's own example)
    ),
    "r2v-480p-4s-9s-of-references": (
        dict(model=R2V, duration=4, quality="480p", video_ids="clip_5s|vid_wide"),
        49.491,  # (max(5 + 4, 4) + 4) x 3.807 = 13 x 3.807
    ),
    "fast-r2v-720p-5s-3s-reference-and-audio": (
        dict(
            model=FR2V,
            duration=5,
            quality="720p",
            image_ids="img_product",
            video_ids="vid_hd",
            audio_ids="aud_jingle",
        ),
        65.06,  # (max(3, 5) + 5) x 6.506 = 10 x 6.506
    ),
    "fast-r2v-480p-4s-10s-of-references": (
        dict(model=FR2V, duration=4, quality="480p", video_ids="vid_wide|vid_square|vid_hd"),
        42.168,  # (max(4 + 3 + 3, 4) + 4) x 3.012 = 14 x 3.012
    ),
    "r2v-1080p-5s-image-only": (
        dict(model=R2V, duration=5, quality="1080p", image_ids="img_product"),
        151.875,  # 5 x 30.375 (assumed 1080p rate: 13.50 x 2.25)
    ),
    "r2v-1080p-6s-4s-reference": (
        dict(model=R2V, duration=6, quality="1080p", video_ids="vid_wide"),
        221.994,  # (max(4, 6) + 6) x 18.4995 = 12 x 18.4995 (assumed: 8.222 x 2.25)
    ),
}
COLUMNS = ["prompt_id", "scheduled_date", "model", "prompt", "duration", "quality"]
COLUMNS += ["image_ids", "video_ids", "audio_ids", "web_search"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The sample data plus a 5 s reference clip, with the golden rows as the prompt catalog."""
    data = copy_sample_data(tmp_path_factory.mktemp("golden") / "data")
    clip = data / "media" / "clip_5s.mp4"
    subprocess.run(
        [ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=864x496:rate=24:duration=5"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-an", str(clip)],
        check=True,
    )
    with (data / "catalog" / "media.csv").open("a") as fh:
        fh.write("clip_5s,video,../media/clip_5s.mp4,,,,,\n")
    with (data / "catalog" / "prompts.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        for prompt_id, (row, _) in GOLDEN.items():
            writer.writerow(
                {"prompt_id": prompt_id, "scheduled_date": DAY, "prompt": "a lighthouse"} | row
            )
    return data


@pytest.fixture(scope="module")
def plan(data_dir):
    """The golden rows planned from the catalogs, as `generation_requests` plans them."""
    rows = plan_day(data_dir)
    assert all(row.accepted for row in rows.values()), [row.errors for row in rows.values()]
    return rows


@pytest.mark.parametrize("prompt_id", GOLDEN)
def test_the_pipeline_estimates_the_hand_computed_credits(plan, prompt_id):
    assert plan[prompt_id].estimated_credits == pytest.approx(GOLDEN[prompt_id][1], abs=1e-9)


def test_the_plan_total_is_the_sum_of_the_hand_computed_credits(plan, data_dir, capsys):
    # 54 + 67.5 + 62.51 + 20.252 + 164.025 + 108 + 30.378 + 164.44 + 49.491 + 65.06 + 42.168
    # + 151.875 + 221.994
    total = 1201.693
    assert sum(expected for _, expected in GOLDEN.values()) == pytest.approx(total)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEEDANCE_DATA_DIR", str(data_dir))
        assert main(["plan", str(data_dir / "catalog" / "prompts.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["estimated_credits_total"] == pytest.approx(total)


def test_the_emulator_reserves_the_hand_computed_credits(plan, data_dir, emulator, api_key):
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=emulator, headers=headers, timeout=30) as http:
        uploaded: dict[str, str] = {}

        def hosted(url: str) -> str:
            if url.startswith(PENDING_UPLOAD) and url not in uploaded:
                path = data_dir / url.removeprefix(PENDING_UPLOAD)
                answer = http.post(
                    "/api/v1/files/upload/stream", files={"file": (path.name, path.read_bytes())}
                )
                uploaded[url] = answer.raise_for_status().json()["data"]["file_url"]
            return uploaded.get(url, url)

        reserved = {}
        for prompt_id in GOLDEN:
            body = dict(plan[prompt_id].body)
            for field in ("image_urls", "video_urls", "audio_urls"):
                if field in body:
                    body[field] = [hosted(u) for u in body[field]]
            answer = http.post("/v1/videos/generations", json=body)
            assert answer.status_code == 200, answer.text
            reserved[prompt_id] = answer.json()["usage"]["credits_reserved"]
    assert reserved == pytest.approx({p: expected for p, (_, expected) in GOLDEN.items()})
