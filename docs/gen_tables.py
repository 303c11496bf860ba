"""The accuracy and benchmark tables of the docs, read from ``benchmarks/results/*.json``.

Each function turns one results file into Markdown tables, so a number in the docs is the
number the benchmark wrote. ``docs/gen.py`` writes them under ``docs/generated/``; the
accuracy and performance pages include them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

TARGETS = ("0.01", "0.001", "0.0002")


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def rate_ci(r: dict[str, Any], digits: int = 1) -> str:
    lo, hi = r["ci95"]
    return f"{pct(r['rate'], digits)} [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def threshold_name(t: float) -> str:
    """The peer's scores are negated L2 distances; facewatch's are cosine similarities."""
    return f"L2 {-t:g}" if t < 0 else f"cosine {t:g}"


def tpir_cells(res: dict[str, Any], with_ci: bool) -> list[str]:
    cells = []
    for target in TARGETS:
        point = res["operating_points"][target]
        text = rate_ci(point["tpir"]) if with_ci else pct(point["tpir"]["rate"])
        cells.append(text if point["resolved"] else f"{text} (unresolved)")
    return cells


def at_default(res: dict[str, Any]) -> str:
    if "at_default" not in res:
        return "n/a (own score scale)"
    d = res["at_default"]
    return (
        f"{pct(d['fpir']['rate'], 2)} / {pct(d['tpir']['rate'])} ({threshold_name(d['threshold'])})"
    )


def accuracy_systems(acc: dict[str, Any]) -> str:
    header = ["system", "mated / non-mated", "TPIR@FPIR 1e-2", "1e-3", "2e-4", "rank-1"]
    header.append("FPIR / TPIR at its default threshold")
    rows = []
    for name in ("peer", "facewatch"):
        res = acc["results"][name]
        counts = f"{res['n_mated']:,} / {res['n_nonmated']:,}"
        rank1 = pct(res["rank1"]["rate"])
        rows.append([name, counts, *tpir_cells(res, True), rank1, at_default(res)])
    return table(header, rows)


def accuracy_levers(acc: dict[str, Any], system: str) -> str:
    header = ["variant", "mated", "TPIR@FPIR 1e-2", "1e-3", "2e-4", "rank-1"]
    header.append("FPIR / TPIR at the default threshold")
    rows = []
    for name, res in acc["results"].items():
        if name.split(",")[0].split(" +")[0] != system:
            continue
        cells = tpir_cells(res, False)
        rows.append(
            [name, f"{res['n_mated']:,}", *cells, pct(res["rank1"]["rate"]), at_default(res)]
        )
    return table(header, rows)


def accuracy_lambs(acc: dict[str, Any]) -> str:
    header = ["system", "false alarms at its default threshold", "people they fall on"]
    header.append("most on one person")
    rows = []
    for name in ("peer", "facewatch"):
        lambs = acc["results"][name]["lambs_at_default"]
        top = ", ".join(str(t["alarms"]) for t in lambs["top"])
        rows.append([name, lambs["false_alarms"], lambs["people_with_alarms"], top])
    unusable = acc["results"]["facewatch"]["unusable"]
    notes = "\n".join(
        f"- facewatch, {kind} probes without a usable face: "
        + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
        for kind, counts in unusable.items()
    )
    return table(header, rows) + "\n" + notes + "\n"


def accuracy_threshold(acc: dict[str, Any]) -> str:
    prop = acc["proposed_default"]
    rows = [
        [f"LFW half {f['chosen_on']}", f"{f['threshold']:.4f}", rate_ci(f["held_out_fpir"], 3)]
        for f in prop["folds"]
    ]
    out = table(["threshold chosen on", "threshold for FPIR 1e-3", "FPIR on the other half"], rows)
    at = prop["at_proposed"]
    out += (
        f"\nAt cosine {prop['proposed']:g} on all the data: FPIR {rate_ci(at['fpir'], 3)} "
        f"({at['fpir']['k']} of {at['fpir']['n']:,}), TPIR {rate_ci(at['tpir'])}.\n"
    )
    return out


def accuracy_list_sizes(acc: dict[str, Any]) -> str:
    header = ["list size", "sub-lists", "FPIR at the threshold", "TPIR"]
    header.append("threshold for FPIR 1e-3 (min-max)")
    rows = []
    for s in acc["results"]["facewatch"]["list_sizes"]:
        fpir = f"{pct(s['fpir_at_threshold'], 2)} ({pct(s['fpir_min'], 2)}-{pct(s['fpir_max'], 2)})"
        spread = f"{s['threshold_for_target_min']:.3f}-{s['threshold_for_target_max']:.3f}"
        thr = f"{s['threshold_for_target']:.3f} ({spread})"
        rows.append([s["list_size"], s["sub_lists"], fpir, pct(s["tpir_at_threshold"]), thr])
    threshold = acc["results"]["facewatch"]["list_sizes"][0]["threshold"]
    return f"At cosine {threshold:g}:\n\n" + table(header, rows)


def accuracy_track_rules(acc: dict[str, Any]) -> str:
    rules = acc["track_rules"]
    header = ["track of k photos", "`top_n`", f"false sightings at {rules['threshold']:g}"]
    header += [f"found at {rules['threshold']:g}", "found at 0.5% false", "found at 1% false"]
    rows = []
    for k, spec in rules["lengths"].items():
        for n, rule in spec["top_n"].items():
            label = f"k = {k} ({spec['mated']} mated, {spec['nonmated']:,} passer-by tracks)"
            at = rule["at_false_rate"]
            rows.append(
                [label, n, rule["false_sightings"], pct(rule["found"], 0)]
                + [pct(at["0.005"]["found"], 0), pct(at["0.01"]["found"], 0)]
            )
    return table(header, rows)


def lfw(data: dict[str, Any]) -> str:
    rows = []
    for v in data["variants"]:
        extra = []
        if "scales" in v:
            extra.append("scales " + ", ".join(f"{s:g}" for s in v["scales"]))
        if "landmarks" in v:
            extra.append(f"landmarks from {v['landmarks']}")
        flip = "yes" if v["flip_average"] else "no"
        acc = pct(v["mean_accuracy"], 2)
        rows.append([f"`{v['template']}`", flip, "; ".join(extra) or "-", acc, pct(v["std"], 2)])
    header = ["alignment template", "flip averaging", "other", "mean accuracy", "std"]
    note = (
        f"{data['n_pairs']:,} pairs, {data['n_images']:,} images, {data['no_face']} images "
        f"with no face found (a centre box is used). Default for video faces: "
        f"`{data['default']['template']}`, flip averaging "
        f"{'on' if data['default']['flip_average'] else 'off'}"
        + (
            "; for photos (enrolment and probe photos, and so for LFW's photo pairs): the same "
            "template at scales "
            + ", ".join(f"{x:g}" for x in data["default"]["photo_scales"])
            + ", each with its mirror image"
            if data["default"].get("photo_tta")
            else ""
        )
        + ".\n\n"
    )
    return note + table(header, rows)


def archive_speed(arch: dict[str, Any]) -> str:
    tot, search, ratios = arch["totals"], arch["search"], arch["ratios"]
    rows = [
        ["decode only (decord, every frame)", f"{tot['decode_speed']:.1f}"],
        [
            "naive loop (MTCNN + embedder per sampled frame, one process)",
            f"{tot['naive_speed']:.2f}",
        ],
        [
            f"`facewatch search`, end to end ({search['wall_s']:.1f} s wall)",
            f"{search['speed_end_to_end']:.2f}",
        ],
        [
            f"`facewatch search`, in the job ({search['job_wall_s']:.1f} s)",
            f"{search['speed_in_job']:.2f}",
        ],
        ["search / naive, end to end", f"{ratios['search_over_naive']:.2f}"],
        ["search / naive, in the job", f"{ratios['search_in_job_over_naive']:.2f}"],
        ["search / decode", f"{ratios['search_over_decode']:.2f}"],
    ]
    header = [
        f"video-seconds per wall-second ({arch['fps']:g} fps, {tot['video_s']:.0f} s of video)",
        "value",
    ]
    machine = f"{arch['machine']['cpus']} CPU cores"
    return f"Measured on {machine}.\n\n" + table(header, rows)


STAGE_ORDER = ("decode", "detect_whole", "detect_regions", "detect", "align_quality_crops",
               "embed", "match", "track_decide", "align_match_other", "other")  # fmt: skip


def archive_stages(arch: dict[str, Any]) -> str:
    """Per video, the search's and the naive loop's stages in one process (CPU seconds,
    wall in brackets), and the in-process ratios (bench_archive's ``stages``)."""
    st = arch.get("stages")
    if not st:
        return "Not measured yet: the next `bench_archive.py` run records it.\n"
    rows = []
    for name, v in st["videos"].items():
        for side in ("search", "naive"):
            stages = v[side]["stages"]
            parts = [f"{k} {stages[k]['cpu_s']:.1f} ({stages[k]['wall_s']:.1f})"
                     for k in STAGE_ORDER if k in stages]  # fmt: skip
            rows.append([f"`{name}`", side, f"{v[side]['cpu_s']:.1f} ({v[side]['wall_s']:.1f})",
                         "; ".join(parts)])  # fmt: skip
        ratios = f"search/naive {v['search_over_naive']:.2f} wall, "
        ratios += (
            f"{v['search_over_naive_cpu']:.2f} CPU; search/decode {v['search_over_decode']:.3f}"
        )
        rows.append([f"`{name}`", "in-process ratios", "", ratios])
    header = ["video", "path", "CPU s (wall s)", "stages: CPU s (wall s)"]
    tail = (f"\nThe end-to-end search spent {st['stages_remainder_s']:.1f} s of wall time beyond"
            " its in-process stages (Ray, Serve, the store, start-up).\n")  # fmt: skip
    return table(header, rows) + tail


def archive_recall(runs: list[dict[str, Any]]) -> str:
    """Visits found per ground-truth video: the naive loop, the search's alert tier
    (sightings, default and ``top_n`` 1) and both tiers (sightings + candidates)."""
    header = ["ground-truth video", "visits", "naive loop", "sightings (`top_n` 3)"]
    header += ["sightings, `top_n` 1", "sightings + candidates", "false sightings / candidates"]
    header += ["non-listed appearances"]
    rows, sums = [], [0] * 8
    for arch in runs:
        gt = arch["groundtruth"]
        tiers = gt["search_tiers"]
        cells = [gt["visits"]] + [
            gt[k]["found_visits"] for k in ("naive", "search", "search_top_n_1")
        ]
        cells += [tiers["recall_with_candidates"]["k"], tiers["false_sightings"]]
        cells += [tiers["false_candidates"], tiers["distractor_appearances"]]
        rows.append([f"`{gt['video']}`", *cells[:5], f"{cells[5]} / {cells[6]}", cells[7]])
        sums = [a + b for a, b in zip(sums, cells, strict=True)]
    rows.append(["all", *sums[:5], f"{sums[5]} / {sums[6]}", sums[7]])
    return table(header, rows)


def live(bench: dict[str, Any]) -> str:
    phases = bench["phases"]
    header = [""] + [
        f"{p['cameras']} camera(s){' + archive' if 'archive' in name else ''}"
        f"{' + abusive pusher' if 'abusive' in name else ''}"
        for name, p in phases.items()
    ]
    spec = [
        ("frames sent", lambda p: p["frames_sent"]),
        ("analysed fps per camera (min)", lambda p: f"{p['analysed_fps_per_camera_min']:g}"),
        ("dropped (newest-frame rule)", lambda p: pct(p["drop_rate"], 0)),
        (
            "frame-to-result p50 / p99 ms",
            lambda p: _p50_p99(p["frame_to_result_ms"]),
        ),
        (
            "frame-to-alert p50 / p99 ms",
            lambda p: _p50_p99(p["frame_to_alert_ms"]),
        ),
        ("model time per frame in the pool", lambda p: f"{p['pool']['model_ms_per_frame']:.0f} ms"),
        ("pool busy", lambda p: pct(p["pool"]["pool_busy_fraction"], 0)),
        (
            "pool replicas read back",
            lambda p: f"{p['pool']['replicas_seen_after']} of {p['pool']['replicas']}",
        ),
        ("machine load average (1 min)", _phase_load),
    ]
    if all("hub_stages_ms" in p for p in phases.values()):  # runs since the stage timing
        spec += [
            (f"hub stage {stage} p50 / p99 ms", functools.partial(_stage, stage=stage))
            for stage in next(iter(phases.values()))["hub_stages_ms"]  # as recorded
        ]
        spec += [("pool: model call p99 / max ms", _model_call)]
    if all("cpu_cores" in p for p in phases.values()):  # runs since the CPU accounting
        spec += [("CPU cores used, all processes", lambda p: f"{p['cpu_cores']['total']:.2f}")]
        spec += [
            (f"  {label}", functools.partial(_cores, part=part))
            for label, part in (
                ("FacePool replicas", "FacePool"),
                ("LiveHub", "LiveHub"),
                ("Api and HTTP proxy", "Api|ProxyActor"),
                ("the benchmark's cameras (driver)", "driver"),
            )
        ]
    rows = [[label] + [fn(p) for p in phases.values()] for label, fn in spec]
    met = ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in bench["targets_met"].items())
    return (
        f"`--seconds {bench['args']['seconds']}`, {bench['args']['fps']} fps per camera, "
        f"{bench['machine']['cpus']} CPU cores.\n\n"
        + table(header, rows)
        + f"\np99 with the archive search / without: **{bench['p99_ratio_archive_vs_alone']}**; "
        + f"with one abusive pusher / without: **{bench.get('p99_ratio_abuser_vs_alone', '-')}**. "
        f"Targets: {met}.\n" + _live_capacity(bench)
    )


