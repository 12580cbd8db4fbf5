"""Generate the committed sample data set under `data/` (media files and the two catalogs).

Run from the repository root::

    python -m seedance_pipeline_tests.make_sample_data [--out DATA_DIR]

Everything is synthesised with the ffmpeg binary of the imageio-ffmpeg wheel (lavfi testsrc2 and
sine sources, bit-exact flags, one thread), so running it twice gives the same files. The
catalogs are written as CSV (`data/catalog/*.csv`) and as Parquet (`data/catalog/parquet/`),
with the same rows. See `data/README.md` for which rows the vendor's rules reject and why.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from seedance_pipeline.media import ffmpeg

from .model_ids import FI2V, FR2V, FT2V, I2V, R2V, T2V

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data"

_BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]
_QUIET = ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]


@dataclass(frozen=True)
class Media:
    """One file of `data/media/` and how to synthesise it."""

    media_id: str
    kind: str
    file: str
    args: tuple[str, ...]


def _image(w: int, h: int, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return ("-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=1", "-frames:v", "1", *extra)


def _video(w: int, h: int, fps: int, seconds: float) -> tuple[str, ...]:
    return (
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={w}x{h}:rate={fps}:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "48",
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "1",
        "-x264-params",
        "threads=1",
        "-movflags",
        "+faststart",
        "-an",
    )


def _audio(seconds: float, freq: int, codec: tuple[str, ...]) -> tuple[str, ...]:
    return (
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={freq}:sample_rate=8000:duration={seconds}",
        "-ac",
        "1",
        *codec,
    )


_MP3 = ("-c:a", "libmp3lame", "-b:a", "32k")
_WAV = ("-c:a", "pcm_s16le")

MEDIA: tuple[Media, ...] = (
    # Images the vendor accepts (jpeg, png, webp; 300..6000 px; aspect 0.4..2.5).
    Media("img_product", "image", "img_product_800x600.png", _image(800, 600)),
    Media("img_portrait", "image", "img_portrait_600x800.jpg", _image(600, 800, ("-q:v", "12"))),
    Media("img_wide", "image", "img_wide_1280x720.webp", _image(1280, 720, ("-quality", "40"))),
    Media(
        "img_last_frame", "image", "img_last_frame_1280x720.jpg", _image(1280, 720, ("-q:v", "14"))
    ),
    # Images it refuses.
    Media("img_tiny", "image", "img_tiny_200x200.png", _image(200, 200)),
    Media("img_banner", "image", "img_banner_1500x500.jpg", _image(1500, 500, ("-q:v", "14"))),
    Media("img_anim", "image", "img_anim_400x300.gif", _image(400, 300)),
    # Reference videos it accepts (mp4; frame pixels 409,600..2,086,876; 24..60 fps; 2..15 s).
    Media("vid_square", "video", "vid_square_640x640_24fps_3s.mp4", _video(640, 640, 24, 3)),
    Media("vid_wide", "video", "vid_wide_864x496_24fps_4s.mp4", _video(864, 496, 24, 4)),
    Media("vid_hd", "video", "vid_hd_1280x720_30fps_3s.mp4", _video(1280, 720, 30, 3)),
    # Reference videos it refuses.
    Media("vid_small", "video", "vid_small_480x360_24fps_3s.mp4", _video(480, 360, 24, 3)),
    Media("vid_15fps", "video", "vid_15fps_640x640_3s.mp4", _video(640, 640, 15, 3)),
    Media("vid_short", "video", "vid_short_640x640_24fps_1s.mp4", _video(640, 640, 24, 1)),
    # Reference audio: mp3/wav, 2..15 s.
    Media("aud_jingle", "audio", "aud_jingle_3s.mp3", _audio(3, 440, _MP3)),
    Media("aud_voice", "audio", "aud_voice_4s.wav", _audio(4, 660, _WAV)),
    Media("aud_blip", "audio", "aud_blip_1s.mp3", _audio(1, 880, _MP3)),
)

# A remote image: never fetched; its facts come from the catalog columns (all valid).
REMOTE_MEDIA = {
    "media_id": "remote_hero",
    "kind": "image",
    "uri": "https://example.com/seedance-samples/hero_1920x1080.jpg",
    "width": 1920,
    "height": 1080,
    "duration_s": None,
    "fps": None,
    "size_bytes": 412_345,
}

D1, D2, D3 = "2026-11-20", "2026-11-21", "2026-11-22"
SPRING, ALWAYS_ON = "spring-launch", "brand-always-on"


def _row(
    pid, date, model, prompt, *, images=(), videos=(), audios=(), duration=5, quality="720p",
    aspect="16:9", audio=True, web=False, callback=None, campaign=None,
):  # fmt: skip
    return {
        "prompt_id": pid,
        "scheduled_date": date,
        "model": model,
        "prompt": prompt,
        "image_ids": list(images),
        "video_ids": list(videos),
        "audio_ids": list(audios),
        "duration": duration,
        "quality": quality,
        "aspect_ratio": aspect,
        "generate_audio": audio,
        "web_search": web,
        "callback_url": callback,
        "campaign": campaign,
    }


PROMPTS: tuple[dict, ...] = (
    # ---- 2026-11-20 ------------------------------------------------------------------------
    _row(
        "d1-t2v-city-launch",
        D1,
        T2V,
        "A drone shot gliding over a rainy neon city at dusk, our new umbrella opening in slow "
        "motion on a rooftop, cinematic lighting",
        web=True,
        campaign=SPRING,
    ),
    _row(
        "d1-i2v-product-spin",
        D1,
        I2V,
        "The product slowly rotates on a turntable while soft studio light sweeps across it",
        images=["img_product"],
        duration=4,
        quality="480p",
        aspect="adaptive",
        audio=False,
        campaign=SPRING,
    ),
    _row(
        "d1-r2v-square-jingle",
        D1,
        R2V,
        "Use image 1 as the main character, follow the camera movement of video 1 throughout, "
        "and use audio 1 as background music",
        images=["img_portrait"],
        videos=["vid_square"],
        audios=["aud_jingle"],
        aspect="1:1",
        campaign=ALWAYS_ON,
    ),
    _row(
        "d1-fast-t2v-tea-zh",
        D1,
        FT2V,
        "清晨的茶园，薄雾缓缓散开，一只手轻轻摘下嫩芽，特写镜头，温暖的阳光",
        duration=4,
        quality="480p",
        aspect="9:16",
        campaign=ALWAYS_ON,
    ),
    _row(
        "d1-fast-i2v-hero-1080p",
        D1,
        FI2V,
        "The hero shot zooms in slowly while confetti falls",
        images=["remote_hero"],
        quality="1080p",
        campaign=SPRING,
    ),
    _row(
        "d1-fast-r2v-voice",
        D1,
        FR2V,
        "Use image 1 as the product, use audio 1 as the voice-over, gentle push-in",
        images=["img_product"],
        audios=["aud_voice"],
        duration=4,
        quality="480p",
        aspect="4:3",
    ),
    _row(
        "d1-fast-t2v-waves",
        D1,
        FT2V,
        "Ocean waves crash against black rocks at sunset, slow motion spray",
        duration=4,
        quality="480p",
        aspect="21:9",
        audio=False,
    ),
    # ---- 2026-11-21 ------------------------------------------------------------------------
    _row(
        "d2-t2v-skyline-1080p",
        D2,
        T2V,
        "A sweeping ultrawide panorama of a mountain skyline at golden hour, clouds racing by",
        duration=4,
        quality="1080p",
        aspect="21:9",
        audio=False,
        campaign=SPRING,
    ),
    _row(
        "d2-i2v-first-last",
        D2,
        I2V,
        "Morph smoothly from the first frame to the last frame, camera dolly left",
        images=["img_wide", "img_last_frame"],
        campaign=SPRING,
    ),
    _row(
        "d2-i2v-tiny-image",
        D2,
        I2V,
        "Bring the logo to life with a subtle shimmer",
        images=["img_tiny"],
        duration=4,
        quality="480p",
        campaign=ALWAYS_ON,
    ),
    _row(
        "d2-fast-i2v-portrait-zh",
        D2,
        FI2V,
        "人物缓缓转头微笑，头发随风轻轻飘动，背景虚化",
        images=["img_portrait"],
        aspect="3:4",
        campaign=ALWAYS_ON,
    ),
    _row(
        "d2-r2v-wide-motion",
        D2,
        R2V,
        "Follow the camera motion of video 1 throughout, replace the scene with a snowy forest",
        videos=["vid_wide"],
        duration=4,
        quality="480p",
        aspect="adaptive",
        audio=False,
    ),
    _row(
        "d2-fast-r2v-audio-only",
        D2,
        FR2V,
        "Use audio 1 as background music for a calm beach scene",
        audios=["aud_jingle"],
        duration=4,
        quality="480p",
        campaign=ALWAYS_ON,
    ),
    _row(
        "d2-fast-t2v-coffee",
        D2,
        FT2V,
        "Steam rising from a cup of coffee on a wooden table, morning light, macro shot",
        duration=4,
        quality="480p",
        aspect="4:3",
    ),
    # ---- 2026-11-22 ------------------------------------------------------------------------
    _row(
        "d3-t2v-lantern-zh",
        D3,
        T2V,
        "夜晚的古镇，红灯笼在微风中摇曳，石板路上倒映着灯光，电影感",
        quality="480p",
        aspect="1:1",
        campaign=ALWAYS_ON,
    ),
    _row(
        "d3-fast-r2v-hd-mix",
        D3,
        FR2V,
        "Use image 1 as the product, the camera movement of video 1, and audio 1 as music",
        images=["img_product"],
        videos=["vid_hd"],
        audios=["aud_voice"],
        campaign=SPRING,
    ),
    _row(
        "d3-r2v-15fps-clip",
        D3,
        R2V,
        "Follow the motion of video 1 and restyle it as a watercolour painting",
        videos=["vid_15fps"],
        duration=4,
        quality="480p",
        campaign=SPRING,
    ),
    _row(
        "d3-fast-i2v-webp",
        D3,
        FI2V,
        "The scene comes alive: flags wave and birds cross the sky",
        images=["img_wide"],
        duration=4,
        quality="480p",
        aspect="adaptive",
        audio=False,
    ),
    _row(
        "d3-i2v-product-zoom",
        D3,
        I2V,
        "Slow zoom into the product, sparkles appear around it",
        images=["img_product"],
        duration=4,
        quality="480p",
        aspect="4:3",
        campaign=SPRING,
    ),
    _row(
        "d3-fast-t2v-runner",
        D3,
        FT2V,
        "A runner in a red jacket crosses a bridge at sunrise, tracking shot",
        aspect="16:9",
        campaign=SPRING,
    ),
)

PROMPT_COLUMNS = list(PROMPTS[0])
MEDIA_COLUMNS = ["media_id", "kind", "uri", "width", "height", "duration_s", "fps", "size_bytes"]
LIST_COLUMNS = ("image_ids", "video_ids", "audio_ids")


def make_media(media_dir: Path) -> None:
    media_dir.mkdir(parents=True, exist_ok=True)
    exe = ffmpeg()
    for m in MEDIA:
        out = media_dir / m.file
        meta = ["-map_metadata", "-1", *_BITEXACT]
        subprocess.run([exe, *_QUIET, *m.args, *meta, str(out)], check=True)


def _media_rows(uri_prefix: str) -> list[dict]:
    rows = [
        {"media_id": m.media_id, "kind": m.kind, "uri": f"{uri_prefix}{m.file}"}
        | dict.fromkeys(MEDIA_COLUMNS[3:])
        for m in MEDIA
    ]
    return [*rows, dict(REMOTE_MEDIA)]


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "|".join(value)
    return str(value)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row[c]) for c in columns])


PROMPT_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("scheduled_date", pa.date32()),
        ("model", pa.string()),
        ("prompt", pa.string()),
        ("image_ids", pa.list_(pa.string())),
        ("video_ids", pa.list_(pa.string())),
        ("audio_ids", pa.list_(pa.string())),
        ("duration", pa.int64()),
        ("quality", pa.string()),
        ("aspect_ratio", pa.string()),
        ("generate_audio", pa.bool_()),
        ("web_search", pa.bool_()),
        ("callback_url", pa.string()),
        ("campaign", pa.string()),
    ]
)
MEDIA_SCHEMA = pa.schema(
    [
        ("media_id", pa.string()),
        ("kind", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("size_bytes", pa.int64()),
    ]
)


def _write_parquet(path: Path, schema: pa.Schema, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd", write_statistics=False)


def make_catalogs(catalog_dir: Path) -> None:
    parquet_dir = catalog_dir / "parquet"
    parquet_dir.mkdir(parents=True, exist_ok=True)
    prompts = [dict(r) for r in PROMPTS]
    _write_csv(catalog_dir / "prompts.csv", PROMPT_COLUMNS, prompts)
    _write_csv(catalog_dir / "media.csv", MEDIA_COLUMNS, _media_rows("../media/"))
    parquet_prompts = [
        r | {"scheduled_date": dt.date.fromisoformat(r["scheduled_date"])} for r in prompts
    ]
    _write_parquet(parquet_dir / "prompts.parquet", PROMPT_SCHEMA, parquet_prompts)
    _write_parquet(parquet_dir / "media.parquet", MEDIA_SCHEMA, _media_rows("../../media/"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="data directory")
    args = parser.parse_args(argv)
    make_media(args.out / "media")
    make_catalogs(args.out / "catalog")
    print(f"sample data written to {args.out}")


if __name__ == "__main__":
    main()
