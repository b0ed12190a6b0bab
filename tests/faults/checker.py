"""The fault harness's queue checker: reads a history (the format of HISTORY.md, beside this file:
send, poll, assign, commit, final and replica events, one JSON object a line) and states whether
the broker kept its promises, in the manner of Jepsen's Kafka queue checker (jepsen.tests.kafka:
lost-write, duplicate, inconsistent-offsets, nonmonotonic-poll, int-poll-skip, unseen), plus
committed offsets going backwards and replicas that diverge. Pure Python 3, stdlib only.

A position is (topic, partition, offset). The rules it keeps (errors make the history invalid):
- lost: a send acknowledged "ok" whose value is not in the final read. In a compacted topic only
  the latest acknowledged value of a key (by acknowledged offset) must be there, and not even that
  one if the final read holds a later record of the key (an unacknowledged write that landed).
  An absent "unknown" or "fail" send is fine; a "fail" send that is present (in the final read or
  a poll) is counted as failed_but_present, for information.
- acked_offset_mismatch: an ok send acknowledged at a position where the final read holds another
  value, or holds nothing while the value is at some other position.
- duplicated: one value at two or more positions (final read and polls). An error when its sender
  was idempotent; otherwise counted as duplicated_non_idempotent, for information.
- inconsistent_offsets: two different values at one position across every poll, final and
  replica event.
- replica_divergence: positions at which two replicas (replica events, grouped by client = node)
  disagree, or a replica disagrees with the final read; the same anomaly as the one above, told
  with the node names. Offsets that only one side holds (compaction, lag) are not compared.
- nonmonotonic_polls: within one assignment of a consumer (between its assign events, which reset
  it: a new assignment resumes from the committed offset and may re-deliver), the offsets it polls
  in a partition must strictly increase.
- skipped: records of the final read strictly between two consecutive polls of one consumer in one
  partition within one assignment (counted per record; gaps without records are fine).
- unseen: ok values in the final read that no poll received; an error only with
  expect_all_consumed, else for information.
- commits_backwards: per (group, topic, partition), a successful commit B started (t0) after a
  commit A completed (t) with B's offset below A's. Commits that overlap in time are not ordered.
- never_sent: values read that no send event names (a producer killed before it wrote its
  outcome), for information.
A client's events are taken in the order the history lists them (its own file's order), not
sorted by time. Each check is one pass over dicts indexed by value or by position, so a million
events check in seconds. Up to EXAMPLES examples are kept per anomaly.

    python3 tests/faults/checker.py history/*.jsonl   # prints the summary; exits 1 if invalid
"""
import argparse
import bisect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = 5
ERRORS = ("lost", "acked_offset_mismatch", "duplicated", "inconsistent_offsets",
          "replica_divergence", "nonmonotonic_polls", "skipped", "unseen", "commits_backwards")
INFORMATIONAL = ("duplicated_non_idempotent", "failed_but_present", "never_sent")
TALLIES = ("sends", "acknowledged", "failed", "unknown", "final_records", "polls", "commits")


@dataclass
class Result:
    valid: bool
    counts: dict
    examples: dict = field(default_factory=dict)
    expect_all_consumed: bool = True

    def errors(self):
        """The error anomalies found, in ERRORS order."""
        return [name for name in ERRORS if self.counts.get(name, 0) and self.is_error(name)]

    def is_error(self, name):
        return name in ERRORS and (name != "unseen" or self.expect_all_consumed)

    def summary(self) -> str:
        """One paragraph: the verdict, the tallies, each anomaly's count and its first examples."""
        c = self.counts
        head = (f"{'VALID' if self.valid else 'INVALID'}: {c['sends']} sends ({c['acknowledged']} "
                f"acknowledged, {c['failed']} failed, {c['unknown']} unknown), {c['final_records']} "
                f"records in the final read, {c['polls']} polls, {c['commits']} commits")
        parts = []
        for name in ERRORS + INFORMATIONAL:
            if c.get(name):
                kind = "error" if self.is_error(name) else "info"
                first = "; ".join(render(e) for e in self.examples.get(name, [])[:3])
                parts.append(f"{name} {c[name]} ({kind}; e.g. {first})")
        tail = "; ".join(parts) if parts else "no anomalies"
        return f"{head}; {tail}."

    def table_row(self, scenario, faults, seed) -> str:
        """| scenario | faults | acknowledged | lost | duplicated | seed | (duplicated: by idempotent
        producers, the ones that are errors)."""
        if not isinstance(faults, str):
            faults = ", ".join(str(f) for f in faults)
        cells = [scenario, faults or "none", self.counts["acknowledged"], self.counts["lost"],
                 self.counts["duplicated"], seed]
        return "| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |"


