"""Make a colour ground-truth archive video from the CelebA and LFW photos in ../shared/data.

Wanted people are enrolled from some of their photos and appear on screen in *other*
photos of them; distractors are people nobody enrolled. Photos glide across a moving,
noisy background in two lanes (``pipelines/groundtruth.py``), so who is on screen when is
known exactly. Writes, into ``--out``:

- ``video.mp4``: H.264, ``--size`` at 25 fps;
- ``truth.json``: ``{"appearances": [{"person", "label", "start_s", "end_s", "image"}],
  "enrol": {person: [photo, ...]}, "data": "celeba/lfw under ../shared/data"}`` in the
  format ``facewatch evaluate archive --truth`` reads (docs: Accuracy). Photo paths are
  relative to the shared data folder, so nothing of it is copied into the repository.

The test fixture ``tests/fixtures/archive_gt/`` was made with the defaults:
``.venv/bin/python benchmarks/make_groundtruth.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import groundtruth  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def cast(data: Path, wanted: int, distractors: int, enrol_each: int, seed: int):
    """Deterministic: ``wanted`` CelebA people (``enrol_each`` photos enrolled, two others
    shown), and distractor photos of other CelebA and LFW people."""
    rng = np.random.default_rng(seed)
    celeba = sorted(p for p in (data / "celeba").iterdir() if p.is_dir())
    order = rng.permutation(len(celeba))
    chosen = [celeba[i] for i in order[:wanted]]
    others = [celeba[i] for i in order[wanted : wanted + distractors // 2]]
    lfw = sorted(p for p in (data / "lfw").iterdir() if p.is_dir())
    lfw_pick = [lfw[i] for i in rng.choice(len(lfw), distractors - len(others), replace=False)]
    enrol, appear = {}, {}
    engine = _engine()
    for person in chosen:
        photos = sorted(person.glob("*.jpg"))
        usable = [p for p in photos if _enrols(engine, p)]  # as watchlist add would accept
        enrol[person.name] = usable[:enrol_each]
        appear[person.name] = [p for p in photos if p not in enrol[person.name]][:2]
    shown_others = [sorted(p.glob("*.jpg"))[0] for p in others + lfw_pick]
    return enrol, appear, shown_others


def _engine():
    from pipelines.config import Settings
    from pipelines.engine import FaceEngine

    return FaceEngine(Settings(), device="cpu").load(warmup=False)


def _enrols(engine, photo: Path) -> bool:
    from pipelines.images import ImageError

    try:
        engine.probe_face(photo)
    except ImageError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/archive_gt")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--wanted", type=int, default=3)
    ap.add_argument("--distractors", type=int, default=6)
    ap.add_argument("--enrol-each", type=int, default=2)
    ap.add_argument("--seed", type=int, default=6)
    args = ap.parse_args(argv)
    w, h = (int(x) for x in args.size.split("x"))
    enrol, appear, others = cast(
        args.data, args.wanted, args.distractors, args.enrol_each, args.seed
    )
    plan = groundtruth.schedule(
        appear,
        others,
        args.duration,
        seed=args.seed,
        visit_s=(3.0, 4.0),
        height=(int(h * 0.5), int(h * 0.6)),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    groundtruth.render(args.out / "video.mp4", plan, args.duration, size=(w, h), seed=args.seed)

    def rel(p: Path) -> str:
        return str(Path(p).resolve().relative_to(args.data.resolve()))

    truth = {
        "data": "paths are relative to ../shared/data",
        "appearances": [
            {
                "person": a.identity or Path(a.image).parent.name,
                "label": "wanted" if a.identity else "distractor",
                "start_s": round(a.start_s, 3),
                "end_s": round(a.end_s, 3),
                "image": rel(a.image),
            }
            for a in plan
        ],
        "enrol": {person: [rel(p) for p in photos] for person, photos in enrol.items()},
    }
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    wanted = sum(a["label"] == "wanted" for a in truth["appearances"])
    print(f"wrote {args.out}: {len(plan)} appearances ({wanted} wanted), {args.duration:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