def _cores(p: dict[str, Any], part: str) -> str:
    """CPU cores the process groups whose names hold one of ``part`` ("a|b") used."""
    groups = p["cpu_cores"]["by_group"]
    return f"{sum(c for g, c in groups.items() if any(x in g for x in part.split('|'))):.2f}"


def _stage(p: dict[str, Any], stage: str) -> str:
    ms = p["hub_stages_ms"].get(stage)
    return _p50_p99(ms) if ms else "-"


def _model_call(p: dict[str, Any]) -> str:
    """The slowest replica's p99 and max of its live model calls over the phase."""
    calls = [r.get("model", {}) for r in p.get("server_timing", {}).get("pool_live_ms", [])]
    calls = [c for c in calls if c]
    if not calls:
        return "-"
    return f"{max(c['p99'] for c in calls):.0f} / {max(c['max'] for c in calls):.0f}"


def _p50_p99(ms: dict[str, Any]) -> str:
    """ "p50 / p99" in ms, or "-" where nothing was timed (no alert in the phase)."""
    if ms["p50"] is None:
        return "-"
    return f"{ms['p50']:.0f} / {ms['p99']:.0f}"


def _phase_load(p: dict[str, Any]) -> str:
    """The 1-minute load average next to the phase (before it, or else after it)."""
    load = p.get("load_average_before") or p.get("load_average_after")
    return f"{load[0]:g}" if load else "-"


