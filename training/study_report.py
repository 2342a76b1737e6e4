"""`rtd study report STUDY`: the human perception study's numbers and Figure 5 (Sec. 5.3). No torch.

From a study folder (study.json, `rtd study create`) and its responses (responses.sqlite, `rtd study serve`; read
only, so a study still running can be reported at any time), per task (Realism, Similarity):

- the **average human rank** of each method (1 = best), the mean over every response (rater x item);
- its **95 % interval** by a two-way bootstrap: each draw resamples the raters with replacement and,
  independently, the items with replacement; a response of rater r on item i then counts
  (times r was drawn) x (times i was drawn), and the draw's average rank is the weighted mean. The interval is
  the 2.5th and 97.5th percentiles of the draws (numpy's linear interpolation). Resampling both raters and
  items lets the interval carry both sources of variation: which people ranked and which photos were shown.
  A draw whose resample holds no response (possible with very partial data) is left out;
- **pairwise win rates**: the share of responses in which method a is ranked above method b;
- **Kendall's W** (agreement, 0 none to 1 full): per item across its raters, averaged over items with two or
  more raters; and over all responses, each response a judge ranking the methods;
- how many raters, items and responses, and how many raters were simulated (`rtd study simulate`).

Writes OUT/report.json, OUT/report.md, OUT/responses.csv (raw responses; rater ids, not names) and the Figure 5
plot OUT/human-rank.png + .svg (training/plots.py). Every output says when any rater was simulated.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdgan.index.errors import UserError

TASK_TITLES = {"realism": "Realism", "similarity": "Similarity"}


@dataclass(frozen=True)
class Responses:
    """One task's responses as arrays: ranks[k, m] is the rank (1 = best) response k gave method m."""

    methods: tuple[str, ...]
    ranks: np.ndarray  # (R, M) int
    raters: np.ndarray  # (R,) index into rater_ids
    items: np.ndarray  # (R,) index into item_ids
    rater_ids: tuple[str, ...]
    item_ids: tuple[str, ...]


def to_arrays(rows: list[dict], methods: tuple[str, ...]) -> Responses:
    """Rows {rater, item, ranking: method names best first} -> Responses."""
    rater_ids = tuple(sorted({r["rater"] for r in rows}))
    item_ids = tuple(sorted({r["item"] for r in rows}))
    ranks = np.array([[r["ranking"].index(m) + 1 for m in methods] for r in rows], dtype=np.int64).reshape(-1, len(methods))
    return Responses(methods, ranks, np.array([rater_ids.index(r["rater"]) for r in rows], dtype=np.int64),
                     np.array([item_ids.index(r["item"]) for r in rows], dtype=np.int64), rater_ids, item_ids)


def resample_means(data: Responses, rater_counts: np.ndarray, item_counts: np.ndarray) -> np.ndarray:
    """(B, M) average ranks of B resamples given how often each rater (B, n_raters) and each item (B, n_items)
    was drawn: the mean over responses weighted by count(rater) x count(item); NaN where a draw weighs nothing."""
    weights = rater_counts[:, data.raters] * item_counts[:, data.items]  # (B, R)
    total = weights.sum(axis=1, keepdims=True)  # (B, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ data.ranks.astype(np.float64)) / total


