"""Turn whatever a user hands us into an RGB uint8 array, explicitly, or say why not.

Conversions are spelt out rather than left to ``PIL.Image.convert``, which clips 16-bit
images instead of scaling them and drops alpha onto whatever colour the pixels carry.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.errors import FacewatchError

DEFAULT_MAX_PIXELS = 120_000_000


class ImageError(FacewatchError, ValueError):
    """The input is not a usable image. The message names the input and the reason."""


class ImageTooLarge(ImageError):
    """The image's header declares more pixels than allowed (found before decoding)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype in (np.uint16, np.int32, np.uint32, np.int64) or np.issubdtype(
        arr.dtype, np.integer
    ):
        top = float(arr.max()) if arr.size else 0.0
        # 16-bit data (PNG/TIFF I;16) spans 0..65535; I-mode may hold 16-bit values too.
        full = 65535.0 if top > 255 else 255.0
        return np.asarray(
            np.clip(arr.astype(np.float32) * (255.0 / full) + 0.5, 0, 255).astype(np.uint8)
        )
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        top = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if top <= 1.0 else 1.0
        return np.asarray(np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8))
    raise ImageError(f"unsupported pixel type {arr.dtype}")


def _composite_alpha(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend over white: transparent regions carry undefined colour otherwise."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.asarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def to_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3), contiguous, from an array or a PIL image of any common mode."""
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"expected an image array (H, W[, 1|2|3|4]), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"image is empty: {arr.shape[1]}x{arr.shape[0]} pixels")
    arr = _scale_to_uint8(arr)
    channels = arr.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if channels == 2:  # grey + alpha
        grey = np.repeat(arr[..., :1], 3, axis=2)
        return _composite_alpha(grey, arr[..., 1])
    if channels == 4:
        return _composite_alpha(arr[..., :3], arr[..., 3])
    return np.ascontiguousarray(arr)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA") if mode != "LA" else img
        return to_rgb_array(np.asarray(rgba))
    if mode == "P":
        has_alpha = "transparency" in img.info
        return to_rgb_array(np.asarray(img.convert("RGBA" if has_alpha else "RGB")))
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    if mode in ("1", "L"):
        return to_rgb_array(np.asarray(img.convert("L")))
    if mode.startswith("I;16") or mode in ("I", "F"):
        return to_rgb_array(np.asarray(img))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


@contextmanager
def _image_errors(name: str) -> Iterator[None]:
    """PIL's many failures as one ImageError that says what is wrong with the input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own limit (about 89 MP) can come before ours: say so, not "unknown format"
        raise ImageTooLarge(
            f"{name}: too many pixels to decode safely, over the limit (a decompression "
            f"bomb?): {exc}"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The image with its header read and its size checked; nothing decoded yet."""
    if not data:
        raise ImageError(f"{name}: empty file, not an image")
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLarge(f"{name}: {w}x{h} = {w * h:,} px > limit {max_pixels:,}")
    if w == 0 or h == 0:
        raise ImageError(f"{name}: image is empty")
    return img


def check_image_header(
    data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """(width, height), or ImageError unless ``data`` starts like an image of an accepted
    size: the cheap check for input that is not decoded yet (or at all)."""
    with _image_errors(name):
        return _open_checked(data, name, max_pixels).size


def decode_image(
    data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, TIFF, ...) to RGB uint8, or raise ImageError."""
    with _image_errors(name):
        img = _open_checked(data, name, max_pixels)
        img.load()
        img = ImageOps.exif_transpose(img)
    if img.size[0] == 0 or img.size[1] == 0:
        raise ImageError(f"{name}: image is empty")
    return to_rgb_array(img)


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) with the longer side at most ``max_side`` (0: no limit), aspect kept
    (each side at least 1 pixel)."""
    if max_side <= 0 or max(width, height) <= max_side:
        return width, height
    f = max_side / float(max(width, height))
    return max(1, round(width * f)), max(1, round(height * f))


def decode_reduced(
    data: bytes, name: str, max_pixels: int, max_side: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode to at most ``max_side`` pixels on the longer side (0: full size): a JPEG is
    decoded at 1/2, 1/4 or 1/8 of its size in the DCT (PIL ``draft``), the rest resized
    (box filter). Returns the RGB uint8 image and the original (width, height) after the
    EXIF rotation, so that the caller can map what it finds back to original pixels.
    ImageError as ``decode_image``; the pixel limit applies to the original size."""
    with _image_errors(name):
        img = _open_checked(data, name, max_pixels)
        header = img.size
        target = working_size(*header, max_side)
        if target != header and img.format == "JPEG":
            img.draft("RGB", target)  # the smallest DCT scale still at least target
        img.load()
        loaded = img.size
        img = ImageOps.exif_transpose(img)
    turned = img.size != loaded  # a 90-degree EXIF rotation swaps the sides
    original = (header[1], header[0]) if turned else header
    want = working_size(*original, max_side)
    if img.size != want:
        img = img.resize(want, Image.Resampling.BOX)
    return to_rgb_array(img), original


def load_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, str(path), max_pixels)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def crop_thumbnail(
    frame: np.ndarray, box: np.ndarray, margin: float = 0.35, max_side: int = 160
) -> np.ndarray:
    """A face crop with context around ``box`` (x1 y1 x2 y2), at most ``max_side`` pixels."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = int(max(0, x1 - mw)), int(max(0, y1 - mh))
    right, bottom = int(min(w, x2 + mw)), int(min(h, y2 + mh))
    if right <= left or bottom <= top:
        return np.zeros((1, 1, 3), np.uint8)
    crop = Image.fromarray(frame[top:bottom, left:right])
    crop.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(crop)