def _live_capacity(bench: dict[str, Any]) -> str:
    cap, note = bench.get("capacity"), bench.get("note")
    out = ""
    if cap:
        out += (
            f"\nLargest camera count measured that holds the target (5 fps each, p99 at most "
            f"500 ms, under 1% dropped): **{cap['largest_holding_target']}** (measured: "
            f"{', '.join(map(str, cap['measured']))}).\n"
        )
    if note:
        out += f"\nMachine during the run: {note}\n"
    return out + _cpu_budget(bench)


def _cpu_budget(bench: dict[str, Any]) -> str:
    """What the largest live-only phase says about the cores 8 cameras at 5 fps need: the
    pool's CPU per analysed frame, and the CPU of receiving each pushed frame (LiveHub, Api
    and Serve's HTTP proxy), scaled to 40 frames a second."""
    live = [p for n, p in bench["phases"].items() if n.startswith("live only") and "cpu_cores" in p]
    if not live:
        return ""
    p = max(live, key=lambda p: p["cameras"])
    groups, seconds = p["cpu_cores"]["by_group"], float(bench["args"]["seconds"])
    analysed_fps = p["statuses"].get("analysed", 0) / seconds
    pushed_fps = p["frames_sent"] / seconds

    def cores(*parts: str) -> float:
        return sum(c for g, c in groups.items() if any(x in g for x in parts))

    model_ms = cores("FacePool") / analysed_fps * 1000
    receive_ms = cores("LiveHub", ":Api", "ProxyActor") / pushed_fps * 1000
    need = 40 * (model_ms + receive_ms) / 1000
    return (
        f"\n**CPU at {p['cameras']} cameras** (live only): all processes used "
        f"{p['cpu_cores']['total']:.2f} of {p['cpu_cores']['machine_cores']} cores. The pool "
        f"spent {model_ms:.0f} ms of CPU per analysed frame ({cores('FacePool'):.2f} cores for "
        f"{analysed_fps:.1f} frames/s); receiving a pushed frame (the LiveHub, the API and "
        f"Serve's HTTP proxy) {receive_ms:.0f} ms ({pushed_fps:.0f} frames/s). Eight cameras "
        f"at 5 fps at these costs need {need:.2f} cores before Ray's own processes.\n"
    )


def live_cost(bench: dict[str, Any]) -> str:
    rows = [
        [
            mode,
            f"{m['model_ms_per_camera_frame']:.0f} ms",
            f"{bench['speedup_vs_whole_per_frame'][mode]:.2f}x",
            m["faces_found"],
            m["usable_faces"],
        ]
        for mode, m in bench["modes"].items()
    ]
    header = ["mode", "model time per camera frame", "speed-up", "faces found", "usable"]
    note = f" Machine: {bench['note']}" if bench.get("note") else ""
    return (
        f"{bench['args']['cameras']} cameras, {bench['camera_frames']} camera frames, one "
        f"model thread.{note}\n\n" + table(header, rows)
    )


def live_stages(bench: dict[str, Any]) -> str:
    """benchmarks/bench_live_stages.py: CPU time per stage, and inside MTCNN."""
    total = bench["total_ms_per_camera_frame"]
    stages = sorted(bench["ms_per_camera_frame"].items(), key=lambda kv: -kv[1])
    rows = [[name, f"{ms:.2f}", f"{100 * ms / total:.0f}%"] for name, ms in stages]
    rows.append(["**total**", f"**{total:.2f}**", "100%"])
    out = (
        f"{bench['args']['cameras']} cameras, {bench['camera_frames']} camera frames, "
        "CPU ms of one thread per camera frame.\n\n"
        + table(["stage", "ms per camera frame", "share"], rows)
    )
    parts = [p for m in bench["mtcnn"].values() for p in m["ms_per_camera_frame"]]
    parts = list(dict.fromkeys(parts))
    inside = [
        [stage]
        + [f"{m['ms_per_camera_frame'][p]:.2f}" for p in parts]
        + [f"{m['candidates_per_camera_frame']['R-net']:.0f}",
           f"{m['candidates_per_camera_frame']['O-net']:.0f}"]
        for stage, m in bench["mtcnn"].items()
    ]  # fmt: skip
    header = ["inside MTCNN (ms)", *parts, "candidates to R-net", "candidates to O-net"]
    return out + "\n" + table(header, inside)