def render(example) -> str:
    if isinstance(example, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in example.items()) + "}"
    return str(example)


class Examples:
    """Counts per anomaly and up to EXAMPLES examples of each."""

    def __init__(self):
        self.counts = {name: 0 for name in ERRORS + INFORMATIONAL}
        self.examples = {}

    def add(self, name, example, count=1):
        self.counts[name] += count
        kept = self.examples.setdefault(name, [])
        if len(kept) < EXAMPLES:
            kept.append(example)


class Positions:
    """value -> the positions it was read at: the first one in a dict, any others in a second
    dict made only for the values with more than one (so a million values cost a million entries)."""

    def __init__(self):
        self.first = {}
        self.extra = {}

    def add(self, value, pos):
        at = self.first.setdefault(value, pos)
        if at != pos:
            self.extra.setdefault(value, {at}).add(pos)

    def __contains__(self, value):
        return value in self.first

    def of(self, value):
        return self.extra.get(value) or {self.first[value]}


def position(e):
    return e["topic"], e["partition"], e["offset"]


def classify(events):
    """{type: [events]} with assign and poll also together, in history order, under "consumer"."""
    by_type = {t: [] for t in ("send", "poll", "assign", "commit", "final", "replica", "consumer")}
    for e in events:
        kind = e.get("type")
        if kind in by_type:
            by_type[kind].append(e)
            if kind in ("poll", "assign"):
                by_type["consumer"].append(e)
    return by_type


@dataclass
class Index:
    final_at: dict          # position -> value in the final read
    final_where: Positions  # value -> positions in the final read
    seen_where: Positions   # value -> positions in the final read and the polls
    final_offsets: dict     # (topic, partition) -> sorted offsets of the final read
    polled: set             # values some poll received
    sends: dict             # value -> its send event (an ok one if there is one)


def build_index(by_type) -> Index:
    final_at, final_where, seen_where, offsets = {}, Positions(), Positions(), {}
    for e in by_type["final"]:
        pos = position(e)
        final_at.setdefault(pos, e["value"])
        final_where.add(e["value"], pos)
        seen_where.add(e["value"], pos)
        offsets.setdefault(pos[:2], []).append(pos[2])
    for offs in offsets.values():
        offs.sort()
    polled = set()
    for e in by_type["poll"]:
        seen_where.add(e["value"], position(e))
        polled.add(e["value"])
    sends = {}
    for e in by_type["send"]:
        if e.get("result") == "ok" or e["value"] not in sends:
            sends[e["value"]] = e
    return Index(final_at, final_where, seen_where, offsets, polled, sends)


def acked_position(send):
    """The (topic, partition, offset) an ok send was acknowledged at, or None if not told."""
    if send.get("partition") is None or send.get("offset") is None or send["offset"] < 0:
        return None
    return send["topic"], send["partition"], send["offset"]


def send_example(send, **more):
    return {"value": send["value"], "client": send["client"], "topic": send["topic"],
            "partition": send.get("partition"), "offset": send.get("offset"), **more}


def offset_of(send):
    """An ok send's acknowledged offset; -1 (older than any) when not told."""
    offset = send.get("offset")
    return -1 if offset is None else offset


def required_values(ok_sends, by_type, compacted_topics):
    """The ok sends whose values must be in the final read: all of them, but in a compacted topic
    only the latest acknowledged one of each key, unless the final read has a later record of it."""
    latest, required = {}, []
    for s in ok_sends:
        if s["topic"] not in compacted_topics or s.get("key") is None:
            required.append(s)
            continue
        key = (s["topic"], s.get("partition"), s["key"])
        if key not in latest or offset_of(s) > offset_of(latest[key]):
            latest[key] = s
    newest_final = {}
    for e in by_type["final"]:
        if e["topic"] in compacted_topics:
            key = (e["topic"], e["partition"], e.get("key"))
            newest_final[key] = max(newest_final.get(key, -1), e["offset"])
    for key, s in latest.items():
        if newest_final.get(key, -1) <= offset_of(s) and s.get("value") is not None:
            required.append(s)
    return required


