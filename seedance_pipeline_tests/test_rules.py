"""Every rule of the vendor's Seedance 2.0 parameter guide, accepted and rejected."""

from __future__ import annotations

import time

import pytest

from seedance_pipeline.seedance import (
    MODELS,
    PIXELS,
    TASK_ID,
    MediaFacts,
    output_pixels,
    validate_request,
)
from seedance_pipeline.seedance._rules import (
    check_callback_url,
    check_media,
    check_options,
    check_prompt,
    nearest_aspect_ratio,
)

from .model_ids import FI2V, FR2V, FT2V, I2V, R2V, T2V

MIB = 1024 * 1024
# The Mini tier: the vendor's Chinese overview (480p and 720p; its text-to-video takes no
# model_params).
MT2V, MI2V, MR2V = (
    "seedance-2.0-mini-text-to-video",
    "seedance-2.0-mini-image-to-video",
    "seedance-2.0-mini-reference-to-video",
)
STANDARD_MODELS = (T2V, I2V, R2V)
FAST_MODELS = (FT2V, FI2V, FR2V)
MINI_MODELS = (MT2V, MI2V, MR2V)
ALL_MODELS = STANDARD_MODELS + FAST_MODELS + MINI_MODELS

IMG = [f"https://cdn.example.com/img{i}.png" for i in range(11)]
VID = [f"https://cdn.example.com/vid{i}.mp4" for i in range(5)]
AUD = [f"https://cdn.example.com/aud{i}.mp3" for i in range(5)]


def image(**kw) -> MediaFacts:
    base = {"format": "png", "width": 800, "height": 600, "size_bytes": 100_000}
    return MediaFacts("image", **(base | kw))


def video(**kw) -> MediaFacts:
    base = {"format": "mp4", "width": 1280, "height": 720, "duration_s": 4.0, "fps": 24.0}
    return MediaFacts("video", **(base | {"size_bytes": 1_000_000} | kw))


def audio(**kw) -> MediaFacts:
    return MediaFacts("audio", **({"format": "mp3", "duration_s": 4.0, "size_bytes": 100_000} | kw))


def body(model: str = T2V, **kw) -> dict:
    """A valid request for `model` (the minimum media its mode needs), with `kw` on top."""
    b: dict = {"model": model, "prompt": "a cat plays the piano, cinematic light"}
    mode = MODELS[model].mode if model in MODELS else None
    if mode == "image-to-video":
        b["image_urls"] = IMG[:1]
    if mode == "reference-to-video":
        b["image_urls"] = IMG[:1]
    b.update(kw)
    return {k: v for k, v in b.items() if v is not None}


def assert_ok(violations) -> None:
    assert violations == [], [str(v) for v in violations]


def assert_rejected(violations, field: str, *fragments: str) -> None:
    """Some violation names `field` and every fragment (the limit) in its message."""
    texts = [str(v) for v in violations]
    assert any(v.field == field and all(f in v.message for f in fragments) for v in violations), (
        f"expected {field} with {fragments}, got {texts}"
    )


# ---- models ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_each_of_the_nine_models_is_accepted(model):
    assert_ok(validate_request(body(model)))


def test_the_table_holds_three_tiers_of_three_modes():
    assert len(MODELS) == 9
    assert {(s.tier, s.mode) for s in MODELS.values()} == {
        (tier, mode)
        for tier in ("standard", "fast", "mini")
        for mode in ("text-to-video", "image-to-video", "reference-to-video")
    }


@pytest.mark.parametrize(
    "model", ["seedance-2.0-mini", "seedance-2.0-mini-text-to-image", "seedance-1.0-pro", "", None]
)
def test_unknown_model_is_rejected_with_the_known_list(model):
    violations = validate_request(body(T2V) | {"model": model})
    assert_rejected(violations, "model", "is not one of", T2V, FR2V, MR2V)


def test_missing_model_is_rejected():
    b = body(T2V)
    del b["model"]
    assert_rejected(validate_request(b), "model", "is not one of")


