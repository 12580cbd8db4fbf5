"""The vendor's model ids, short, for tests that name many of them."""

T2V, I2V, R2V = (
    "seedance-2.0-text-to-video",
    "seedance-2.0-image-to-video",
    "seedance-2.0-reference-to-video",
)
FT2V, FI2V, FR2V = (
    "seedance-2.0-fast-text-to-video",
    "seedance-2.0-fast-image-to-video",
    "seedance-2.0-fast-reference-to-video",
)