def bootstrap_interval(data: Responses, draws: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per method: percentiles of `draws` two-way (raters x items) bootstrap means (module docstring)."""
    rng = np.random.default_rng(seed)
    n_r, n_i = len(data.rater_ids), len(data.item_ids)
    rater_counts = np.stack([np.bincount(rng.integers(0, n_r, n_r), minlength=n_r) for _ in range(draws)])
    item_counts = np.stack([np.bincount(rng.integers(0, n_i, n_i), minlength=n_i) for _ in range(draws)])
    block = max(1, 2**22 // max(len(data.ranks), 1))  # draws per (block, R) weight matrix: about 32 MB
    means = np.concatenate([resample_means(data, rater_counts[i:i + block], item_counts[i:i + block])
                            for i in range(0, draws, block)])
    means = means[~np.isnan(means).any(axis=1)]
    tail = 100 * (1 - level) / 2
    return np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)


def win_rates(ranks: np.ndarray) -> np.ndarray:
    """(M, M): [a, b] = share of responses ranking method a above (better than) method b; diagonal NaN."""
    m = ranks.shape[1]
    rates = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(m):
            if a != b and len(ranks):
                rates[a, b] = float(np.mean(ranks[:, a] < ranks[:, b]))
    return rates


def kendall_w(rankings: np.ndarray) -> float:
    """Kendall's coefficient of concordance of m judges ranking n objects (rankings (m, n), no ties):
    W = 12 S / (m^2 (n^3 - n)), S = the sum of squared deviations of the objects' rank sums from their mean."""
    m, n = rankings.shape
    if m < 2 or n < 2:
        return float("nan")
    sums = rankings.sum(axis=0)
    s = float(((sums - sums.mean()) ** 2).sum())
    return 12.0 * s / (m * m * (n ** 3 - n))


def agreement(data: Responses) -> dict[str, float | int | None]:
    """Kendall's W per item across its raters (mean over items with >= 2 raters) and over all responses."""
    per_item = [kendall_w(data.ranks[data.items == i]) for i in range(len(data.item_ids))
                if np.sum(data.items == i) >= 2]
    overall = kendall_w(data.ranks)
    return {"per_item_mean": float(np.mean(per_item)) if per_item else None, "items_with_2_raters": len(per_item),
            "all_responses": None if np.isnan(overall) else overall}


def task_report(rows: list[dict], methods: tuple[str, ...], draws: int, seed: int) -> dict:
    """One task's numbers (module docstring); an empty task reports its counts only."""
    if not rows:
        return {"responses": 0, "raters": 0, "items": 0, "methods": {}}
    data = to_arrays(rows, methods)
    mean = data.ranks.mean(axis=0)
    low, high = bootstrap_interval(data, draws, seed)
    wins = win_rates(data.ranks)
    return {"responses": len(rows), "raters": len(data.rater_ids), "items": len(data.item_ids),
            "methods": {m: {"average_rank": float(mean[j]), "ci95": [float(low[j]), float(high[j])]}
                        for j, m in enumerate(methods)},
            "win_rate": {a: {b: float(wins[i, j]) for j, b in enumerate(methods) if i != j} for i, a in enumerate(methods)},
            "kendall_w": agreement(data)}


def read_responses(study: Path, responses: Path | None = None) -> tuple[dict, list[dict]]:
    """study.json and every response (rater, simulated, task, item, ranking, shown, position, submitted), read only."""
    manifest_path = Path(study) / "study.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{study} is not a study folder (no study.json)") from None
    db = Path(responses) if responses is not None else Path(study) / "responses.sqlite"
    if not db.is_file():
        return manifest, []  # no rater yet
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT r.rater, a.simulated, r.task, r.item, r.ranking, r.shown, r.position, r.submitted "
                           "FROM responses r JOIN raters a ON a.id = r.rater ORDER BY r.submitted, r.rowid").fetchall()
    except sqlite3.DatabaseError as e:
        raise UserError(f"{db}: not a study's responses database ({e})") from None
    finally:
        con.close()
    return manifest, [{"rater": r[0], "simulated": bool(r[1]), "task": r[2], "item": r[3], "ranking": json.loads(r[4]),
                       "shown": json.loads(r[5]), "position": r[6], "submitted": r[7]} for r in rows]


def build_report(manifest: dict, rows: list[dict], draws: int = 2000, seed: int = 0) -> dict:
    """report.json's content: counts and each task's numbers."""
    methods = tuple(m["name"] for m in manifest["methods"])
    tasks = [t["key"] for t in manifest["tasks"]]
    simulated = sorted({r["rater"] for r in rows if r["simulated"]})
    return {"methods": [{k: m.get(k) for k in ("name", "architecture", "stages", "size", "generator_sha256")}
                        for m in manifest["methods"]],
            "items_in_study": len(manifest["items"]), "seed": manifest.get("seed"),
            "raters": len({r["rater"] for r in rows}), "simulated_raters": len(simulated), "responses": len(rows),
            "bootstrap": {"draws": draws, "seed": seed, "resampled": "raters and items, independently",
                          "interval": "2.5th-97.5th percentile"},
            "tasks": {t: task_report([r for r in rows if r["task"] == t], methods, draws, seed) for t in tasks}}