def test_unknown_field_is_rejected():
    assert_rejected(validate_request(body(T2V, resolution="720p")), "resolution", "not a field")


def test_body_must_be_an_object():
    assert_rejected(validate_request(["model"]), "body", "JSON object")


# ---- per-mode media kinds and counts -----------------------------------------------------


@pytest.mark.parametrize("model", [T2V, FT2V])
@pytest.mark.parametrize(
    ("field", "urls"), [("image_urls", IMG[:1]), ("video_urls", VID[:1]), ("audio_urls", AUD[:1])]
)
def test_text_to_video_takes_no_media(model, field, urls):
    assert_rejected(validate_request(body(model, **{field: urls})), field, "not accepted", "text")


@pytest.mark.parametrize("model", [T2V, FT2V])
def test_text_to_video_accepts_empty_media_lists(model):
    assert_ok(validate_request(body(model, image_urls=[], video_urls=[], audio_urls=[])))


@pytest.mark.parametrize("model", [I2V, FI2V])
@pytest.mark.parametrize("n", [1, 2])
def test_image_to_video_takes_one_or_two_images(model, n):
    assert_ok(validate_request(body(model, image_urls=IMG[:n])))


@pytest.mark.parametrize("model", [I2V, FI2V])
@pytest.mark.parametrize("n", [0, 3, 9])
def test_image_to_video_image_count_out_of_range(model, n):
    b = body(model, image_urls=IMG[:n])
    assert_rejected(validate_request(b), "image_urls", f"has {n} item", "1..2")


@pytest.mark.parametrize("model", [I2V, FI2V])
def test_image_to_video_without_image_urls_field(model):
    b = body(model)
    del b["image_urls"]
    assert_rejected(validate_request(b), "image_urls", "1..2")


@pytest.mark.parametrize("model", [I2V, FI2V])
@pytest.mark.parametrize(("field", "urls"), [("video_urls", VID[:1]), ("audio_urls", AUD[:1])])
def test_image_to_video_takes_images_only(model, field, urls):
    assert_rejected(validate_request(body(model, **{field: urls})), field, "not accepted", "image")


@pytest.mark.parametrize("model", [R2V, FR2V])
@pytest.mark.parametrize(
    ("images", "videos", "audios"),
    [(1, 0, 0), (9, 0, 0), (0, 1, 0), (0, 3, 0), (1, 0, 1), (0, 1, 3), (9, 3, 3), (2, 2, 2)],
)
def test_reference_to_video_accepted_counts(model, images, videos, audios):
    b = body(model, image_urls=IMG[:images], video_urls=VID[:videos], audio_urls=AUD[:audios])
    assert_ok(validate_request(b))


@pytest.mark.parametrize("model", [R2V, FR2V])
@pytest.mark.parametrize(
    ("field", "urls", "limit"),
    [("image_urls", IMG[:10], "0..9"), ("video_urls", VID[:4], "0..3"),
     ("audio_urls", AUD[:4], "0..3")],
)  # fmt: skip
def test_reference_to_video_too_many_media(model, field, urls, limit):
    b = body(model, image_urls=IMG[:1]) | {field: urls}
    assert_rejected(validate_request(b), field, f"has {len(urls)} item", limit)


@pytest.mark.parametrize("model", [R2V, FR2V])
@pytest.mark.parametrize("n_audio", [1, 3])
def test_reference_to_video_audio_alone_is_refused(model, n_audio):
    b = body(model, image_urls=None, audio_urls=AUD[:n_audio])
    b.pop("image_urls", None)
    assert_rejected(validate_request(b), "image_urls", "at least one image or video", "audio")


@pytest.mark.parametrize("model", [R2V, FR2V])
def test_reference_to_video_with_no_media_is_refused(model):
    b = body(model)
    del b["image_urls"]
    assert_rejected(validate_request(b), "image_urls", "at least one image or video")


@pytest.mark.parametrize("value", ["https://x.example.com/a.png", ("https://a/b.png",), 3])
def test_media_field_must_be_a_list(value):
    assert_rejected(validate_request(body(R2V, image_urls=value)), "image_urls", "list")


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "a.png", "", "https://", 7])
def test_media_items_must_be_http_urls(url):
    assert_rejected(validate_request(body(I2V, image_urls=[url])), "image_urls[0]", "http(s)")


