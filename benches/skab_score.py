#!/usr/bin/env python3
"""Scores the predictions benches/anomaly.rs wrote for the SKAB recordings with tsad.

tsad (PyPI) is the scorer SKAB's own leaderboard was produced with, so the figures are
comparable with the published ones.
Usage: skab_score.py PREDICTIONS_DIR SKAB_DATA_DIR [--min-f1=F] [--min-nab=N]
(exits 1 when the F1 or the NAB standard on score onsets of all folders is below its floor)

PREDICTIONS_DIR holds one folder per SKAB folder, each with one `;`-separated file per
experiment: `datetime;pred_outlier;pred_cp;pred_edge` (the detector's 0/1 outputs, row for row).
The labels (`anomaly`, `changepoint`) are read from the same file under SKAB_DATA_DIR, so no
copy of them is written anywhere. Prints, per folder and for the tuned and held-out groups, NAB
standard / low FP / low FN (window 60 s right of each change point) on `pred_cp` (score
onsets: what the issue says an evaluation scores), the NAB standard on `pred_edge` (raises
and clears, SKAB's protocol for outlier detectors) and on both together, and binary F1
(with false and missed alarm rates) on `pred_outlier`.
"""

import contextlib
import io
import os
import sys

import pandas as pd
from tsad.utils.evaluating.evaluating import evaluating

# valve2/ and other/ never steer a default; they are reported apart so a reader sees whether
# the tuned figures carry over.
TUNED = ["valve1"]
HELD_OUT = ["valve2", "other"]


def load(folder, labels_folder):
    series = []
    for name in sorted(os.listdir(folder), key=lambda n: (len(n), n)):
        if not name.endswith(".csv"):
            continue
        read = lambda path: pd.read_csv(path, sep=";", index_col="datetime", parse_dates=True)
        pred = read(os.path.join(folder, name))
        truth = read(os.path.join(labels_folder, name))
        if not pred.index.equals(truth.index):
            sys.exit(f"{folder}/{name}: the predictions' timestamps differ from SKAB's file")
        for column in ("anomaly", "changepoint"):
            pred[column] = (truth[column] > 0.5).astype(int)
        series.append(pred)
    return series


def quiet(fn, *args, **kwargs):
    # tsad prints its own figures; the table below is the report.
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def nab(frames, column):
    true_cp = [f["changepoint"].astype(int) for f in frames]
    pred_cp = [f[column].astype(int) for f in frames]
    return quiet(
        evaluating,
        true_cp,
        pred_cp,
        metric="nab",
        window_width="60s",
        anomaly_window_destination="righter",
    )


def score(frames):
    true_out = [f["anomaly"].astype(int) for f in frames]
    pred_out = [f["pred_outlier"].astype(int) for f in frames]
    f1, far, mar = quiet(evaluating, true_out, pred_out, metric="binary")
    # tsad rounds its F1 to two decimals; the same pooled F1 unrounded, so a reader sees
    # which side of a floor it lies on.
    tp = sum(int((t & p).sum()) for t, p in zip(true_out, pred_out))
    wrong = sum(int((t != p).sum()) for t, p in zip(true_out, pred_out))
    exact = 2 * tp / max(1, 2 * tp + wrong)
    both = [f.assign(pred_both=f["pred_cp"] | f["pred_edge"]) for f in frames]
    return (
        nab(frames, "pred_cp"),
        nab(frames, "pred_edge"),
        nab(both, "pred_both"),
        f1,
        exact,
        far,
        mar,
    )


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    floors = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    unknown = set(floors) - {"min-f1", "min-nab"}
    if len(args) != 2 or unknown:
        sys.exit("usage: skab_score.py PREDICTIONS_DIR SKAB_DATA_DIR [--min-f1=F] [--min-nab=N]")
    root, skab = args
    folders = [f for f in TUNED + HELD_OUT if os.path.isdir(os.path.join(root, f))]
    if not folders:
        sys.exit(f"{root}: no SKAB prediction folders (valve1, valve2, other)")
    frames = {f: load(os.path.join(root, f), os.path.join(skab, f)) for f in folders}
    rows = [(f, frames[f]) for f in folders]
    rows.append(("tuned (valve1)", [x for f in TUNED if f in frames for x in frames[f]]))
    rows.append(
        ("held out (valve2+other)", [x for f in HELD_OUT if f in frames for x in frames[f]])
    )
    rows.append(("all", [x for f in folders for x in frames[f]]))
    print(
        f"{'SKAB (tsad)':<24} {'files':>5} | NAB on score onsets: {'std':>6} {'low FP':>6} "
        f"{'low FN':>6} | std on alarm edges {'':>1} | on both {'':>1} | "
        f"{'F1':>5} {'exact':>6} {'FAR %':>6} {'MAR %':>6}"
    )
    failed = []
    for label, group in rows:
        if not group:
            continue
        onsets, edges, both, f1, exact, far, mar = score(group)
        if label == "all":
            if "min-f1" in floors and f1 < float(floors["min-f1"]):
                failed.append(f"F1 {f1} < {floors['min-f1']}")
            if "min-nab" in floors and onsets["Standard"] < float(floors["min-nab"]):
                failed.append(f"NAB standard {onsets['Standard']} < {floors['min-nab']}")
        print(
            f"{label:<24} {len(group):>5} | {'':>20} {onsets['Standard']:>6.2f} "
            f"{onsets['LowFP']:>6.2f} {onsets['LowFN']:>6.2f} | {edges['Standard']:>20.2f} | "
            f"{both['Standard']:>9.2f} | {f1:>5.2f} {exact:>6.4f} {far:>6.2f} {mar:>6.2f}"
        )
    if failed:
        sys.exit("below the floor: " + "; ".join(failed))


if __name__ == "__main__":
    main()
