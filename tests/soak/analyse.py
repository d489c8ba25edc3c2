#!/usr/bin/env python3
"""The fault soak's figures, per device, from the subscriber's record; exits 1 on a loss the
design does not allow.

    analyse.py RECEIVED COUNTED_DROPS WAL_LOSSES

- lost: seqs missing below a device's highest seq received, outside the jumps. Allowed only up
  to COUNTED_DROPS in all (what plantwatch_outbox_dropped_total counted over the run).
- jumps: gaps of JUMP or more seqs. After a lost WAL every device's seq continues from its
  high-water mark, which is ahead by a block; what the lost WAL held falls inside that gap. At
  most one per device per WAL loss the daemon reported (WAL_LOSSES).
- duplicates: a (device, seq) received again with the same content (at-least-once delivery).
- reused: a (device, seq) received with different content: two messages given one seq. Never
  allowed.
- out of order: arrivals below the highest seq already received from the same stream (live,
  or backfill); reported, not judged (a restart resends what was in flight).
"""
import json
import sys
from collections import defaultdict

JUMP = 1000

received_path, counted_drops, wal_losses = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
content = defaultdict(dict)  # device -> seq -> (ts, values)
counts = defaultdict(lambda: {"received": 0, "dup": 0, "reused": 0, "ooo": 0})
highest = defaultdict(lambda: -1)  # (device, backfill) -> highest seq so far
unreadable = 0
for line in open(received_path, errors="replace"):
    try:
        m = json.loads(line)
    except ValueError:
        unreadable += 1
        continue
    dev, seq = m.get("device"), m.get("seq")
    if dev is None or not isinstance(seq, int):
        unreadable += 1
        continue
    c = counts[dev]
    c["received"] += 1
    body = (m.get("ts"), json.dumps(m.get("values"), sort_keys=True))
    seen = content[dev].get(seq)
    if seen is None:
        content[dev][seq] = body
    elif seen == body:
        c["dup"] += 1
    else:
        c["reused"] += 1
    stream = (dev, m.get("backfill", False))
    if seq < highest[stream]:
        c["ooo"] += 1
    highest[stream] = max(highest[stream], seq)

print(f"{'device':<20} {'received':>8} {'distinct':>8} {'lost':>6} {'dup':>6} {'reused':>6} {'ooo':>6} {'jumps':>5}")
total = defaultdict(int)
worst_jumps = 0
for dev in sorted(content):
    seqs = sorted(content[dev])
    lost = jumps = 0
    prev = -1  # a fresh state file starts each device at seq 0
    for s in seqs:
        gap = s - prev - 1
        if gap >= JUMP:
            jumps += 1
        elif gap > 0:
            lost += gap
        prev = s
    c = counts[dev]
    row = {"received": c["received"], "distinct": len(seqs), "lost": lost, "dup": c["dup"],
           "reused": c["reused"], "ooo": c["ooo"], "jumps": jumps}
    for k, v in row.items():
        total[k] += v
    worst_jumps = max(worst_jumps, jumps)
    print(f"{dev:<20} {row['received']:>8} {row['distinct']:>8} {lost:>6} {row['dup']:>6} "
          f"{row['reused']:>6} {row['ooo']:>6} {jumps:>5}")
print(f"{'total':<20} {total['received']:>8} {total['distinct']:>8} {total['lost']:>6} {total['dup']:>6} "
      f"{total['reused']:>6} {total['ooo']:>6} {total['jumps']:>5}")
print(f"unreadable messages: {unreadable}; counted drops: {counted_drops}; WAL losses reported: {wal_losses}")

problems = []
if not content:
    problems.append("nothing received")
if total["lost"] > counted_drops:
    problems.append(f"{total['lost']} lost, only {counted_drops} counted as dropped")
if total["reused"]:
    problems.append(f"{total['reused']} reused seqs")
if worst_jumps > wal_losses:
    problems.append(f"a device's seq jumped {worst_jumps} times with {wal_losses} WAL losses reported")
if unreadable:
    problems.append(f"{unreadable} unreadable messages")
for p in problems:
    print("FAIL:", p)
print("verdict:", "FAILED" if problems else "ok")
sys.exit(1 if problems else 0)
