"""Unit tests of the queue checker (checker.py) on small synthetic histories: a clean one is valid;
each anomaly, put in alone, is found with its exact count; and the allowed cases (an unknown send
absent, a non-idempotent duplicate, a rebalance's re-delivery, compaction dropping an older value of
a key, overlapping commits, a torn last line) are not errors. Pure Python, no broker, well under a
second."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checker  # noqa: E402

TOPIC = "queue"


def send(n, partition, offset, result="ok", client="p1", key=None, idempotent=True, t=None):
    return {"type": "send", "client": client, "t": t if t is not None else n + 0.5, "t0": float(n),
            "topic": TOPIC, "key": key, "value": f"{client}-{n}", "idempotent": idempotent,
            "result": result, "partition": partition if result == "ok" else None,
            "offset": offset if result == "ok" else None, "error": None if result == "ok" else "x"}


def record(kind, client, partition, offset, value, key=None):
    return {"type": kind, "client": client, "t": 100.0, "topic": TOPIC, "partition": partition,
            "offset": offset, "key": key, "value": value}


def final(partition, offset, value, key=None):
    return record("final", "final-reader", partition, offset, value, key)


def poll(client, partition, offset, value, group="g1"):
    return {**record("poll", client, partition, offset, value), "group": group}


def replica(node, partition, offset, value):
    return record("replica", node, partition, offset, value)


def assign(client, *partitions, group="g1"):
    return {"type": "assign", "client": client, "t": 1.0, "group": group,
            "partitions": [[TOPIC, p] for p in partitions]}


def commit(client, partition, offset, t0, t, group="g1"):
    return {"type": "commit", "client": client, "t": t, "t0": t0, "group": group,
            "topic": TOPIC, "partition": partition, "offset": offset}


def clean_history(records=6):
    """p1 writes `records` values, alternating partitions 0 and 1, all acknowledged; c1 polls them
    all, commits after each; the final read and two replicas hold them all."""
    sends, polls, commits, finals, replicas = [], [], [], [], []
    for n in range(records):
        p, offset = n % 2, n // 2
        s = send(n, p, offset)
        sends.append(s)
        polls.append(poll("c1", p, offset, s["value"]))
        commits.append(commit("c1", p, offset + 1, t0=10.0 + n, t=10.5 + n))
        finals.append(final(p, offset, s["value"]))
        replicas += [replica(node, p, offset, s["value"]) for node in ("node1", "node2")]
    return sends + [assign("c1", 0, 1)] + polls + commits + finals + replicas


def counts_of(result, *names):
    return {name: result.counts[name] for name in names}


ALL = checker.ERRORS + checker.INFORMATIONAL


def only(result, **expected):
    """Asserts the anomaly counts: those named equal `expected`, every other one is zero."""
    want = {name: expected.get(name, 0) for name in ALL}
    got = counts_of(result, *ALL)
    assert got == want, f"counts {got} != {want}\n{result.summary()}"


def replace(history, old_value, **changes):
    """The history with every final/poll/replica event of `old_value` changed by `changes`."""
    return [{**e, **changes} if e["type"] != "send" and e.get("value") == old_value else e
            for e in history]


def test_clean_history_is_valid_with_its_tallies():
    result = checker.check(clean_history())
    assert result.valid, result.summary()
    only(result)
    assert counts_of(result, "sends", "acknowledged", "failed", "unknown", "final_records", "polls",
                     "commits") == {"sends": 6, "acknowledged": 6, "failed": 0, "unknown": 0,
                                    "final_records": 6, "polls": 6, "commits": 6}, result.counts
    assert result.summary().startswith("VALID: 6 sends"), result.summary()
    assert result.table_row("leader-kill", ["kill", "partition"], 7) == \
        "| leader-kill | kill, partition | 6 | 0 | 0 | 7 |"


def test_ok_send_missing_from_final_read_is_lost():
    history = [e for e in clean_history() if e.get("value") != "p1-3" or e["type"] == "send"]
    result = checker.check(history)
    assert not result.valid
    only(result, lost=1)
    assert result.examples["lost"][0]["value"] == "p1-3", result.examples
    assert "lost 1 (error" in result.summary(), result.summary()


def test_unknown_and_failed_sends_absent_are_fine_and_failed_present_is_counted():
    history = clean_history(4) + [send(4, None, None, result="unknown"), send(5, None, None, result="fail"),
                                  send(6, None, None, result="fail"),
                                  final(0, 2, "p1-6"), poll("c1", 0, 2, "p1-6")]
    result = checker.check(history)
    assert result.valid, result.summary()
    only(result, failed_but_present=1)
    assert counts_of(result, "acknowledged", "failed", "unknown") == \
        {"acknowledged": 4, "failed": 2, "unknown": 1}, result.counts


def test_value_at_another_offset_than_acknowledged_is_a_mismatch():
    # p1-2 was acknowledged at partition 0 offset 1; the final read, the poll and the replicas
    # have it at 5 (and nothing at 1).
    history = replace(clean_history(4), "p1-2", offset=5)
    result = checker.check(history)
    assert not result.valid
    only(result, acked_offset_mismatch=1)
    assert result.examples["acked_offset_mismatch"][0]["final_at"] == [(TOPIC, 0, 5)]


def test_other_value_at_acknowledged_offset_is_a_mismatch():
    history = clean_history() + [send(9, 0, 1, client="p2")]  # p2-9 also acknowledged at 0@1
    result = checker.check(history)
    only(result, acked_offset_mismatch=1, lost=1, unseen=0)
    assert result.examples["acked_offset_mismatch"][0]["final_value"] == "p1-2"


def test_idempotent_duplicate_in_final_read_is_an_error():
    history = clean_history() + [final(0, 3, "p1-0"), poll("c1", 0, 3, "p1-0")]
    result = checker.check(history)
    assert not result.valid
    only(result, duplicated=1)
    assert result.examples["duplicated"][0]["positions"] == [(TOPIC, 0, 0), (TOPIC, 0, 3)]
    assert result.table_row("s", "kill", 1) == "| s | kill | 6 | 0 | 1 | 1 |"


def test_non_idempotent_duplicate_is_reported_but_not_an_error():
    history = [{**e, "idempotent": False} if e["type"] == "send" else e for e in clean_history()]
    history += [final(0, 3, "p1-0"), poll("c1", 0, 3, "p1-0")]
    result = checker.check(history)
    assert result.valid, result.summary()
    only(result, duplicated_non_idempotent=1)
    # The producers can be named instead: then p1 counts as idempotent whatever its events say.
    assert checker.check(history, idempotent_producers={"p1"}).counts["duplicated"] == 1


def test_duplicate_across_polls_only():
    history = clean_history() + [poll("c2", 1, 7, "p1-1")]
    result = checker.check(history)
    only(result, duplicated=1)


def test_two_values_at_one_offset_are_inconsistent():
    history = clean_history() + [poll("c2", 1, 2, "p1-0")]  # 1@2 is p1-5; p1-0 is 0@0
    result = checker.check(history)
    only(result, inconsistent_offsets=1, duplicated=1)
    example = result.examples["inconsistent_offsets"][0]
    assert example["at"] == (TOPIC, 1, 2) and set(example["values"]) == {"p1-5", "p1-0"}, example


def test_diverging_replica_is_reported_with_its_node():
    history = [replica("node2", 0, 1, "p1-9") if e["type"] == "replica" and e["client"] == "node2"
               and e["offset"] == 1 and e["partition"] == 0 else e for e in clean_history()]
    result = checker.check(history)
    assert not result.valid
    only(result, replica_divergence=1, inconsistent_offsets=1, never_sent=0)
    assert result.examples["replica_divergence"][0] == \
        {"at": (TOPIC, 0, 1), "values": {"final": "p1-2", "node1": "p1-2", "node2": "p1-9"}}


def test_replicas_with_different_lengths_do_not_diverge():
    history = [e for e in clean_history() if not (e["type"] == "replica" and e["client"] == "node2"
                                                   and e["offset"] == 2)]
    only(checker.check(history))


def test_poll_going_back_within_an_assignment_is_nonmonotonic():
    history = clean_history() + [poll("c1", 0, 1, "p1-2")]
    result = checker.check(history)
    only(result, nonmonotonic_polls=1)
    assert result.examples["nonmonotonic_polls"][0] == \
        {"client": "c1", "topic": TOPIC, "partition": 0, "after": 2, "polled": 1}


def test_rebalance_redelivery_is_not_nonmonotonic():
    history = clean_history() + [assign("c1", 0), poll("c1", 0, 1, "p1-2"), poll("c1", 0, 2, "p1-4")]
    result = checker.check(history)
    assert result.valid, result.summary()
    only(result)


def test_poll_jumping_over_records_skips_them():
    history = [e for e in clean_history(10) if not (e["type"] == "poll" and e["value"] in ("p1-2", "p1-4"))]
    result = checker.check(history)
    only(result, skipped=2, unseen=2)
    assert result.examples["skipped"][0]["first_skipped"] == 1, result.examples["skipped"]


def test_gap_without_records_is_not_a_skip():
    # Offsets 1 and 2 of partition 0 hold no record (compacted away, or control batches).
    history = [send(0, 0, 0), send(1, 0, 3), assign("c1", 0), poll("c1", 0, 0, "p1-0"),
               poll("c1", 0, 3, "p1-1"), final(0, 0, "p1-0"), final(0, 3, "p1-1")]
    result = checker.check(history)
    assert result.valid, result.summary()
    only(result)


def test_acknowledged_but_never_polled_is_unseen():
    history = [e for e in clean_history() if not (e["type"] == "poll" and e["value"] == "p1-5")]
    result = checker.check(history)
    assert not result.valid
    only(result, unseen=1)
    relaxed = checker.check(history, expect_all_consumed=False)
    assert relaxed.valid and relaxed.counts["unseen"] == 1, relaxed.summary()


def test_compaction_may_drop_older_values_of_a_key_but_not_the_latest():
    sends = [send(0, 0, 0, key="k"), send(1, 0, 1, key="k"), send(2, 0, 2, key="j")]
    reads = [assign("c1", 0), poll("c1", 0, 0, "p1-0"), poll("c1", 0, 1, "p1-1"), poll("c1", 0, 2, "p1-2")]
    kept = [final(0, 1, "p1-1", key="k"), final(0, 2, "p1-2", key="j")]
    result = checker.check(sends + reads + kept, compacted_topics=(TOPIC,))
    assert result.valid, result.summary()
    only(result)
    # Without the compaction the older value is lost; dropping the latest one is lost either way.
    only(checker.check(sends + reads + kept), lost=1)
    dropped = [final(0, 0, "p1-0", key="k"), final(0, 2, "p1-2", key="j")]
    only(checker.check(sends + reads + dropped, compacted_topics=(TOPIC,)), lost=1)


def test_compaction_by_a_later_unacknowledged_write_of_the_key_is_not_lost():
    history = [send(0, 0, 0, key="k"), send(1, None, None, key="k", result="unknown"),
               assign("c1", 0), poll("c1", 0, 0, "p1-0"), poll("c1", 0, 1, "p1-1"),
               final(0, 1, "p1-1", key="k")]
    only(checker.check(history, compacted_topics=(TOPIC,)))


def test_commit_below_an_earlier_completed_commit_goes_backwards():
    history = clean_history() + [commit("c2", 0, 1, t0=30.0, t=30.5)]  # c1 committed 3 at 14.5
    result = checker.check(history)
    assert not result.valid
    only(result, commits_backwards=1)
    assert result.examples["commits_backwards"][0]["earlier"] == ("c1", 3), result.examples


def test_overlapping_commits_are_not_ordered():
    history = clean_history() + [commit("c2", 0, 5, t0=20.0, t=21.0), commit("c1", 0, 4, t0=20.5, t=21.5)]
    only(checker.check(history))
    # The same two, one after the other, go backwards; other groups are not compared.
    ordered = clean_history() + [commit("c2", 0, 5, t0=20.0, t=21.0), commit("c1", 0, 4, t0=21.2, t=21.5),
                                 commit("c3", 0, 0, t0=22.0, t=22.5, group="g2")]
    only(checker.check(ordered), commits_backwards=1)


def test_load_skips_a_torn_last_line_only(tmp_path):
    events = clean_history(2)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(e) + "\n" for e in events[:2]) + '{"type": "sen')
    b.write_text("".join(json.dumps(e) + "\n" for e in events[2:]))
    assert checker.load([a, b]) == events
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "sen\n' + json.dumps(events[0]) + "\n")
    try:
        checker.load([bad])
    except ValueError as e:
        assert "bad.jsonl:1" in str(e), e
    else:
        raise AssertionError("a torn line that is not the last one was accepted")


def test_main_exits_1_on_an_invalid_history(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    history = [e for e in clean_history() if e.get("value") != "p1-3" or e["type"] == "send"]
    path.write_text("".join(json.dumps(e) + "\n" for e in history))
    assert checker.main([str(path)]) == 1
    assert capsys.readouterr().out.startswith("INVALID: 6 sends")


def test_a_large_history_checks_in_seconds():
    import time
    sends, reads = [], [assign("c1", 0)]
    for n in range(50_000):
        sends.append(send(n, 0, n))
        reads += [poll("c1", 0, n, f"p1-{n}"), final(0, n, f"p1-{n}")]
    started = time.monotonic()
    result = checker.check(sends + reads)
    elapsed_s = time.monotonic() - started
    assert result.valid and result.counts["final_records"] == 50_000, result.summary()
    assert elapsed_s < 1.5, f"150 000 events took {elapsed_s:.2f} s"
