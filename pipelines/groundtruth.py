"""Ground-truth videos: known people at known times, for tests, benchmarks and drills.

Photos are pasted onto a moving, noisy background (so no two frames are identical and
nothing can be skipped as static) and glide across the frame while they are on screen.
The returned schedule says exactly who is visible when, so a search's sightings can be
scored for recall and precision with time overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.images import load_image


@dataclass(frozen=True)
class Appearance:
    identity: str
    image: Path
    start_s: float
    end_s: float
    start_xy: tuple[float, float]  # top-left corner at start, as fractions of the frame
    end_xy: tuple[float, float]
    height: int  # pasted photo height in pixels


PAN = 400  # the background texture is this much wider than the frame and pans slowly


def _texture(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth, lightly grained scene texture; panning it makes every frame different."""
    x = np.linspace(0, 1, w + PAN, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    base = 100 + 45 * np.sin(2 * np.pi * x * 3.0) * np.cos(2 * np.pi * y * 1.5)
    grain = rng.normal(0, 4, size=(h // 4 + 1, (w + PAN) // 4 + 1)).astype(np.float32)
    base = base + np.kron(grain, np.ones((4, 4), np.float32))[:h, : w + PAN]
    rgb = np.stack([base, base * 0.9 + 20, base * 0.8 + 35], axis=2)
    return np.asarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _background(texture: np.ndarray, w: int, t: float) -> np.ndarray:
    offset = int(t * 15) % PAN
    return texture[:, offset : offset + w].copy()


def _paste(frame: np.ndarray, photo: np.ndarray, x: int, y: int) -> None:
    h, w = frame.shape[:2]
    ph, pw = photo.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = photo[y0 - y : y1 - y, x0 - x : x1 - x]


def render(
    path: Path,
    appearances: list[Appearance],
    duration_s: float,
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
    seed: int = 0,
) -> Path:
    """Write an H.264 MP4 with ``appearances`` over ``duration_s`` seconds."""
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    texture = _texture(w, h, rng)
    photos = {}
    for a in appearances:
        img = Image.fromarray(load_image(a.image))
        scale = a.height / img.height
        photos[a] = np.asarray(
            img.resize((round(img.width * scale), a.height), Image.Resampling.BILINEAR)
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "26", "preset": "veryfast"}
        for i in range(int(round(duration_s * fps))):
            t = i / fps
            frame = _background(texture, w, t)
            for a in appearances:
                if a.start_s <= t < a.end_s:
                    u = (t - a.start_s) / max(a.end_s - a.start_s, 1e-6)
                    fx = a.start_xy[0] + u * (a.end_xy[0] - a.start_xy[0])
                    fy = a.start_xy[1] + u * (a.end_xy[1] - a.start_xy[1])
                    _paste(frame, photos[a], int(fx * w), int(fy * h))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def schedule(
    people: dict[str, list[Path]],
    distractors: list[Path],
    duration_s: float,
    seed: int = 0,
    visit_s: tuple[float, float] = (4.0, 8.0),
    height: tuple[int, int] = (180, 260),
) -> list[Appearance]:
    """Alternate watched people and distractors in two lanes, with gaps, over the video."""
    rng = np.random.default_rng(seed)
    pool = [(name, p) for name, paths in people.items() for p in paths]
    pool += [("", p) for p in distractors]
    order = rng.permutation(len(pool))
    out: list[Appearance] = []
    lanes = [0.5, 0.5]  # next free time in each lane (left, right half)
    k = 0
    while min(lanes) < duration_s - visit_s[0]:
        lane = int(np.argmin(lanes))
        start = lanes[lane]
        end = min(duration_s, start + rng.uniform(*visit_s))
        name, p = pool[order[k % len(pool)]]
        k += 1
        x0 = 0.05 + 0.5 * lane + rng.uniform(0, 0.1)
        y0 = rng.uniform(0.05, 0.3)
        out.append(
            Appearance(
                name,
                p,
                start,
                end,
                (x0, y0),
                (x0 + rng.uniform(-0.05, 0.1), y0 + rng.uniform(0, 0.1)),
                int(rng.integers(*height)),
            )
        )
        lanes[lane] = end + rng.uniform(1.0, 3.0)
    return out


def truth(appearances: list[Appearance]) -> list[tuple[str, float, float]]:
    """(identity, start_s, end_s) of every watched person's visit."""
    return [(a.identity, a.start_s, a.end_s) for a in appearances if a.identity]


def score_sightings(
    gt: list[tuple[str, float, float]],
    found: list[tuple[str, float, float]],
    slack_s: float = 1.0,
) -> dict[str, float]:
    """Recall over true visits and precision over sightings, matched by identity and time
    overlap (with ``slack_s`` of tolerance for sampling)."""

    def overlaps(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
        return a[0] == b[0] and a[1] - slack_s <= b[2] and b[1] - slack_s <= a[2]

    hit = sum(any(overlaps(g, f) for f in found) for g in gt)
    good = sum(any(overlaps(g, f) for g in gt) for f in found)
    return {
        "visits": len(gt),
        "found_visits": hit,
        "recall": hit / len(gt) if gt else 1.0,
        "sightings": len(found),
        "correct_sightings": good,
        "precision": good / len(found) if found else 1.0,
    }


@dataclass(frozen=True)
class Cast:
    """Who is in a ground-truth video: each watched person is enrolled from one photo and
    appears on screen in *other* photos of them; distractors are people nobody enrolled."""

    enrol: dict[str, Path]
    appear: dict[str, list[Path]]
    distractors: list[Path]


def lfw_cast(
    lfw: Path, watched: int, distractors: int, seed: int = 0, photos_each: int = 2
) -> Cast:
    """Pick a deterministic cast from an LFW-style folder (``<Person>/<Person>_NNNN.jpg``)."""
    rng = np.random.default_rng(seed)
    people = sorted(p for p in Path(lfw).iterdir() if p.is_dir())
    photos = {p.name: sorted(p.glob("*.jpg")) for p in people}
    rich = [n for n, ph in photos.items() if len(ph) > photos_each]
    if len(rich) < watched:
        raise ValueError(f"{lfw}: only {len(rich)} people have {photos_each + 1}+ photos")
    chosen = [rich[i] for i in sorted(rng.choice(len(rich), watched, replace=False))]
    others = [n for n in photos if n not in chosen]
    picked = [others[i] for i in sorted(rng.choice(len(others), distractors, replace=False))]
    return Cast(
        enrol={n: photos[n][0] for n in chosen},
        appear={n: photos[n][1 : 1 + photos_each] for n in chosen},
        distractors=[photos[n][0] for n in picked],
    )