def mtcnn_candidates(bench: dict[str, Any]) -> str:
    """benchmarks/mtcnn_candidates.py: capping O-net's candidates per region."""
    rows = [
        [r["video"], r["onet_candidates_per_region"], f"{r['faces_kept']} of {r['faces_baseline']}",
         r["faces_lost"], f"{r['cpu_ms_per_region_frame']:.1f}"]
        for r in bench["rows"]
    ]  # fmt: skip
    header = ["video", "O-net candidates per region", "faces kept", "lost", "CPU ms per frame"]
    return table(header, rows)


def archive_options(bench: dict[str, Any]) -> str:
    """benchmarks/archive_options.py: the embedder options, each beside float32 eager."""
    rows = []
    if "int8" in bench:
        q = bench["int8"]
        cos = q["cosine_to_float"]
        rows.append(
            [
                "int8 dynamic quantisation",
                f"{q['layers_quantised']} of {q['layers_quantised'] + q['conv_layers_left_float']}"
                " layers quantised",
                f"{q['int8_vs_float']['cpu_a_over_b_median']:.2f}",
                f"{cos['min']:.5f}",
            ]
        )
    if "compile" in bench and "error" not in bench["compile"]:
        c = bench["compile"]
        rows.append(
            [
                "`torch.compile`",
                f"{c['compile_s']:g} s to compile one batch shape",
                f"{c['compiled_vs_float']['cpu_a_over_b_median']:.2f}",
                f"{c['cosine_to_float_min']:.5f}",
            ]
        )
    header = ["option", "cost", "embedder CPU vs float32 (batch of 64)", "lowest cosine"]
    load = bench["load_avg_before"][0]
    return f"{bench['cpus']} cores, 1-minute load average {load:.1f} before.\n\n" + table(
        header, rows
    )


def cluster_scaling(bench: dict[str, Any]) -> str:
    """benchmarks/bench_cluster.py: the same search on 1 and on 2 pool nodes."""
    rows = []
    for r in bench["runs"]:
        st = r["stages"]
        rows.append(
            [
                r["pool_nodes"],
                f"{r['job_wall_s']:.1f} s",
                r["frames"],
                f"{st['decode_s']:.1f} s",
                f"{st['pool_s']:.1f} s",
                f"{st['rest_s']:.1f} s",
                f"{st['store_writes_s']:.3f} s",
                ", ".join(r["sightings"]) or "-",
            ]
        )
    header = ["pool nodes", "job wall", "frames", "decode", "pool (busy)", "rest", "store"]
    same_ids = bench.get("same_match_ids")
    return (
        table([*header, "found"], rows)
        + f"\nSpeed-up 1 -> 2 pool nodes: **{bench['speedup']}x** (efficiency "
        f"{pct(bench['efficiency'], 0)}); the same people found: {bench['same_sightings']}"
        + ("" if same_ids is None else f"; the same match ids: {same_ids}")
        + f". Machine: {bench['machine']['cpus']} cores, load average before/after "
        f"{bench['machine']['load_before'][0]:g} / {bench['machine']['load_after'][0]:g} "
        f"({bench['others_running'] or 'nothing else noted'}).\n"
        + (f"\nLayout: {bench['layout']}.\n" if bench.get("layout") else "")
        + _cluster_limits(bench.get("limits"))
        + _cluster_paper(bench["paper_10_gpu_nodes"])
    )


def _cluster_limits(lim: dict[str, Any] | None) -> str:
    if not lim:
        return ""
    return (
        f"\nWhat bounds the speed-up: the pool path was {pct(lim['pool_share_of_1_node_wall'], 0)} "
        f"of the 1-node wall, so halving it gives at most **{lim['amdahl_max_speedup']}x**; "
        f"Ray was given {lim['logical_cpus_2_nodes']} logical CPUs on {lim['machine_cores']} "
        f"cores. Pool ms per frame (1 node, 2 nodes): {lim['pool_ms_per_frame'][0]:g}, "
        f"{lim['pool_ms_per_frame'][1]:g}; decode ms per frame: "
        f"{lim['decode_ms_per_frame'][0]:g}, {lim['decode_ms_per_frame'][1]:g}; rest: "
        f"{lim['rest_s'][0]:g} s, {lim['rest_s'][1]:g} s.\n"
    )


def _cluster_paper(model: dict[str, Any]) -> str:
    rates = ", ".join(f"{k} {v:g}" for k, v in model["frames_per_s"].items())
    text = (
        f"\nOn paper, {model['nodes']} GPU pool nodes (each replica assumed "
        f"{model['assumed_gpu_speedup_per_replica']:g}x one CPU thread), frames per second "
        f"each stage sustains: {rates}; the wall: **{model['wall']}**.\n"
    )
    moves = model.get("moves_it") or {}
    if moves:
        text += "\n" + table(["stage", "what moves it"], [[k, v] for k, v in moves.items()])
    return text


def cluster_live(bench: dict[str, Any]) -> str:
    """benchmarks/bench_cluster.py --live: cameras on the 2-pool-node cluster."""
    live = bench.get("live")
    if not live:
        return (
            "Not measured yet: `benchmarks/bench_cluster.py --live` records it in "
            "benchmarks/results/bench_cluster.json.\n"
        )
    rows = []
    for name in ("live only", "live + archive"):
        r = live[name]
        ftr = r["frame_to_result_ms"]
        rows.append(
            [
                name,
                f"{r['cameras']} x {r['target_fps']:g} fps",
                f"{r['analysed_fps_per_camera_min']:g}",
                f"{ftr['p50']} ms",
                f"{ftr['p99']} ms",
                pct(r["drop_rate"]),
                r.get("archive_search_ran_throughout", "-"),
            ]
        )
    header = ["phase", "cameras", "analysed fps (min)", "p50", "p99", "dropped", "search ran"]
    return table(header, rows)


def index_small(bench: dict[str, Any]) -> str:
    real = bench["real"]
    rows = [
        [
            "archive re-search with a probe (decode and detect again)",
            f"{real['archive_research']['wall_s']:.1f} s",
        ],
        [
            f"`facewatch index` of the same videos ({real['index']['faces']} faces stored)",
            f"{real['index']['wall_s']:.1f} s",
        ],
        ["indexed probe search of them", f"{real['indexed_search_small']['wall_s']:.2f} s"],
    ]
    video_s = real["archive_research"]["video_s"]
    return f"{bench['machine']}.\n\n" + table([f"{video_s:g} s of video", "wall time"], rows)


def _queries(q: dict[str, Any], name: str) -> str:
    entry = q.get(name, {})
    return "{p50_ms:,.0f} / {p99_ms:,.0f} ms".format(**entry) if "p50_ms" in entry else "-"