def test_http_url_is_accepted():
    assert_ok(validate_request(body(I2V, image_urls=["http://example.com/a.png"])))


# ---- duration, quality, aspect ratio, audio, web search ----------------------------------


@pytest.mark.parametrize("duration", list(range(4, 16)))
def test_duration_4_to_15_accepted(duration):
    assert_ok(validate_request(body(T2V, duration=duration)))


def test_duration_defaults_to_5():
    assert_ok(validate_request(body(T2V)))


@pytest.mark.parametrize("duration", [3, 16, 0, -5, 5.5, 5.0, "5", None, True])
def test_duration_rejected(duration):
    b = body(T2V) | {"duration": duration}
    assert_rejected(validate_request(b), "duration", "4..15")


@pytest.mark.parametrize("model", ALL_MODELS)
@pytest.mark.parametrize("quality", ["480p", "720p"])
def test_480p_720p_on_every_model(model, quality):
    assert_ok(validate_request(body(model, quality=quality)))


@pytest.mark.parametrize("model", STANDARD_MODELS)
def test_1080p_on_standard_models(model):
    assert_ok(validate_request(body(model, quality="1080p")))


@pytest.mark.parametrize("model", FAST_MODELS + MINI_MODELS)
def test_1080p_refused_on_fast_and_mini_models(model):
    tier = MODELS[model].tier
    assert_rejected(
        validate_request(body(model, quality="1080p")), "quality", "1080p", tier, "480p, 720p"
    )


@pytest.mark.parametrize("quality", ["4k", "1080P", "360p", "", None, 720])
def test_quality_enum(quality):
    b = body(T2V) | {"quality": quality}
    assert_rejected(validate_request(b), "quality", "480p, 720p, 1080p")


@pytest.mark.parametrize("ratio", ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "adaptive"])
@pytest.mark.parametrize("model", ALL_MODELS)
def test_aspect_ratio_enum_accepted(model, ratio):
    assert_ok(validate_request(body(model, aspect_ratio=ratio)))


@pytest.mark.parametrize("ratio", ["2:1", "16x9", "auto", "", None, 1.78])
def test_aspect_ratio_enum_rejected(ratio):
    b = body(T2V) | {"aspect_ratio": ratio}
    assert_rejected(validate_request(b), "aspect_ratio", "16:9", "21:9", "adaptive")


@pytest.mark.parametrize("value", [True, False])
def test_generate_audio_bool(value):
    assert_ok(validate_request(body(T2V, generate_audio=value)))


@pytest.mark.parametrize("value", ["true", 1, None])
def test_generate_audio_must_be_bool(value):
    b = body(T2V) | {"generate_audio": value}
    assert_rejected(validate_request(b), "generate_audio", "true or false")


@pytest.mark.parametrize("model", [T2V, FT2V])
@pytest.mark.parametrize("value", [True, False])
def test_web_search_on_text_to_video(model, value):
    assert_ok(validate_request(body(model, model_params={"web_search": value})))


@pytest.mark.parametrize("params", [{"web_search": True}, {"web_search": False}, {}])
def test_mini_text_to_video_takes_no_model_params(params):
    assert_rejected(validate_request(body(MT2V, model_params=params)), "model_params", MT2V)


def test_mini_image_to_video_takes_one_or_two_images_only():
    assert_ok(validate_request(body(MI2V, image_urls=IMG[:2])))
    assert_rejected(validate_request(body(MI2V, image_urls=IMG[:3])), "image_urls", "1..2")
    assert_rejected(validate_request(body(MI2V, image_urls=[])), "image_urls", "1..2")
    assert_rejected(validate_request(body(MI2V, video_urls=VID[:1])), "video_urls", "not accepted")


