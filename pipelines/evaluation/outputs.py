"""Files of a watch-list evaluation: metrics.json, det.png, list_sizes.csv, report.html."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

LIST_SIZE_COLUMNS = (
    "list_size",
    "sub_lists",
    "threshold",
    "fpir_at_threshold",
    "fpir_ci95",
    "fpir_min",
    "fpir_max",
    "tpir_at_threshold",
    "tpir_ci95",
    "target_fpir",
    "threshold_for_target",
    "threshold_for_target_min",
    "threshold_for_target_max",
    "skipped",
)


def write_outputs(
    metrics: dict[str, Any], out: Path, curves: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Write every file into ``out``; returns {kind: path}. ``curves``: extra DET curves to
    draw beside this one, by label (e.g. a peer's)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "det": out / "det.png",
        "list_sizes": out / "list_sizes.csv",
        "report": out / "report.html",
    }
    paths["metrics"].write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    plot_det({metrics.get("embedder", "facewatch"): metrics["det"], **(curves or {})}, paths["det"])
    write_list_sizes(metrics.get("list_sizes", []), paths["list_sizes"])
    paths["report"].write_text(render_html(metrics, paths), encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


def plot_det(curves: dict[str, dict[str, Any]], path: Path) -> None:
    """FNIR against FPIR, both on log axes (points with a zero rate are left off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for label, det in curves.items():
        pts = [(f, m) for f, m in zip(det["fpir"], det["fnir"], strict=True) if f > 0 and m > 0]
        if pts:
            f, m = zip(*pts, strict=True)
            ax.plot(f, m, label=label, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FPIR (false alarms per non-mated search)")
    ax.set_ylabel("FNIR (mated searches missed)")
    ax.set_title("DET: watch-list identification")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_list_sizes(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=LIST_SIZE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(
                {k: (" ".join(f"{x:.6g}" for x in v) if isinstance(v, list) else v)
                 for k, v in row.items()}
            )  # fmt: skip


def pct(rate: float | None, digits: int = 2) -> str:
    return "n/a" if rate is None else f"{rate:.{digits}%}"


def ci(d: dict[str, Any]) -> str:
    low, high = d["ci95"]
    return f"{pct(d['rate'])} [{pct(low)}, {pct(high)}] ({d['k']}/{d['n']})"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def operating_rows(m: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, p in m["operating_points"].items():
        thr = "n/a" if p["threshold"] is None else f"{p['threshold']:.4f}"
        note = "" if p["resolved"] else "unresolved: fewer than 1/target non-mated searches"
        rows.append([f"FPIR <= {key}", thr, ci(p["tpir"]), ci(p["fpir"]), note])
    if "at_default" in m:
        p = m["at_default"]
        thr = f"{p['threshold']:.4f}"
        rows.append(["default threshold", thr, ci(p["tpir"]), ci(p["fpir"]), ""])
    return rows


def group_rows(per_group: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, g in per_group["groups"].items():
        few = []
        if g["too_few_mated"]:
            few.append("too few mated")
        if g["too_few_nonmated"]:
            few.append("too few non-mated")
        rows.append([name, ci(g["tpir"]), ci(g["fpir"]), ", ".join(few)])
    return rows


def ratio_text(r: dict[str, Any]) -> str:
    if r.get("ratio") is None:
        return str(r.get("note", "n/a"))
    return f"{r['ratio']:.2f} ({r['worst']} vs {r['best']})"


def render_html(m: dict[str, Any], paths: dict[str, Path]) -> str:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>facewatch watch-list evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>",
        f"<h1>Watch-list evaluation: {html.escape(str(m.get('embedder')))}</h1>",
        f"<p>{m['n_mated']} mated and {m['n_nonmated']} non-mated searches against "
        f"{m['enrolled_people']} enrolled people ({m['enrolled_images']} images). "
        f"No face: {m['no_face']}. Rejected by quality gates: {m['rejected']}. These count "
        "as misses (mated) and non-alarms (non-mated).</p>",
        "<h2>Operating points (Wilson 95% intervals)</h2>",
        _table(["point", "threshold", "TPIR", "FPIR", "note"], operating_rows(m)),
        f"<h2>DET</h2><img src='{paths['det'].name}' alt='DET curve'>",
    ]
    if m.get("list_sizes"):
        rows = [
            [r["list_size"], "skipped: " + r["skipped"], "", ""]
            if "skipped" in r
            else [
                r["list_size"],
                f"{pct(r['fpir_at_threshold'], 3)} ({pct(r['fpir_min'], 3)}-"
                f"{pct(r['fpir_max'], 3)})",
                pct(r["tpir_at_threshold"]),
                f"{r['threshold_for_target']:.4f}",
            ]
            for r in m["list_sizes"]
        ]
        parts += [
            f"<h2>List size (<a href='{paths['list_sizes'].name}'>CSV</a>)</h2>",
            _table(
                ["people", "FPIR at default (min-max)", "TPIR at default", "threshold for 1e-3"],
                rows,
            ),
        ]
    for name, g in (m.get("per_group") or {}).items():
        parts += [
            f"<h2>Per group at {html.escape(name)} threshold {g['threshold']:.4f}</h2>",
            _table(["group", "TPIR", "FPIR", "samples"], group_rows(g)),
            f"<p>worst/best FNIR: {html.escape(ratio_text(g['fnir_ratio']))}; "
            f"worst/best FPIR: {html.escape(ratio_text(g['fpir_ratio']))}</p>",
        ]
    parts.append(f"<p><a href='{paths['metrics'].name}'>metrics.json</a></p>")
    return "\n".join(parts)