def _build(part: dict[str, Any]) -> tuple[str, str]:
    build = part.get("build")
    if not build:
        return "-", "-"
    insert = f"{build['insert_rows_per_s']:,} faces/s ({build['insert_s'] / 60:.1f} min)"
    if build["index"]["pending_index_rows"]:
        insert += f"; {build['index']['pending_index_rows']:,} faces not yet indexed when queried"
    if build.get("earlier_run_load"):
        insert += f" (built in an earlier run, {build['earlier_run_load']})"
    return insert, f"{build['flush_index_load_s']:g} s"


def index_million(bench: dict[str, Any]) -> str:
    rows = []
    for key in ("lite", "server"):
        part = bench.get(key)
        if not part or "error" in part:  # a build whose queries did not finish keeps its row
            insert, build = _build(part or {})
            error = (part or {}).get("error", "not run")
            rows.append([key, insert, build, error, "-", "-", "-", "-"])
            continue
        memory = (
            f"{part['rss_growth_mb']:,} MB RSS growth"
            if part.get("rss_growth_mb")
            else f"{part['rss_mb']:,} MB RSS"
        )
        q = part["queries"]
        rows.append(
            [
                part["store"].split(" at ")[0],
                *_build(part),
                _queries(q, "search_top100"),
                _queries(q, "search_top1000"),
                _queries(q, "indexed_search_top1000"),
                _queries(q, "indexed_search_top1000_by_filter"),
                memory,
            ]
        )
    header = [
        f"store ({bench['rows']:,} faces)",
        "insert",
        "flush + index + load",
        "p50 / p99 top-100",
        "p50 / p99 top-1000",
        "p50 / p99 full indexed search, tracks read by id",
        "the same, tracks read by filter",
        "memory",
    ]
    synthetic = bench["lite"].get("synthetic", {}) if "lite" in bench else {}
    what = "".join(
        f"- {k.replace('_', ' ')}: {v}\n" for k, v in synthetic.items() if isinstance(v, str)
    )
    return (
        f"{bench['note']}\n\n{what}\n" + table(header, rows) + _read_back(bench) + _ef_curve(bench)
    )


def _read_back(bench: dict[str, Any]) -> str:
    lines = [
        f"- {key}: one file's candidate tracks read back by the indexed filter in "
        f"{rb['indexed_ms']:,.0f} ms; a filter on an unindexed field (a scan) takes "
        f"{rb['unindexed_scan_ms']:,.0f} ms."
        for key in ("lite", "server")
        if "indexed_ms" in (rb := bench.get(key, {}).get("queries", {}).get("read_back", {}))
    ]
    return "\n\n" + "\n".join(lines) if lines else ""


def _ef_curve(bench: dict[str, Any]) -> str:
    rows = [
        [store, c["top_k"], c["ef"], f"{c['p50_ms']:,.0f} / {c['p99_ms']:,.0f} ms",
         f"{c['recall_vs_largest_ef']:.3f}"]
        for store in ("lite", "server")
        for c in bench.get(store, {}).get("queries", {}).get("ef_curve", [])
    ]  # fmt: skip
    if not rows:
        return ""
    header = ["store", "top-k", "HNSW ef", "p50 / p99", "recall vs the largest ef"]
    return "\n\n" + table(header, rows)


# --- bench_recall.json: recall levers, the review tier, track rules, tracking --------------

PHOTO_EMBEDDING = {"once": "once", "mirror": "+ mirror", "tta": "TTA"}
PERSON_RULE = {"best": "best", "template": "template", "mean": "mean"}
PHOTO_LEGEND = (
    "Columns: photos per person; how enrolment photos are embedded (once, with their "
    "mirror image, or TTA: 3 scales x mirror); probes embedded once or with their mirror; "
    "a person's score (their best photo, their template = the normalised mean of their "
    "photos, or the mean of both); per-person cohort offsets; TPIR at each FPIR; the "
    "threshold for FPIR 1e-3; FPIR and TPIR at the shipped alert threshold. A row in bold is "
    "what ships."
)
LONG_RULE = {
    "best": "best photo",
    "template": "template",
    "mean": "mean of best photo and template",
}


def shipped_defaults() -> dict[str, Any]:
    """The settings a user gets, read from the code, so the tables pick the shipped rows."""
    from pipelines.config import Settings
    from pipelines.embedders.backends import DlibResnetEmbedder

    s = Settings()
    return {
        "min_blur": s.quality.min_blur,
        "top_n": s.search.top_n,
        "alert": DlibResnetEmbedder.default_threshold,
        "review": DlibResnetEmbedder.default_review_threshold,
        "photo_tta": s.embedder.photo_tta,
        "flip_average": s.embedder.flip_average,
        "measured_tpir": DlibResnetEmbedder.measured_tpir,
    }


def _is_shipped_photo_row(r: dict[str, Any], d: dict[str, Any]) -> bool:
    embedding = "tta" if d["photo_tta"] else "once"
    probes = "mirror" if d["flip_average"] else "once"
    rule_ok = r["rule"] == "mean" or r["per_person"] == 1  # one photo: all rules agree
    plain = not r["cohort_offsets"]
    return r["photos"] == embedding and r["probes"] == probes and rule_ok and plain


def recall_photos(rec: dict[str, Any], d: dict[str, Any]) -> str:
    rows_in = rec["photos"]["rows"]
    header = ["photos", "embedding", "probes", "score", "cohort"]
    header += ["TPIR 1e-2", "1e-3", "2e-4", "thr. 1e-3", f"FPIR / TPIR at {d['alert']:g}"]
    rows = []
    for r in rows_in:
        tpir = [pct(r["tpir_at_fpir"].get(t)) for t in TARGETS]
        thr = r["threshold_at_fpir"].get("0.001")
        thr_text = (
            "n/a" if thr is None else (f"z {thr:+.4f}" if r["cohort_offsets"] else f"{thr:.4f}")
        )
        at = r.get(f"at_{d['alert']:g}")
        at_text = f"{pct(at['fpir'], 3)} / {pct(at['tpir'])}" if at else "n/a"
        probes = "+ mirror" if r["probes"] == "mirror" else "once"
        cells = [str(r["per_person"]), PHOTO_EMBEDDING.get(r["photos"], r["photos"]), probes]
        cells += [PERSON_RULE.get(r["rule"], r["rule"]), "yes" if r["cohort_offsets"] else "no"]
        cells += [*tpir, thr_text, at_text]
        rows.append([f"**{c}**" for c in cells] if _is_shipped_photo_row(r, d) else cells)
    mated = sorted({(r["per_person"], r["n_mated"]) for r in rows_in})
    counts = ", ".join(f"{n:,} with {k} photo(s)" for k, n in mated)
    legend = f"{PHOTO_LEGEND} Mated searches: {counts}.\n\n"
    return legend + table(header, rows) + "\n" + _photo_summary(rows_in, d)