def test_mini_reference_to_video_takes_images_videos_and_audio():
    full = body(MR2V, image_urls=IMG[:9], video_urls=VID[:3], audio_urls=AUD[:3])
    assert_ok(validate_request(full))
    assert_rejected(validate_request(body(MR2V, video_urls=VID[:4])), "video_urls", "0..3")
    no_visual = body(MR2V, image_urls=[], audio_urls=AUD[:1])
    assert_rejected(validate_request(no_visual), "image_urls", "at least one image or video")


def test_mini_text_to_video_takes_no_media():
    assert_rejected(validate_request(body(MT2V, image_urls=IMG[:1])), "image_urls", "not accepted")


@pytest.mark.parametrize("model", [I2V, FI2V, R2V, FR2V, MI2V, MR2V])
def test_web_search_refused_elsewhere(model):
    b = body(model, model_params={"web_search": True})
    assert_rejected(validate_request(b), "model_params.web_search", "text-to-video")


@pytest.mark.parametrize("model", [I2V, R2V])
def test_web_search_false_is_harmless_elsewhere(model):
    assert_ok(validate_request(body(model, model_params={"web_search": False})))


@pytest.mark.parametrize(
    ("params", "field"),
    [({"web_search": "yes"}, "model_params.web_search"), ({"seed": 1}, "model_params"),
     ("web_search", "model_params")],
)  # fmt: skip
def test_model_params_shape(params, field):
    assert_rejected(validate_request(body(T2V, model_params=params)), field)


# ---- callback URL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/seedance",
        "https://example.com:8443/cb?x=1",
        "https://8.8.8.8/cb",
        "https://[2606:4700:4700::1111]/cb",
        "https://example.com/" + "a" * (2048 - len("https://example.com/")),
    ],
)
def test_callback_accepted(url):
    assert_ok(check_callback_url(url))
    assert_ok(validate_request(body(T2V, callback_url=url)))


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://hooks.example.com/cb", "https"),
        ("ftp://hooks.example.com/cb", "https"),
        ("hooks.example.com/cb", "https"),
        ("https://127.0.0.1/cb", "not public"),
        ("https://127.8.9.10/cb", "not public"),
        ("https://10.0.0.5/cb", "not public"),
        ("https://10.255.255.255/cb", "not public"),
        ("https://172.16.0.1/cb", "not public"),
        ("https://172.20.3.4/cb", "not public"),
        ("https://172.31.255.254/cb", "not public"),
        ("https://192.168.1.10/cb", "not public"),
        ("https://169.254.169.254/latest", "not public"),
        ("https://0.0.0.0/cb", "not public"),
        ("https://[::1]/cb", "not public"),
        ("https://[fd00::1]/cb", "not public"),
        ("https://localhost/cb", "not public"),
        ("https://LOCALHOST./cb", "not public"),
        ("https://api.localhost/cb", "not public"),
        ("https://printer.local/cb", "not public"),
        ("https://intranet/cb", "not public"),
        ("https://0177.0.0.1/cb", "not public"),
        ("https://127.1/cb", "not public"),
        ("https://0x7f.1/cb", "not public"),
        ("https://2130706433/cb", "not public"),
        ("https://%31%32%37.0.0.1/cb", "not public"),
        ("https://[2002:7f00:1::]/cb", "not public"),
        ("https://[::ffff:10.0.0.1]/cb", "not public"),
        ("https://kubernetes.default.svc/cb", "not public"),
        ("https://metadata.google.internal/cb", "not public"),
        ("https://user:secret@hooks.example.com/cb", "password"),
        ("https:///cb", "no host"),
        ("https://example.com/" + "a" * 2048, "at most 2048"),
        ("", "non-empty"),
        (None, "non-empty"),
        (42, "non-empty"),
    ],
)
def test_callback_rejected(url, fragment):
    assert_rejected(check_callback_url(url), "callback_url", fragment)
    assert_rejected(validate_request(body(T2V, callback_url=url) | {"callback_url": url}),
                    "callback_url", fragment)  # fmt: skip


@pytest.mark.parametrize("url", ["https://172.15.0.1/cb", "https://172.32.0.1/cb"])
def test_callback_172_outside_16_31_is_public(url):
    assert_ok(check_callback_url(url))