def write_csv(path: Path, rows: list[dict], methods: tuple[str, ...], products: dict[str, str]) -> None:
    """The raw responses, one row each: rater id (not name), task, item, product, ranking and shown order, the
    rank of each method."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["rater", "simulated", "task", "item", "product_id", "position", "submitted", "ranking",
                         "shown", *(f"rank_{m}" for m in methods)])
        for r in rows:
            writer.writerow([r["rater"], int(r["simulated"]), r["task"], r["item"], products.get(r["item"], ""),
                             r["position"], f"{r['submitted']:.3f}", " > ".join(r["ranking"]), ",".join(r["shown"]),
                             *(r["ranking"].index(m) + 1 for m in methods)])


def markdown(report: dict) -> str:
    """report.md: who ranked, then per task the average ranks with intervals, win rates and agreement."""
    who = f"{report['raters']} raters ({report['simulated_raters']} simulated)"
    lines = ["# Human ranking study" + (" — SIMULATED RATERS, not a human result" if report["simulated_raters"] else ""),
             "", f"{who}, {report['responses']} responses, {report['items_in_study']} items in the study. "
             f"95 % intervals: {report['bootstrap']['draws']} bootstrap draws over raters and items.", ""]
    for task, t in report["tasks"].items():
        lines += [f"## {TASK_TITLES.get(task, task)}", "",
                  f"{t['responses']} responses from {t['raters']} raters on {t['items']} items.", ""]
        if not t["methods"]:
            continue
        names = list(t["methods"])
        lines += ["| method | average rank (1 = best) | 95 % interval | " + " | ".join(f"beats {b}" for b in names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for a, v in t["methods"].items():
            wins = " | ".join("" if a == b else f"{t['win_rate'][a][b]:.2f}" for b in names)
            lines.append(f"| {a} | {v['average_rank']:.2f} | [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}] | {wins} |")
        w = t["kendall_w"]
        per_item = f"{w['per_item_mean']:.2f}" if w["per_item_mean"] is not None else "n/a"
        overall = f"{w['all_responses']:.2f}" if w["all_responses"] is not None else "n/a"
        lines += ["", f"Kendall's W: {per_item} per item (mean over {w['items_with_2_raters']} items with >= 2 raters), "
                      f"{overall} over all responses.", ""]
    return "\n".join(lines)


def write_report(study: Path, out: Path | None = None, responses: Path | None = None, draws: int = 2000,
                 seed: int = 0) -> dict:
    """Compute and write every output of the report (module docstring); returns report.json's content."""
    from rtdgan.training.plots import RankBar, rank_plot

    manifest, rows = read_responses(study, responses)
    methods = tuple(m["name"] for m in manifest["methods"])
    report = build_report(manifest, rows, draws, seed)
    out = Path(out) if out is not None else Path(study) / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    write_csv(out / "responses.csv", rows, methods, {i["id"]: i["product_id"] for i in manifest["items"]})
    panels = {TASK_TITLES.get(task, task): [RankBar(m, v["average_rank"], v["ci95"][0], v["ci95"][1])
                                             for m, v in t["methods"].items()]
              for task, t in report["tasks"].items()}
    simulated = (f"SIMULATED RATERS ({report['simulated_raters']} of {report['raters']}), not people: "
                 if report["simulated_raters"] else "")
    title = (f"{simulated}average rank with 95 % intervals (Figure 5); {report['raters']} raters, "
             f"{report['responses']} responses")
    report["figure"] = [str(p) for p in rank_plot(panels, out / "human-rank.png", len(methods), title)]
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rtd study report` flags."""
    parser.add_argument("study", type=Path, help="study folder (`rtd study create`)")
    parser.add_argument("--responses", type=Path, default=None, help="responses SQLite (default: STUDY/responses.sqlite)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: STUDY/report)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws of the 95 %% intervals")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def run(args: argparse.Namespace) -> int:
    """Write the report; print its average ranks as JSON."""
    config = {"study": str(args.study), "responses": str(args.responses) if args.responses else None,
              "out": str(args.out) if args.out else None, "bootstrap": args.bootstrap, "seed": args.seed}
    print("rtd study report: config " + json.dumps(config), file=sys.stderr)
    if args.bootstrap < 100:
        raise UserError(f"--bootstrap must be >= 100, got {args.bootstrap}")
    report = write_report(args.study, args.out, args.responses, args.bootstrap, args.seed)
    if report["simulated_raters"]:
        print(f"rtd study report: {report['simulated_raters']} of {report['raters']} raters are simulated",
              file=sys.stderr)
    print(json.dumps({"raters": report["raters"], "responses": report["responses"], "figure": report["figure"],
                      "average_rank": {t: {m: round(v["average_rank"], 3) for m, v in r["methods"].items()}
                                       for t, r in report["tasks"].items()}}, indent=1))
    return 0
