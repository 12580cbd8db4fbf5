"""Measuring a downloaded video as encoders make them by default (H.264 high profile with
B-frames), not only as the emulator renders them (no B-frames), and refusing what is not one."""

import subprocess

import pytest

from seedance_pipeline.media import MediaError, ffmpeg, measure, measure_video_output

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


@pytest.mark.parametrize("kept", [0.1, 0.5, 0.8])
def test_a_video_with_b_frames_cut_short_is_refused(b_frame_video, tmp_path, kept):
    """Only the streams' last half second is read; a cut anywhere before it is still found."""
    cut = tmp_path / "cut.mp4"
    data = b_frame_video.read_bytes()
    cut.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(MediaError, match="picture stops short of the 3.00 s it claims"):
        measure_video_output(cut)


def test_a_text_file_naming_another_video_is_not_measured_as_that_video(b_frame_video):
    """FFmpeg left to guess reads an `ffconcat` list and measures the file it names: a 70-byte
    download would be kept as a 3 s 1280x720 video."""
    listing = b_frame_video.with_name(".p1.mp4.123.tmp")  # a download's scratch name
    listing.write_text(f"ffconcat version 1.0\nfile '{b_frame_video.name}'\nduration 3\n")
    with pytest.raises(MediaError, match="not a readable video"):
        measure_video_output(listing)


def test_a_video_in_another_container_is_refused(b_frame_video, tmp_path):
    transport_stream = tmp_path / "video.mp4"  # MPEG-TS under an MP4 name
    subprocess.run(
        [ffmpeg(), "-v", "error", "-i", str(b_frame_video), "-c", "copy", "-f", "mpegts"]
        + [str(transport_stream)],
        check=True,
    )
    with pytest.raises(MediaError, match="not a readable video"):
        measure_video_output(transport_stream)


def test_a_video_whose_sound_stops_early_is_refused(b_frame_video, tmp_path):
    """A 3 s picture over 0.3 s of sound: `has_audio` would have said True."""
    short_sound = tmp_path / "short_sound.mp4"
    subprocess.run(
        [ffmpeg(), "-v", "error", "-i", str(b_frame_video), "-map", "0", "-c:v", "copy"]
        + ["-af", "atrim=0:0.3", "-c:a", "aac", str(short_sound)],
        check=True,
    )
    with pytest.raises(MediaError, match="sound ends at 0.3.* of the 3.00 s it claims"):
        measure_video_output(short_sound)


def test_a_folder_named_as_a_medium_is_said_to_be_no_file_not_missing(tmp_path):
    """It said `no such file` of a folder that is there."""
    with pytest.raises(MediaError, match=f"^{tmp_path}: not a file$"):
        measure(tmp_path, "image")
    with pytest.raises(MediaError, match="no such file$"):
        measure(tmp_path / "gone.png", "image")