def test_callback_length_limit_is_exactly_2048():
    base = "https://example.com/"
    assert_ok(check_callback_url(base + "a" * (2048 - len(base))))
    assert_rejected(check_callback_url(base + "a" * (2049 - len(base))), "callback_url", "2048")


# ---- prompt ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "a",
        "一只猫在钢琴上弹奏月光奏鸣曲，电影感光影，特写镜头",
        "word " * 1000,
        "猫" * 500,
        "a" * 10_000,  # one long word, at the character cap
        "line one\r\nline two\ttab",
        "no-break\u00a0space",
        "\u202eright to left\u202c",  # format characters around visible text
    ],
)
def test_prompt_accepted(prompt):
    assert_ok(validate_request(body(T2V, prompt=prompt)))


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ("", "visible text"),
        ("   \n", "visible text"),
        (None, "required"),
        (123, "required"),
        ("word " * 1001, "at most 1000"),
        ("猫" * 501, "at most 500"),
        ("a" * 10_001, "has 10001 characters; at most 10000"),
        ("\u00a0\u3000\u2028\u200b", "visible text"),
        ("\x00", "visible text"),
        ("a\x00b", "control characters (U+0000)"),
        ("a\x1b[31mb", "control characters (U+001B)"),
        ("a\x7fb\x85c", "control characters (U+007F, U+0085)"),
        ("猫\x0b", "control characters (U+000B)"),
    ],
)
def test_prompt_rejected(prompt, fragment):
    b = body(T2V) | {"prompt": prompt}
    assert_rejected(validate_request(b), "prompt", fragment)


@pytest.mark.parametrize("prompt", ["a" * 1_000_000, "猫 \x00" * 333_334])
def test_a_million_character_prompt_is_refused_without_reading_it(prompt):
    started = time.perf_counter()
    violations = validate_request(body(T2V, prompt=prompt))
    assert time.perf_counter() - started < 0.05  # reading it took seconds
    assert_rejected(violations, "prompt", f"has {len(prompt)} characters; at most 10000")


def test_missing_prompt_is_rejected():
    b = body(T2V)
    del b["prompt"]
    assert_rejected(validate_request(b), "prompt", "required")


# ---- images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [
        image(format="jpeg"),
        image(format="png"),
        image(format="webp"),
        image(width=300, height=300),
        image(width=6000, height=6000),
        image(width=1000, height=2500),  # aspect 0.4
        image(width=2500, height=1000),  # aspect 2.5
        image(size_bytes=30 * MIB),
        image(format=None, width=None, height=None, size_bytes=None),  # nothing known
    ],
)
def test_image_accepted(facts):
    assert_ok(check_media("image", facts, "image_urls[0]"))
    assert_ok(validate_request(body(I2V, image_urls=IMG[:1]), {IMG[0]: facts}))


@pytest.mark.parametrize(
    ("facts", "fragments"),
    [
        (image(format="gif"), ("gif", "jpeg, png, webp")),
        (image(format="bmp"), ("bmp", "jpeg, png, webp")),
        (image(format="tiff"), ("tiff", "jpeg, png, webp")),
        (image(width=299, height=600), ("299x600", "300..6000")),
        (image(width=200, height=200), ("200x200", "300..6000")),
        (image(width=6001, height=4000), ("6001x4000", "300..6000")),
        (image(width=999, height=2500), ("0.40", "0.4..2.5")),
        (image(width=1500, height=500), ("3.00", "0.4..2.5")),
        (image(width=2501, height=1000), ("2.50", "0.4..2.5")),
        (image(size_bytes=30 * MIB + 1), ("30.0 MiB", "at most 30 MiB")),
        (image(width=0, height=0), ("0x0", "300..6000")),  # a catalog typo must not crash
        (image(width=800, height=0), ("800x0", "300..6000")),
    ],
)
def test_image_rejected(facts, fragments):
    assert_rejected(check_media("image", facts, "image_urls[0]"), "image_urls[0]", *fragments)
    b = body(I2V, image_urls=IMG[:1])
    assert_rejected(validate_request(b, {IMG[0]: facts}), "image_urls[0]", *fragments)