def _photo_summary(rows: list[dict[str, Any]], d: dict[str, Any]) -> str:
    def tpir(r: dict[str, Any]) -> float:
        return r["tpir_at_fpir"].get("0.001") or 0.0

    def label(r: dict[str, Any]) -> str:
        parts = [f"photos embedded {PHOTO_EMBEDDING.get(r['photos'], r['photos'])}"]
        parts.append("probes with mirror" if r["probes"] == "mirror" else "probes once")
        parts.append(LONG_RULE.get(r["rule"], r["rule"]))
        if r["cohort_offsets"]:
            parts.append("cohort offsets")
        return ", ".join(parts)

    lines = []
    for k in sorted({r["per_person"] for r in rows}):
        mine = [r for r in rows if r["per_person"] == k]
        shipped = [r for r in mine if _is_shipped_photo_row(r, d)]
        best = max(mine, key=tpir)
        text = f"- {k} photo(s) per person: TPIR at FPIR 1e-3 "
        text += (
            f"{pct(tpir(shipped[0]))} as shipped" if shipped else "(no row at the shipped settings)"
        )
        text += f"; the best measured, {pct(tpir(best))}, with {label(best)}."
        lines.append(text)
    quoted = ", ".join(f"{k} photo(s) {pct(v)}" for k, v in sorted(d["measured_tpir"].items()))
    lines.append(f"- `watchlist add` quotes (from the code): {quoted}.")
    return "\n".join(lines) + "\n"


def _curve(rec: dict[str, Any], **want: Any) -> list[dict[str, Any]]:
    return [c for c in rec["video"]["curves"] if all(c[k] == v for k, v in want.items())]


def _found(c: dict[str, Any], key: str) -> str:
    return f"{c[key]} ({pct(c[key] / c['wanted'] if c['wanted'] else None, 0)})"


def _per_100(c: dict[str, Any]) -> str:
    return "n/a" if not c["non_listed"] else f"{100 * c['false_candidates'] / c['non_listed']:.1f}"


def recall_review_curve(rec: dict[str, Any], d: dict[str, Any]) -> str:
    rows_in = _curve(rec, min_blur=d["min_blur"], rule="topn", top_n=d["top_n"], alert=d["alert"])
    setting = (
        f"alert threshold {d['alert']:g}, `search.top_n` {d['top_n']}, "
        f"`quality.min_blur` {d['min_blur']:g}"
    )
    if not rows_in:
        return f"bench_recall.json has no curve at the shipped settings ({setting}).\n"
    c0 = rows_in[0]
    header = ["review threshold", "found as sightings", "found as sightings or candidates"]
    header += ["false sightings", "false candidates", "false candidates per 100 non-listed"]
    rows = []
    for c in sorted(rows_in, key=lambda c: -c["review"]):
        name = f"{c['review']:g}"
        if c["review"] == d["review"]:
            name = f"**{name} (shipped)**"
        elif c["review"] == d["alert"]:
            name += " (no review tier)"
        rows.append(
            [name, _found(c, "found_sightings"), _found(c, "found_with_candidates")]
            + [c["false_sightings"], c["false_candidates"], _per_100(c)]
        )
    intro = (
        f"At the shipped settings ({setting}); {c0['wanted']} appearances of wanted people and "
        f"{c0['non_listed']} of people on no list, in {len(rec['video']['videos'])} "
        "ground-truth videos.\n\n"
    )
    return intro + table(header, rows)


def _rule_name(c: dict[str, Any]) -> str:
    if c["rule"] == "topn" and c["top_n"] == 1:
        return "the best frame's margin (`top_n` 1)"
    if c["rule"] == "topn":
        return f"mean of the best {c['top_n']} margins (`top_n` {c['top_n']})"
    if c["rule"] == "set":
        return "quality-weighted mean embedding of the track (not an option)"
    if c["rule"] == "mix":
        return f"mean of the `top_n` {c['top_n']} and mean-embedding margins (not an option)"
    return c["rule"]


def recall_track_rules(rec: dict[str, Any], d: dict[str, Any]) -> str:
    at = _curve(rec, alert=d["alert"], review=d["review"])
    rows_in = [c for c in at if c["min_blur"] == d["min_blur"]]
    order = {"topn": 0, "set": 1, "mix": 2}
    rows_in.sort(key=lambda c: (order.get(c["rule"], 3), c["top_n"]))
    other_blur = [
        c
        for c in at
        if c["min_blur"] != d["min_blur"] and (c["rule"], c["top_n"]) == ("topn", d["top_n"])
    ]
    header = ["track rule", "blur limit", "found as sightings", "found with candidates"]
    header += ["false sightings", "false candidates"]
    rows = []
    for c in rows_in + other_blur:
        name = _rule_name(c)
        if c in rows_in and c["rule"] == "topn" and c["top_n"] == d["top_n"]:
            name = f"**{name}, shipped**"
        rows.append(
            [name, f"{c['min_blur']:g}", _found(c, "found_sightings")]
            + [_found(c, "found_with_candidates"), c["false_sightings"], c["false_candidates"]]
        )
    if not rows:
        return "bench_recall.json has no track-rule rows at the shipped thresholds.\n"
    intro = f"Alert threshold {d['alert']:g}, review threshold {d['review']:g}:\n\n"
    return intro + table(header, rows)


TRACKING_GROUPS = {
    "same_face_0.5s": "the same face, one sampled frame (0.5 s) later",
    "different_people_within_2s": "different people, within 2 s of each other",
    "different_people_any_time": "different people, any time in the same video",
}


def recall_tracking(rec: dict[str, Any]) -> str:
    from pipelines.track import TRACK_SIMILARITIES

    rows = []
    for key, g in rec["video"]["tracking"].items():
        qs = ", ".join(f"{100 * float(q):g}%: {v:.3f}" for q, v in g["quantiles"].items())
        rows.append(
            [
                TRACKING_GROUPS.get(key, key),
                f"{g['n']:,}",
                qs,
                f"{g['max']:.3f}" if "max" in g else "-",
            ]
        )
    link, veto = TRACK_SIMILARITIES["dlib-resnet"]
    return (
        table(["pairs of faces (dlib-resnet cosine)", "pairs", "quantiles", "max"], rows)
        + f"\nThe tracker's settings for dlib-resnet (`pipelines/track.py`): resume a track at "
        f"similarity >= {link:g}; an overlapping face below {veto:g} is someone else.\n"
    )


