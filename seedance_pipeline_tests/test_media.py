"""Measuring a downloaded video as encoders make them by default (H.264 high profile with
B-frames), not only as the emulator renders them (no B-frames)."""

import subprocess

import pytest

from seedance_pipeline.media import MediaError, ffmpeg, measure_video_output


@pytest.fixture(scope="module")
def b_frame_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "high.mp4"
    subprocess.run(
        [ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=24"]
        + ["-f", "lavfi", "-i", "sine=frequency=440", "-t", "3", "-c:v", "libx264"]
        + ["-preset", "superfast", "-profile:v", "high", "-bf", "3", "-pix_fmt", "yuv420p"]
        + ["-c:a", "aac", "-movflags", "+faststart", str(path)],
        check=True,
    )
    return path


def test_a_video_with_b_frames_is_measured_from_its_header(b_frame_video):
    assert measure_video_output(b_frame_video) == {
        "width": 1280,
        "height": 720,
        "duration_s": 3.0,
        "has_audio": True,
    }


def test_a_video_with_b_frames_cut_in_half_is_refused(b_frame_video, tmp_path):
    cut = tmp_path / "cut.mp4"
    data = b_frame_video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="picture ends at 1.* of the 3.00 s it claims"):
        measure_video_output(cut)
