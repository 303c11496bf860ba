"""Odd image inputs: every one gives the right pixels and faces, or a clear ImageError.

Variants of a real photo are written to tmp_path in each format, then loaded with
``pipelines.images`` and run through the real detector or the whole engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.config import DetectorConfig
from pipelines.detect import FaceDetector
from pipelines.images import ImageError, decode_image, load_image, to_rgb_array

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectorConfig(), device="cpu").load()


@pytest.fixture(scope="module")
def obama(data) -> Image.Image:
    """A real one-face photo, shrunk so the variants stay quick."""
    img = Image.open(data / "known" / "obama.jpg").convert("RGB")
    img.thumbnail((480, 480))
    return img


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def n_faces(detector: FaceDetector, rgb: np.ndarray) -> int:
    return len(detector.detect([rgb]))


def test_grayscale(obama, detector, tmp_path):
    rgb = load_image(save(obama.convert("L"), tmp_path / "grey.png"))
    assert rgb.shape == (*obama.size[::-1], 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert n_faces(detector, rgb) == 1


def test_rgba_transparent_areas_become_white(obama, detector, tmp_path):
    rgba = np.dstack([np.asarray(obama), np.full(obama.size[::-1], 255, np.uint8)])
    rgba[:, :60, :3] = (255, 0, 0)  # colour hidden under full transparency
    rgba[:, :60, 3] = 0
    rgba[:, 60:90, 3] = 128  # half transparent
    rgb = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    assert (rgb[:, :60] == 255).all()
    expected = (rgba[:, 60:90, :3].astype(np.float32) + 255) / 2
    assert np.abs(rgb[:, 60:90] - expected).max() <= 1.5
    assert (rgb[:, 90:] == rgba[:, 90:, :3]).all()
    assert n_faces(detector, rgb) == 1


def test_cmyk_jpeg(obama, detector, tmp_path):
    rgb = load_image(save(obama.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95))
    assert rgb.shape == (*obama.size[::-1], 3)
    # measured 0.817 grey levels (quality 95); reading the inverted Adobe CMYK channels as
    # they are, or dropping K, is off by tens
    assert np.abs(rgb.astype(int) - np.asarray(obama, int)).mean() == pytest.approx(0.82, abs=0.1)
    assert n_faces(detector, rgb) == 1


def test_16_bit_png_is_scaled_not_clipped(obama, detector, tmp_path):
    grey8 = np.asarray(obama.convert("L"))
    grey16 = grey8.astype(np.uint16) * 257  # 0..65535
    path = save(Image.fromarray(grey16), tmp_path / "grey16.png")
    assert Image.open(path).mode.startswith("I")
    rgb = load_image(path)
    assert np.abs(rgb[..., 0].astype(int) - grey8).max() <= 1
    assert n_faces(detector, rgb) == 1


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png(obama, detector, tmp_path, transparent):
    pal = obama.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    kw = {"transparency": int(np.asarray(pal)[0, 0])} if transparent else {}
    rgb = load_image(save(pal, tmp_path / "p.png", **kw))
    assert rgb.shape == (*obama.size[::-1], 3)
    if transparent:
        assert (rgb[0, 0] == 255).all()
    assert n_faces(detector, rgb) == 1


def test_one_pixel_image_has_no_face(detector, tmp_path):
    rgb = load_image(save(Image.new("RGB", (1, 1), (90, 60, 30)), tmp_path / "1x1.png"))
    assert rgb.shape == (1, 1, 3)
    assert n_faces(detector, rgb) == 0


@pytest.mark.timeout(180)
def test_face_in_an_8000px_image_is_found_in_original_pixels(data, detector, tmp_path):
    """Frames over detector.max_side (1920) are downscaled for MTCNN, so a face needs to be
    at least min_face_size / scale wide (here about 40 / 0.24 = 167 px) to be found."""
    face = Image.open(data / "known" / "obama.jpg").convert("RGB")  # face box ~240 px
    canvas = Image.new("RGB", (8000, 8000), (128, 128, 128))
    canvas.paste(face, (5000, 3000))
    rgb = load_image(save(canvas, tmp_path / "huge.jpg", quality=80))
    assert rgb.shape == (8000, 8000, 3)
    del canvas
    dets = detector.detect([rgb])
    assert len(dets) == 1
    x1, y1, x2, y2 = dets.boxes[0]
    assert 5000 < x1 < x2 < 5000 + face.width and 3000 < y1 < y2 < 3000 + face.height
    assert x2 - x1 > 150


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = save(Image.new("L", (3000, 3000)), tmp_path / "big.png")
    with pytest.raises(ImageError, match="limit"):
        load_image(path, max_pixels=1_000_000)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"name,score\nobama,1.0\n", "not a recognised image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a recognised image format|corrupt"),
    ],
    ids=["empty", "text", "png-magic-only"],
)
def test_not_an_image(tmp_path, content, message):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as err:
        load_image(path)
    assert str(path) in str(err.value)


def test_truncated_jpeg(data, tmp_path):
    whole = (data / "known" / "obama.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((2, 3), 7, np.uint8), 7),
        (np.full((2, 3, 1), 7, np.uint8), 7),
        (np.full((2, 3), 0.5, np.float32), 128),
        (np.full((2, 3), 65535, np.uint16), 255),
        (np.ones((2, 3), bool), 255),
        (np.dstack([np.full((2, 3), 50, np.uint8), np.zeros((2, 3), np.uint8)]), 255),
    ],
    ids=["grey", "grey1", "float", "uint16", "bool", "grey+alpha0"],
)
def test_arrays_become_rgb_uint8(array, expected):
    rgb = to_rgb_array(array)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert (rgb == expected).all()


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0), (2, 2, 5), (2, 2, 2, 2)])
def test_unusable_arrays(shape):
    with pytest.raises(ImageError):
        to_rgb_array(np.zeros(shape, np.uint8))


def test_decode_names_the_source():
    with pytest.raises(ImageError, match="upload.bin"):
        decode_image(b"garbage", "upload.bin")


# The whole engine on the same inputs: a usable photo gives one face, the rest ImageError.


@pytest.mark.parametrize("mode", ["L", "CMYK", "P"])
def test_engine_probes_converted_photos(engine, obama, tmp_path, mode):
    path = save(obama.convert(mode), tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}")
    face = engine.probe_face(path)
    assert face.embedding.shape == (engine.info.dim,)
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: save(Image.new("RGB", (1, 1)), p), "no face found"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("not an image"), "not a recognised image format"),
    ],
    ids=["1x1", "empty", "text"],
)
def test_engine_says_why_a_photo_is_unusable(engine, tmp_path, make, message):
    path = tmp_path / "photo.png"
    make(path)
    with pytest.raises(ImageError, match=message):
        engine.probe_face(path)