def test_the_second_image_is_named_by_its_index():
    b = body(I2V, image_urls=IMG[:2])
    facts = {IMG[0]: image(), IMG[1]: image(format="gif")}
    assert_rejected(validate_request(b, facts), "image_urls[1]", "gif")


@pytest.mark.parametrize(
    ("field", "urls", "facts", "kind"),
    [("image_urls", IMG[:1], video(), "a video"), ("video_urls", VID[:1], audio(), "an audio"),
     ("audio_urls", AUD[:1], image(), "an image")],
)  # fmt: skip
def test_wrong_kind_of_file_in_a_media_field(field, urls, facts, kind):
    b = body(R2V, image_urls=IMG[1:2]) | {field: urls}
    assert_rejected(validate_request(b, {urls[0]: facts}), f"{field}[0]", f"is {kind} file")


# ---- videos ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [
        video(format="mp4"),
        video(format="mov"),
        video(width=640, height=640),  # 409,600: the minimum
        video(width=2206, height=946),  # 2,086,876: the maximum
        video(width=864, height=496),
        video(width=496, height=864),
        video(fps=24),
        video(fps=60),
        video(duration_s=2),
        video(duration_s=15),
        video(size_bytes=50 * MIB),
    ],
)
def test_video_accepted(facts):
    assert_ok(check_media("video", facts, "video_urls[0]"))
    assert_ok(validate_request(body(R2V, video_urls=VID[:1]), {VID[0]: facts}))


@pytest.mark.parametrize(
    ("facts", "fragments"),
    [
        (video(format="webm"), ("webm", "mp4, mov")),
        (video(format="avi"), ("avi", "mp4, mov")),
        (video(width=290, height=1600), ("290x1600", "300..6000")),
        (video(width=6400, height=320), ("6400x320", "300..6000")),
        (video(width=1800, height=700), ("2.57", "0.4..2.5")),
        (video(width=480, height=360), ("172,800", "409,600..2,086,876")),
        (video(width=639, height=640), ("408,960", "409,600..2,086,876")),
        (video(width=1920, height=1088), ("2,088,960", "409,600..2,086,876")),
        (video(width=2207, height=946), ("2,087,822", "409,600..2,086,876")),
        (video(fps=15), ("15 fps", "24..60")),
        (video(fps=23.976), ("23.976", "24..60")),
        (video(fps=60.5), ("60.5", "24..60")),
        (video(fps=120), ("120", "24..60")),
        (video(duration_s=1.0), ("1.00 s", "2..15")),
        (video(duration_s=1.99), ("1.99 s", "2..15")),
        (video(duration_s=15.5), ("15.50 s", "2..15")),
        (video(size_bytes=50 * MIB + 1), ("50.0 MiB", "at most 50 MiB")),
    ],
)
def test_video_rejected(facts, fragments):
    assert_rejected(check_media("video", facts, "video_urls[0]"), "video_urls[0]", *fragments)
    b = body(R2V, video_urls=VID[:1])
    assert_rejected(validate_request(b, {VID[0]: facts}), "video_urls[0]", *fragments)


@pytest.mark.parametrize(
    ("seconds", "ok"), [((5, 5, 5), True), ((7.5, 7.5), True), ((5, 5, 5.5), False),
                        ((10, 6), False), ((8, 7.001), False)],
)  # fmt: skip
def test_total_reference_video_seconds(seconds, ok):
    urls = VID[: len(seconds)]
    facts = {u: video(duration_s=s) for u, s in zip(urls, seconds, strict=True)}
    violations = validate_request(body(R2V, video_urls=urls), facts)
    if ok:
        assert_ok(violations)
    else:
        assert_rejected(violations, "video_urls", "in total", "at most 15 s")