def check_lost(ok_sends, by_type, index, compacted_topics, found):
    for s in required_values(ok_sends, by_type, compacted_topics):
        if s["value"] not in index.final_where:
            found.add("lost", send_example(s, polled=s["value"] in index.polled))


def check_acked_offsets(ok_sends, index, found):
    for s in ok_sends:
        pos = acked_position(s)
        if pos is None:
            continue
        there = index.final_at.get(pos)
        if there is None and s["value"] in index.final_where:
            found.add("acked_offset_mismatch",
                      send_example(s, final_at=sorted(index.final_where.of(s["value"]))))
        elif there is not None and there != s["value"]:
            found.add("acked_offset_mismatch", send_example(s, final_value=there))


def check_failed_and_unseen(by_type, index, found):
    for s in by_type["send"]:
        v = s["value"]
        if s.get("result") == "fail" and (v in index.final_where or v in index.polled):
            found.add("failed_but_present", send_example(s))
        elif s.get("result") == "ok" and v in index.final_where and v not in index.polled:
            found.add("unseen", send_example(s))


def idempotence_of(idempotent_producers):
    """send event -> whether its producer was idempotent: the event's own "idempotent" field, or
    with idempotent_producers given, True/False for all or whether its client is in the collection."""
    if idempotent_producers is None:
        return lambda s: bool(s.get("idempotent"))
    if isinstance(idempotent_producers, bool):
        return lambda s: idempotent_producers
    clients = set(idempotent_producers)
    return lambda s: s.get("client") in clients


def check_duplicates(index, idempotent, found):
    for value, positions in index.seen_where.extra.items():
        send = index.sends.get(value)
        example = {"value": value, "positions": sorted(positions)}
        if send is not None and idempotent(send):
            found.add("duplicated", example)
        else:
            found.add("duplicated_non_idempotent", example)
    for value in index.seen_where.first:
        if value not in index.sends:
            found.add("never_sent", {"value": value, "at": index.seen_where.first[value]})


def source(e):
    return e["type"] if e["type"] == "final" else f"{e['type']} {e['client']}"


def check_inconsistent(by_type, found):
    """Positions where the polls, the final read and the replicas name more than one value."""
    first, conflicts = {}, {}
    for kind in ("final", "replica", "poll"):
        for e in by_type[kind]:
            pos, value = position(e), e["value"]
            seen = first.setdefault(pos, (value, e))
            if pos in conflicts:
                conflicts[pos].setdefault(value, []).append(source(e))
            elif seen[0] != value:
                conflicts[pos] = {seen[0]: [source(seen[1])], value: [source(e)]}
    for pos, values in conflicts.items():
        found.add("inconsistent_offsets",
                  {"at": pos, "values": {v: sorted(set(s))[:4] for v, s in values.items()}})


def check_replicas(by_type, index, found):
    """Positions where two replicas, or a replica and the final read, hold different values."""
    first, divergent = {}, set()
    for e in by_type["replica"]:
        pos = position(e)
        final = index.final_at.get(pos)
        if first.setdefault(pos, e["value"]) != e["value"] or final not in (None, e["value"]):
            divergent.add(pos)
    views = {pos: {} for pos in divergent}
    for e in by_type["replica"]:
        pos = position(e)
        if pos in views:
            views[pos][e["client"]] = e["value"]
    for pos in sorted(divergent):
        view = dict(sorted(views[pos].items()))
        if pos in index.final_at:
            view = {"final": index.final_at[pos], **view}
        found.add("replica_divergence", {"at": pos, "values": view})


