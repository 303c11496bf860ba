"""What capping O-net's candidates would save, and what it would lose.

O-net is MTCNN's costliest stage: about 0.4 ms of CPU per candidate box, a few dozen
candidates per frame (benchmarks/bench_live_stages.py). The obvious cut is to send each
region only its best few R-net candidates. This measures it on region frames as live and
archive search make them (``FaceDetector.detect_regions`` around the faces of the frame
before, found by a whole-frame search): faces found against the uncapped baseline (a face
counts as kept when a capped box overlaps it with IoU >= 0.5) and CPU time per region frame.

Not shipped: see the table in docs/performance.md. Run:
``.venv/bin/python benchmarks/mtcnn_candidates.py``; writes
benchmarks/results/mtcnn_candidates.json.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "video"
OUT = ROOT / "benchmarks" / "results" / "mtcnn_candidates.json"
CLIPS = {  # video, every Nth frame (about 5 fps of video), frames
    "short_hamilton_clip.mp4": (6, 80),
    "archive-colour/video.mp4": (12, 80),
    "facenet_pytorch_video.mp4": (10, 80),
}
CAPS = (None, 1, 2, 4, 8)


def capped_cut(original, cap: list[int | None]):
    """``mtcnn_stages.cut_candidates`` that, for O-net (48 px), keeps only each image's ``cap[0]``
    best candidates by R-net score."""

    def cut(imgs, boxes, image_inds, size):
        if size != 48 or cap[0] is None or len(boxes) == 0:
            return original(imgs, boxes, image_inds, size)
        order = torch.argsort(boxes[:, 4], descending=True, stable=True)
        top = torch.zeros(len(boxes), dtype=torch.bool)
        seen: dict[int, int] = {}
        for i in order.tolist():
            img = int(image_inds[i])
            if seen.get(img, 0) < cap[0]:
                top[i] = True
                seen[img] = seen.get(img, 0) + 1
        data, keep = original(imgs, boxes[top], image_inds[top], size)
        mask = torch.zeros(len(boxes), dtype=torch.bool)
        mask[top.nonzero().squeeze(1)[keep]] = True
        return data, mask

    return cut


def main() -> int:
    import decord

    from pipelines import mtcnn_stages
    from pipelines.detect import FaceDetector
    from pipelines.engine import set_torch_threads
    from pipelines.track import iou_matrix

    set_torch_threads(1)
    cap: list[int | None] = [None]
    mtcnn_stages.cut_candidates = capped_cut(mtcnn_stages.cut_candidates, cap)
    detector = FaceDetector().load()
    rows = []
    for name, (every, count) in CLIPS.items():
        video = decord.VideoReader(str(VIDEOS / name))
        frames = [video[i].asnumpy() for i in range(0, len(video), every)][:count]
        pairs = [(frames[i], frames[i + 1]) for i in range(0, len(frames) - 1, 2)]
        before = [detector.detect([a]) for a, _ in pairs]
        base = None
        for k in CAPS:
            cap[0] = k
            found, t0 = [], time.thread_time()
            for (_, b), prev in zip(pairs, before, strict=True):
                if len(prev.boxes):
                    found.append(
                        detector.detect_regions([b], np.zeros(len(prev), np.int32), prev.boxes)
                    )
            ms = 1000 * (time.thread_time() - t0) / max(len(found), 1)
            base = base or found
            kept = sum(
                int((iou_matrix(a.boxes, c.boxes).max(1) >= 0.5).sum()) if len(c.boxes) else 0
                for a, c in zip(base, found, strict=True)
                if len(a.boxes)
            )
            faces = sum(len(a.boxes) for a in base)
            rows.append({"video": name, "onet_candidates_per_region": k or "all",
                         "faces_baseline": faces, "faces_kept": kept, "faces_lost": faces - kept,
                         "cpu_ms_per_region_frame": round(ms, 1)})  # fmt: skip
            print(rows[-1], flush=True)
    out = {
        "benchmark": "mtcnn_candidates",
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
    }
    OUT.write_text(json.dumps(out, indent=2))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
