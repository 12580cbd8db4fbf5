"""Measuring media files (PyAV) and the ffmpeg binary from the imageio-ffmpeg wheel."""

from __future__ import annotations

import os
from pathlib import Path

import av
import imageio_ffmpeg

from .seedance import MediaFacts

# Container/codec names as PyAV reports them -> the vendor's format names.
_FORMATS = {
    "png_pipe": "png",
    "image2": None,
    "jpeg_pipe": "jpeg",
    "webp_pipe": "webp",
    "gif": "gif",
    "mp3": "mp3",
    "wav": "wav",
    "bmp_pipe": "bmp",
    "tiff_pipe": "tiff",
}
# How a downloaded video is opened. An MP4's header holds every stream's size and duration:
# probing frames beyond it (FFmpeg's default) would more than double the CPU of measuring each
# generated video. Nor is a frame decoded: to guess an H.264 stream's frame reordering FFmpeg's
# probe decodes up to 7 frames (12 ms of CPU for a 1080p video with B-frames, encoders'
# default), and no fact here needs them. The file is untrusted: it is read as an MP4 and
# nothing else (FFmpeg would otherwise guess the format from the content, and an `ffconcat`
# text naming a sibling video would be measured as that video), touching no file or URL
# beyond itself.
_DOWNLOADED = {
    "analyzeduration": "0",
    "probesize": "32",
    "skip_frame": "all",
    "protocol_whitelist": "file",
}
# How far short of its claimed duration a stream may end (encoders pad and trim).
_TAIL_MICROSECONDS = 500_000
_IMAGE_CODECS = {"mjpeg": "jpeg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp"}


class MediaError(ValueError):
    """A media file is missing, unreadable, or not the kind it claims to be."""


def ffmpeg() -> str:
    """Path of the ffmpeg binary shipped in the imageio-ffmpeg wheel."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def measure(path: str | os.PathLike, kind: str) -> MediaFacts:
    """Facts the vendor's rules need about a local file, read from the file itself.

    Raises:
        MediaError: the file is missing, unreadable, or holds no stream of `kind`.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        with av.open(str(path)) as container:
            return _facts(container, kind, path.stat().st_size)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable {kind} file ({exc})") from None


def _facts(container, kind: str, size: int) -> MediaFacts:
    videos, audios = container.streams.video, container.streams.audio
    if kind != "audio" and videos and not (videos[0].width and videos[0].height):
        raise MediaError(f"{container.name}: not a readable {kind} file (no picture size)")
    names = container.format.name.split(",")
    if kind == "image":
        if not videos:
            raise MediaError(f"{container.name}: holds no image")
        stream = videos[0]
        fmt = _IMAGE_CODECS.get(stream.codec_context.name, stream.codec_context.name)
        if container.duration and container.duration > 1_000_000 // 10 and fmt != "gif":
            raise MediaError(f"{container.name}: is a video, not an image")
        return MediaFacts("image", fmt, stream.width, stream.height, size_bytes=size)
    seconds = round(container.duration / 1_000_000, 3) if container.duration else None
    if kind == "video":
        if not videos or videos[0].codec_context.name in _IMAGE_CODECS and not seconds:
            raise MediaError(f"{container.name}: holds no video stream")
        stream = videos[0]
        fmt = (
            "mov"
            if "mov" in names and container.name.lower().endswith(".mov")
            else ("mp4" if "mp4" in names else names[0])
        )
        fps = float(stream.average_rate) if stream.average_rate else None
        return MediaFacts(
            "video", fmt, stream.width, stream.height, seconds, round(fps, 3) if fps else None, size
        )
    if not audios or videos:
        raise MediaError(
            f"{container.name}: holds no audio stream"
            if not audios
            else f"{container.name}: is a video, not an audio file"
        )
    fmt = next((_FORMATS[n] for n in names if _FORMATS.get(n)), names[0])
    return MediaFacts("audio", fmt, duration_s=seconds, size_bytes=size)


def measure_video_output(path: str | os.PathLike) -> dict:
    """Pixels, duration and audio of a generated MP4 (MP4 or MOV, no other format), for the
    videos table and checks.

    The last half second of every video and audio stream is read (not decoded), so a file cut
    short fails here even when its header, written first, promises the full duration; so does
    a sound track that stops early. Only that tail is read: the header's index finds it, and
    reading every packet would double the CPU of measuring a generated video.

    Raises:
        MediaError: not a video, or its picture or sound stops well before the duration it
            claims.
    """
    try:
        with av.open(str(path), format="mp4", options=_DOWNLOADED) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: holds no video stream")
            streams = {"picture": container.streams.video[0]}
            if container.streams.audio:
                streams["sound"] = container.streams.audio[0]
            claimed = container.duration / 1_000_000 if container.duration else None
            if claimed:  # each stream from its sample nearest the tail, keyframe or not
                tail = max(0, container.duration - _TAIL_MICROSECONDS)
                container.seek(tail, any_frame=True, backward=True)
            last = dict.fromkeys(streams.values(), 0)  # in each stream's time base
            for packet in container.demux(*streams.values()):
                if packet.pts is not None and packet.size:
                    end = packet.pts + (packet.duration or 0)
                    if end > last[packet.stream]:
                        last[packet.stream] = end
            facts = {
                "width": streams["picture"].width,
                "height": streams["picture"].height,
                "duration_s": round(claimed, 3) if claimed else None,
                "has_audio": "sound" in streams,
            }
            # Read while the file is open: a closed container's streams may have no time base.
            ends = {n: float(last[s] * (s.time_base or 0)) for n, s in streams.items()}
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable video ({exc})") from None
    for name, end in ends.items():
        if claimed is None or end < claimed - _TAIL_MICROSECONDS / 1_000_000:
            raise MediaError(
                f"{path}: the {name} {f'ends at {end:.2f} s of' if end else 'stops short of'} "
                f"the {claimed or 0:.2f} s it claims (a truncated or corrupt file)"
            )
    return facts