def bulk_import(res: dict[str, Any]) -> str:
    """bench_import: a manifest of shared-data photos, imported and then imported again."""
    m, first, again = res["manifest"], res["import"], res["rerun"]
    rows = [
        ["manifest", f"{m['photos']:,} photos of {m['people']:,} people "
         f"({m['distinct_photos']:,} distinct; {m['repeated_photos']:,} repeats)"],
        ["enrolled", f"{first['people_added']:,} people, {first['photos_enrolled']:,} photos; "
         f"{first['photos_failed']:,} photos unusable (errors table)"],
        ["whole import", f"{first['wall_s']:.0f} s: {res['manifest_photos_per_s']} manifest "
         f"photos/s ({res['manifest_photos_per_s_after_start']} after Ray and the pool start)"],
        ["pool phase", f"{first['pool_s']:.0f} s: {res['distinct_photos_per_s_in_pool']} "
         "distinct photos/s through Ray Data and the FacePool"],
        ["enrolment phase", f"{res['enrol_s']:.0f} s (catalog, store, audit per person)"],
        ["rerun", f"{again['wall_s']:.0f} s; added nothing: {res['rerun_added_nothing']}"],
        ["target", f"{res['target_photos_per_s']:g} photos/s: "
         f"{'met' if res['manifest_photos_per_s'] >= res['target_photos_per_s'] else 'not met'}"],
        ["machine", f"{res['machine']['cpus']} cores, load average "
         f"{res['machine']['load_before'][0]}-{res['machine']['load_after'][0]} (shared)"],
    ]  # fmt: skip
    return table(["", "measured"], rows)


def matcher(res: dict[str, Any]) -> str:
    """bench_match: ms per face against synthetic lists (the fastest repeat in brackets)."""
    rows = [
        [
            f"{r['people']:,}",
            r["photos_per_person"],
            f"{r['ms_per_face_single']} ({r['ms_per_face_single_fastest']})",
            f"{r['ms_per_face_in_batch_of_64']} ({r['ms_per_face_in_batch_of_64_fastest']})",
            r["arrays_mb"],
        ]
        for r in res["rows"]
    ]
    header = ["people", "photos each", "ms/face, one at a time", "ms/face, batches of 64"]
    return table(header + ["arrays MB"], rows)


def soak(run: dict[str, Any] | None) -> str:
    """benchmarks/soak_live.py's report: per window, then the verdict against issue 16's
    targets (RSS slope per hour per process after warm-up, FDs, p99, errors)."""
    if run is None:
        return (
            "Not measured yet: `.venv/bin/python benchmarks/soak_live.py --minutes 30` on a "
            "quiet machine writes `benchmarks/results/soak_live.json`.\n"
        )
    rows = [
        [r["window"], f"{r['t_s']:.0f}", r["frames_sent"], pct(r["drop_rate"]), r["p99_ms"],
         r["errors"], f"{sum(g['rss_kb'] for g in r['processes'].values()) / 1024:,.0f}",
         sum(g["fds"] for g in r["processes"].values())]
        for r in run["windows"]
    ]  # fmt: skip
    header = ["window", "end (s)", "frames sent", "drops", "p99 ms", "errors", "RSS MiB", "FDs"]
    if all("pool" in r for r in run["windows"]):  # results written after the trim timing
        for row, r in zip(rows, run["windows"], strict=True):
            p = r["pool"]
            row += [p["model_ms_per_frame"], f"{p['trims']} ({p['trim_ms_total']:,.0f} ms)"]
        header += ["model ms/frame", "freed pages handed back: calls (time)"]
    v, a = run["verdict"], run["args"]
    per_1k = v.get("rss_kb_per_1k_analysed_frames", {})  # results written after issue 16
    late = v.get("rss_slope_pct_per_hour_second_half")  # results written since it is given
    ranges = _soak_ranges(run)
    slopes = [[f"`{g}`", _pct_or_na(x)]
              + ([_pct_or_na(late.get(g))] if late else [])
              + ([ranges.get(g, "n/a")] if ranges else [])
              + ([f"{per_1k[g]:,.0f}" if g in per_1k else "n/a"] if per_1k else [])
              for g, x in sorted(v["rss_slope_pct_per_hour"].items())]  # fmt: skip
    n = v.get("rss_samples_after_warmup")  # results written after the samples between windows
    slope_header = ["process group", f"RSS slope per hour after warm-up ({n} samples)" if n
                    else "RSS slope per hour after warm-up"]  # fmt: skip
    slope_header += ["the same, second half of that time"] if late else []
    slope_header += ["RSS MiB after warm-up, lowest-highest"] if ranges else []
    slope_header += ["KiB per 1,000 analysed frames"] if per_1k else []
    growth = [["all long-lived processes", v["fd_growth_after_warmup"]]]
    if "fd_growth_same_processes" in v:
        growth.append(["the same processes (by pid)", v["fd_growth_same_processes"]])
        growth += [[f"kind: {k}", n] for k, n in v["fd_growth_by_kind"].items()]
    met = ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in v["targets_met"].items())
    lead = (f"{a['minutes']:.0f} minutes: {a['cameras']} cameras at {a['fps']:g} fps, windows of "
            f"{a['window_min']:g} minutes, {run['searches_started']} archive searches started, "
            f"{run['searches_failed']} failed.")  # fmt: skip
    lead += _soak_alerts(run) + "\n"
    return "\n".join([
        lead, table(header, rows), table(slope_header, slopes), _soak_ray(v),
        table(["open descriptors, growth after warm-up", "count"], growth),
        f"p99 of the last window over the first: {v['p99_last_over_first']}; errors: "
        f"{v['errors']}; targets met: {met}.\n",
    ])  # fmt: skip


def _soak_ranges(run: dict[str, Any]) -> dict[str, str]:
    """Each group's lowest and highest RSS sample after the first window (warm-up): a
    process whose RSS rises and falls (the FacePool's jemalloc keeps freed pages and hands
    them back) shows its swing here, which a slope over part of the run does not."""
    start = run["windows"][0]["t_s"]
    samples = [r["rss_kb"] for r in run.get("rss_samples", []) if r["t_s"] >= start]
    out = {}
    for g in {g for r in samples for g in r}:
        kb = [r[g] for r in samples if g in r]
        out[g] = f"{min(kb) / 1024:,.0f}-{max(kb) / 1024:,.0f}"
    return out


def _pct_or_na(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}%"


def _soak_alerts(run: dict[str, Any]) -> str:
    """The live alert window the soak ran with and the alerts stored (results written since
    the soak records them)."""
    window = run["args"].get("alert_window_s")
    if window is None:
        return " Alert window 0 s: every track of the watch-listed face alerted."
    stored = run["windows"][-1].get("alerts_stored")
    n = f"; {stored:,} live alerts stored" if stored is not None else ""
    return f" Alert window {window:g} s (`live.alert_window_s`){n}."