# ---- audio -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "facts",
    [audio(format="mp3"), audio(format="wav"), audio(duration_s=2), audio(duration_s=15),
     audio(size_bytes=15 * MIB)],
)  # fmt: skip
def test_audio_accepted(facts):
    assert_ok(check_media("audio", facts, "audio_urls[0]"))
    assert_ok(validate_request(body(R2V, audio_urls=AUD[:1]), {AUD[0]: facts}))


@pytest.mark.parametrize(
    ("facts", "fragments"),
    [
        (audio(format="aac"), ("aac", "wav, mp3")),
        (audio(format="ogg"), ("ogg", "wav, mp3")),
        (audio(format="flac"), ("flac", "wav, mp3")),
        (audio(duration_s=1), ("1.00 s", "2..15")),
        (audio(duration_s=16), ("16.00 s", "2..15")),
        (audio(size_bytes=15 * MIB + 1), ("15.0 MiB", "at most 15 MiB")),
    ],
)
def test_audio_rejected(facts, fragments):
    assert_rejected(check_media("audio", facts, "audio_urls[0]"), "audio_urls[0]", *fragments)
    b = body(R2V, audio_urls=AUD[:1])
    assert_rejected(validate_request(b, {AUD[0]: facts}), "audio_urls[0]", *fragments)


@pytest.mark.parametrize(
    ("seconds", "ok"), [((5, 5, 5), True), ((3, 12), True), ((5, 5, 6), False), ((14, 2), False)]
)
def test_total_audio_seconds(seconds, ok):
    urls = AUD[: len(seconds)]
    facts = {u: audio(duration_s=s) for u, s in zip(urls, seconds, strict=True)}
    violations = validate_request(body(R2V, audio_urls=urls), facts)
    if ok:
        assert_ok(violations)
    else:
        assert_rejected(violations, "audio_urls", "in total", "at most 15 s")


# ---- total request size --------------------------------------------------------------------


def test_total_media_64_mb_accepted():
    urls = IMG[:2]
    facts = {urls[0]: image(size_bytes=30 * MIB), urls[1]: image(size_bytes=30 * MIB)}
    b = body(R2V, image_urls=urls, video_urls=VID[:1], audio_urls=AUD[:1])
    facts |= {VID[0]: video(size_bytes=2 * MIB), AUD[0]: audio(size_bytes=2 * MIB)}
    assert_ok(validate_request(b, facts))


def test_total_media_over_64_mb_rejected():
    urls = IMG[:3]
    facts = {u: image(size_bytes=25 * MIB) for u in urls}  # each fine, 75 MiB together
    violations = validate_request(body(R2V, image_urls=urls), facts)
    assert_rejected(violations, "body", "75.0 MiB", "at most 64 MiB")


def test_every_violation_is_reported_at_once():
    b = body(FI2V, quality="1080p", duration=3, aspect_ratio="2:1", image_urls=IMG[:1])
    violations = validate_request(b, {IMG[0]: image(width=200, height=200)})
    assert {v.field for v in violations} >= {"quality", "duration", "aspect_ratio", "image_urls[0]"}
    assert all(str(v).startswith(f"{v.field}: ") for v in violations)


# ---- output pixels -----------------------------------------------------------------------

TABLE = {
    "16:9": {"480p": (864, 496), "720p": (1280, 720), "1080p": (1920, 1080)},
    "4:3": {"480p": (752, 560), "720p": (1112, 834), "1080p": (1664, 1248)},
    "1:1": {"480p": (640, 640), "720p": (960, 960), "1080p": (1440, 1440)},
    "3:4": {"480p": (560, 752), "720p": (834, 1112), "1080p": (1248, 1664)},
    "9:16": {"480p": (496, 864), "720p": (720, 1280), "1080p": (1080, 1920)},
    "21:9": {"480p": (992, 432), "720p": (1470, 630), "1080p": (2206, 946)},
}


@pytest.mark.parametrize(
    ("ratio", "quality"), [(r, q) for r in TABLE for q in ("480p", "720p", "1080p")]
)
def test_output_pixels_table(ratio, quality):
    assert (
        output_pixels({"model": T2V, "aspect_ratio": ratio, "quality": quality})
        == (TABLE[ratio][quality])
    )
    assert PIXELS[ratio][quality] == TABLE[ratio][quality]