def check_polls(by_type, index, found):
    """Within each assignment of a consumer: offsets strictly increase in each partition, and no
    record of the final read lies between two consecutive polls."""
    last = {}  # client -> {(topic, partition): last polled offset}
    for e in by_type["consumer"]:
        if e["type"] == "assign":
            last[e["client"]] = {}
            continue
        tp, offset = (e["topic"], e["partition"]), e["offset"]
        mine = last.setdefault(e["client"], {})
        prev = mine.get(tp)
        mine[tp] = offset
        if prev is None:
            continue
        if offset <= prev:
            found.add("nonmonotonic_polls", {"client": e["client"], "topic": tp[0],
                                             "partition": tp[1], "after": prev, "polled": offset})
        elif offset > prev + 1:
            offsets = index.final_offsets.get(tp, [])
            lo, hi = bisect.bisect_right(offsets, prev), bisect.bisect_left(offsets, offset)
            if hi > lo:
                found.add("skipped", {"client": e["client"], "topic": tp[0], "partition": tp[1],
                                      "after": prev, "polled": offset, "first_skipped": offsets[lo],
                                      "records_skipped": hi - lo}, count=hi - lo)


def check_commits(by_type, found):
    """Per (group, topic, partition): no commit below one that completed before it started."""
    by_tp = {}
    for e in by_type["commit"]:
        by_tp.setdefault((e.get("group"), e["topic"], e["partition"]), []).append(e)
    for (group, topic, partition), commits in by_tp.items():
        done = sorted(commits, key=lambda c: c["t"])
        done_t = [c["t"] for c in done]
        highest, best = [], None  # highest[i]: the commit of the highest offset among done[:i+1]
        for c in done:
            best = c if best is None or c["offset"] > best["offset"] else best
            highest.append(best)
        for b in commits:
            i = bisect.bisect_left(done_t, b.get("t0", b["t"]))
            a = highest[i - 1] if i else None
            if a is not None and b["offset"] < a["offset"]:
                found.add("commits_backwards", {
                    "group": group, "topic": topic, "partition": partition,
                    "earlier": (a["client"], a["offset"]), "later": (b["client"], b["offset"])})


def tallies(by_type):
    results = [s.get("result") for s in by_type["send"]]
    return {"sends": len(results), "acknowledged": results.count("ok"),
            "failed": results.count("fail"), "unknown": results.count("unknown"),
            "final_records": len(by_type["final"]), "polls": len(by_type["poll"]),
            "commits": len(by_type["commit"])}


def check(events, *, idempotent_producers=None, compacted_topics=(), expect_all_consumed=True) -> Result:
    """Checks a history (a list of event dicts, in the order the clients wrote them)."""
    by_type = classify(events)
    index = build_index(by_type)
    compacted = set(compacted_topics)
    ok_sends = [s for s in by_type["send"] if s.get("result") == "ok" and s.get("value") is not None]
    found = Examples()
    check_lost(ok_sends, by_type, index, compacted, found)
    check_acked_offsets(ok_sends, index, found)
    check_failed_and_unseen(by_type, index, found)
    check_duplicates(index, idempotence_of(idempotent_producers), found)
    check_inconsistent(by_type, found)
    check_replicas(by_type, index, found)
    check_polls(by_type, index, found)
    check_commits(by_type, found)
    counts = {**tallies(by_type), **found.counts}
    result = Result(True, counts, found.examples, expect_all_consumed)
    result.valid = not result.errors()
    return result


def load(paths) -> list:
    """The events of JSON-lines history files, file by file. A last line that does not parse (torn
    by a killed process) is skipped; a bad line anywhere else is an error."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    events = []
    for path in paths:
        lines = [l for l in Path(path).read_text(errors="replace").splitlines() if l.strip()]
        for n, line in enumerate(lines):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as e:
                if n == len(lines) - 1:
                    break
                raise ValueError(f"{path}:{n + 1}: not JSON ({e}): {line[:200]!r}") from None
    return events


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Checks fault-harness histories (HISTORY.md).")
    parser.add_argument("paths", nargs="+", help="JSON-lines history files")
    parser.add_argument("--compacted", action="append", default=[], metavar="TOPIC",
                        help="a compacted topic (repeatable)")
    parser.add_argument("--not-all-consumed", action="store_true",
                        help="unseen values are not an error")
    args = parser.parse_args(argv)
    result = check(load(args.paths), compacted_topics=args.compacted,
                   expect_all_consumed=not args.not_all_consumed)
    print(result.summary())
    return 0 if result.valid else 1


if __name__ == "__main__":
    sys.exit(main())