def _soak_ray(v: dict[str, Any]) -> str:
    """The soak's Ray processes' growth per archive search after warm-up (results written
    before this split have none)."""
    per = v.get("ray_rss_kib_per_search_after_warmup")
    if not per:
        return ""
    rows = [[f"`{g}`", f"{kib:,.0f}", v["thread_growth_after_warmup"].get(g, 0)]
            for g, kib in sorted(per.items(), key=lambda kv: -kv[1])]  # fmt: skip
    head = [f"Ray's process group ({v['searches_after_warmup']} searches after warm-up)"]
    return table(head + ["RSS growth after warm-up per search, KiB", "threads, growth"], rows)


def ray_per_search(run: dict[str, Any]) -> str:
    """benchmarks/ray_per_search.py: what each archive search on the live server's Ray
    leaves in each process group, and in the metric series Ray exports."""
    s = run["summary"]

    def later(g: str) -> str:  # a plateau (warm-up over) or steady growth, search by search
        mib = [r["rss_kb"][g] / 1024 for r in run["steps"][3:] if g in r["rss_kb"]]
        return f"{min(mib):,.0f}-{max(mib):,.0f}"

    rows = [
        [f"`{g}`", f"{s['rss_kb_first_last'][g][0] / 1024:,.0f}",
         f"{s['rss_kb_first_last'][g][1] / 1024:,.0f}", later(g), f"{kib:,.0f}"]
        for g, kib in sorted(s["rss_kib_per_search"].items(), key=lambda kv: -kv[1])
    ]  # fmt: skip
    n = run["args"]["searches"]
    header = ["process group", "RSS MiB after the 1st search", f"after the {n}th"]
    header += ["range from the 3rd on", "KiB per search"]
    fams = ", ".join(f"{k} {v:,.0f}" for k, v in s["series_per_search_by_family"].items())
    before, first, last = s["series_before_first_last"]
    return (
        table(header, rows)
        + f"\nMetric series exported by the node's metrics agent: {before:,} before any search, "
        f"{first:,} after the first, {last:,} after the {n}th: {s['series_per_search']:,.0f} "
        f"more per search ({fams}).\n"
    )


def hub_alert_memory(run: dict[str, Any]) -> str:
    """benchmarks/hub_alert_memory.py: the hub's memory per alert stored in milvus-lite,
    flushed every N alerts against never flushed, with Arrow on malloc or on mimalloc."""
    runs = run["runs"]
    header = ["alerts stored", *(f"RSS MiB, {name}" for name in runs)]
    first = next(iter(runs.values()))["samples"]
    step = max(1, (len(first) - 1) // 8)  # about 8 rows, the last always
    rows = [
        [f"{s['alerts']:,}", *(f"{r['samples'][i]['rss_kb'] / 1024:,.0f}" for r in runs.values())]
        for i, s in enumerate(first)
        if i % step == 0 or i == len(first) - 1
    ]
    per = [
        [name, f"{r['rss_kib_per_alert']:.1f}", f"{r['malloc_in_use_kib_per_alert']:.1f}",
         _opt(r.get("arrow_kib_per_alert"), ".1f"), _opt(r.get("rss_max_kb", 0) / 1024, ",.0f"),
         r["flushes"], f"{r['flush_ms_max']:,.0f}"]
        for name, r in runs.items()
    ]  # fmt: skip
    per_header = ["setting", "RSS KiB per alert", "malloc in use KiB per alert"]
    per_header += ["Arrow KiB per alert", "largest RSS MiB", "flushes", "longest flush ms"]
    return (
        table(header, rows)
        + "\n"
        + table(per_header, per)
        + f"\nPer alert: the slope over the second half of {run['alerts']:,} alerts.\n"
    )


def _opt(value: float | None, spec: str) -> str:
    """A number in ``spec``, or a dash where a result written before lacks it."""
    return format(value, spec) if value else "-"


def load(results: Path, name: str) -> dict[str, Any]:
    return json.loads((results / name).read_text(encoding="utf-8"))


def tables(results: Path) -> dict[str, str]:
    """Every generated table file, by name."""
    acc = load(results, "bench_accuracy.json")
    seeds = [
        load(results, n)
        for n in ("bench_archive.json", "bench_archive_seed2.json", "bench_archive_seed3.json")
    ]
    index = load(results, "bench_index.json")
    recall, defaults = load(results, "bench_recall.json"), shipped_defaults()
    return {
        "recall-photos.md": recall_photos(recall, defaults),
        "recall-review-curve.md": recall_review_curve(recall, defaults),
        "recall-track-rules.md": recall_track_rules(recall, defaults),
        "recall-tracking.md": recall_tracking(recall),
        "accuracy-systems.md": accuracy_systems(acc),
        "accuracy-levers.md": accuracy_levers(acc, "facewatch"),
        "accuracy-peer-levers.md": accuracy_levers(acc, "peer"),
        "accuracy-lambs.md": accuracy_lambs(acc),
        "accuracy-threshold.md": accuracy_threshold(acc),
        "accuracy-list-sizes.md": accuracy_list_sizes(acc),
        "accuracy-track-rules.md": accuracy_track_rules(acc),
        "lfw.md": lfw(load(results, "bench_lfw.json")),
        "archive-speed.md": archive_speed(seeds[0]),
        "archive-recall.md": archive_recall(seeds),
        "archive-stages.md": archive_stages(seeds[0]),
        "live.md": live(load(results, "bench_live.json")),
        "live-cost.md": live_cost(load(results, "bench_live_cost.json")),
        "live-stages.md": live_stages(load(results, "bench_live_stages.json")),
        "mtcnn-candidates.md": mtcnn_candidates(load(results, "mtcnn_candidates.json")),
        "archive-options.md": archive_options(load(results, "archive_options.json")),
        "index-small.md": index_small(index),
        "cluster-scaling.md": cluster_scaling(load(results, "bench_cluster.json")),
        "cluster-live.md": cluster_live(load(results, "bench_cluster.json")),
        "index-million.md": index_million(index),
        "import.md": bulk_import(load(results, "bench_import.json")),
        "match.md": matcher(load(results, "bench_match.json")),
        "hub-alert-memory.md": hub_alert_memory(load(results, "hub_alert_memory.json")),
        "ray-per-search.md": ray_per_search(load(results, "ray_per_search.json")),
        "soak.md": soak(
            load(results, "soak_live.json") if (results / "soak_live.json").exists() else None
        ),
    }