def test_output_pixels_defaults_are_16_9_720p():
    assert output_pixels({"model": T2V}) == (1280, 720)


def test_adaptive_text_to_video_is_16_9():
    assert output_pixels({"model": T2V, "aspect_ratio": "adaptive", "quality": "480p"}) == (
        864,
        496,
    )


@pytest.mark.parametrize(
    ("w", "h", "ratio"),
    [(600, 800, "3:4"), (800, 600, "4:3"), (1280, 720, "16:9"), (720, 1280, "9:16"),
     (1000, 1000, "1:1"), (2100, 900, "21:9"), (1080, 1350, "3:4")],
)  # fmt: skip
def test_adaptive_image_to_video_follows_the_first_image(w, h, ratio):
    b = {"model": I2V, "aspect_ratio": "adaptive", "quality": "720p", "image_urls": IMG[:2]}
    facts = {IMG[0]: image(width=w, height=h), IMG[1]: image(width=1280, height=720)}
    assert output_pixels(b, facts) == TABLE[ratio]["720p"]


def test_adaptive_reference_prefers_video_over_image():
    b = {"model": R2V, "aspect_ratio": "adaptive", "quality": "480p",
         "image_urls": IMG[:1], "video_urls": VID[:1]}  # fmt: skip
    facts = {IMG[0]: image(width=600, height=800), VID[0]: video(width=640, height=640)}
    assert output_pixels(b, facts) == TABLE["1:1"]["480p"]
    assert output_pixels(b, {IMG[0]: image(width=600, height=800)}) == TABLE["3:4"]["480p"]
    assert output_pixels(b, {}) == TABLE["16:9"]["480p"]


def test_adaptive_with_unknown_media_falls_back_to_16_9():
    b = {"model": I2V, "aspect_ratio": "adaptive", "quality": "1080p", "image_urls": IMG[:1]}
    assert output_pixels(b) == (1920, 1080)


def test_a_fixed_ratio_ignores_the_media():
    b = {"model": I2V, "aspect_ratio": "9:16", "quality": "480p", "image_urls": IMG[:1]}
    assert output_pixels(b, {IMG[0]: image(width=1280, height=720)}) == (496, 864)


@pytest.mark.parametrize("ratio", list(TABLE))
def test_nearest_aspect_ratio_of_each_table_entry(ratio):
    for quality in ("480p", "720p", "1080p"):
        w, h = TABLE[ratio][quality]
        assert nearest_aspect_ratio(w / h) == ratio


# ---- task ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id",
    [
        "task-unified-1774857405-abc123",  # the vendor's own examples: 6 characters
        "task-unified-1761313744-abcd1234",  # live answers: 8
        "task-unified-1-a",
        "task-unified-1774857405-0123456789abcdef",
    ],
)
def test_task_id_pattern_accepts_every_suffix_length(task_id):
    assert TASK_ID.match(task_id)


@pytest.mark.parametrize(
    "task_id",
    [
        "not-a-task",
        "task-unified-1774857405-",
        "task-unified--abc123",
        "task-unified-17748a7405-abc123",
        "task-unified-1774857405-ABC123",
        "task-unified-1774857405-abc 123",
        "task-unified-1774857405-abc123/x",
        "task-unified-1774857405-abc123\n",
        "video-unified-1774857405-abc123",
        "",
    ],
)
def test_task_id_pattern_refuses_what_cannot_be_a_task_id(task_id):
    assert not TASK_ID.match(task_id)


def test_the_prompt_is_checked_apart_from_the_rest_in_the_order_validate_request_tells():
    b = body(T2V, prompt="bell\x07", duration=3) | {"model": "no-such-model", "seed": 1}
    assert [v.field for v in validate_request(b)] == ["seed", "model", "prompt", "duration"]
    before, after = check_options(b)
    assert (before, after) == check_options(b | {"prompt": "A lighthouse at dawn"})
    assert validate_request(b) == before + check_prompt(b["prompt"]) + after
