"""Measuring a downloaded video as encoders make them by default (H.264 high profile with
B-frames), not only as the emulator renders them (no B-frames)."""

import pytest

from seedance_pipeline.media import MediaError, measure_video_output

from . import pipeline_support


@pytest.fixture(scope="module")
def b_frame_video(tmp_path_factory):
    return pipeline_support.b_frame_video(
        tmp_path_factory.mktemp("media") / "high.mp4", 1280, 720, 3
    )


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
