//! Scenario tests: known-bad histories are flagged, known-good ones accepted.

use crate::{
    CheckOptions, Completion, ErrorKind, History, HistoryError, Op, OpId, Outcome, Ret,
    SharedHistory, Verdict, check, check_with,
};

fn append(data: &str) -> Op {
    Op::Append(data.as_bytes().to_vec())
}

fn put(data: &str) -> Op {
    Op::Put(data.as_bytes().to_vec())
}

fn write_at(offset: u64, data: &str) -> Op {
    Op::WriteAt {
        offset,
        data: data.as_bytes().to_vec(),
    }
}

fn truncate(size: u64) -> Op {
    Op::Truncate { size }
}

fn value(data: &str) -> Ret {
    Ret::Value(data.as_bytes().to_vec())
}

/// Records `op` by `process` on `file` as invoked and completed with `ret` right away.
fn done(h: &mut History, process: u64, file: &str, op: Op, ret: Ret) -> OpId {
    let id = h.invoke(process, file, op);
    h.ok(id, ret).expect("a well-formed completion");
    id
}

/// Records `op` as invoked and failed with `error` right away.
fn failed(h: &mut History, process: u64, file: &str, op: Op, error: ErrorKind) -> OpId {
    let id = h.invoke(process, file, op);
    h.fail(id, error).expect("a well-formed completion");
    id
}

fn read(h: &mut History, process: u64, file: &str, data: &str) -> OpId {
    done(h, process, file, Op::Read, value(data))
}

fn ok(h: &mut History, id: OpId, ret: Ret) {
    h.ok(id, ret).expect("a well-formed completion");
}

#[track_caller]
fn assert_linearizable(h: &History) {
    let verdict = check(h);
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
}

/// Asserts a violation on `file` and returns the explanation.
#[track_caller]
fn assert_violation(h: &History, file: &str) -> String {
    match check(h) {
        Verdict::NotLinearizable {
            file: f,
            explanation,
        } => {
            assert_eq!(f, file, "{explanation}");
            assert!(!explanation.is_empty());
            explanation
        }
        other => panic!("expected a violation on {file:?}, got {other}"),
    }
}

// ---------------------------------------------------------------------------
// Known-bad histories.
// ---------------------------------------------------------------------------

#[test]
fn stale_read_is_flagged() {
    let mut h = History::new();
    done(&mut h, 1, "f", put("old"), Ret::Done);
    done(&mut h, 1, "f", put("new"), Ret::Done);
    read(&mut h, 2, "f", "old");
    let why = assert_violation(&h, "f");
    assert!(why.contains("read"), "{why}");
    assert!(why.contains("\"old\""), "{why}");
    assert!(why.contains("\"new\""), "{why}");
}

#[test]
fn stale_read_after_a_concurrent_read_saw_the_new_value_is_flagged() {
    // The write is still in flight, but once one read saw it, a later read may not go back.
    let mut h = History::new();
    done(&mut h, 1, "f", put("old"), Ret::Done);
    let w = h.invoke(1, "f", put("new"));
    read(&mut h, 2, "f", "new");
    read(&mut h, 3, "f", "old");
    ok(&mut h, w, Ret::Done);
    assert_violation(&h, "f");
}

#[test]
fn lost_append_is_flagged() {
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    done(&mut h, 1, "f", append("x"), Ret::Done);
    done(&mut h, 2, "f", append("y"), Ret::Done);
    read(&mut h, 3, "f", "x");
    assert_violation(&h, "f");
}

#[test]
fn duplicated_append_is_flagged() {
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    done(&mut h, 1, "f", append("x"), Ret::Done);
    read(&mut h, 2, "f", "xx");
    assert_violation(&h, "f");
}

#[test]
fn duplicated_unknown_append_is_flagged() {
    // A retried append of unknown outcome may land once, never twice.
    let mut h = History::new();
    let a = h.invoke(1, "f", append("x"));
    h.unknown(a).expect("unknown");
    read(&mut h, 2, "f", "xx");
    assert_violation(&h, "f");
}

#[test]
fn read_of_a_value_never_written_is_flagged() {
    let mut h = History::new();
    done(&mut h, 1, "f", put("a"), Ret::Done);
    let w = h.invoke(1, "f", put("b"));
    read(&mut h, 2, "f", "z");
    ok(&mut h, w, Ret::Done);
    let why = assert_violation(&h, "f");
    assert!(why.contains("\"z\""), "{why}");
}

#[test]
fn delete_that_unhappens_is_flagged() {
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    done(&mut h, 1, "f", append("data"), Ret::Done);
    done(&mut h, 1, "f", Op::Delete, Ret::Done);
    read(&mut h, 2, "f", "data");
    assert_violation(&h, "f");

    // A second delete that succeeds is the same bug seen by a writer.
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    done(&mut h, 1, "f", Op::Delete, Ret::Done);
    done(&mut h, 2, "f", Op::Delete, Ret::Done);
    assert_violation(&h, "f");
}

#[test]
fn create_succeeding_twice_without_delete_is_flagged() {
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    done(&mut h, 2, "f", Op::Create, Ret::Done);
    assert_violation(&h, "f");

    // Even when the two creates are concurrent.
    let mut h = History::new();
    let a = h.invoke(1, "f", Op::Create);
    let b = h.invoke(2, "f", Op::Create);
    ok(&mut h, a, Ret::Done);
    ok(&mut h, b, Ret::Done);
    assert_violation(&h, "f");
}

#[test]
fn observed_errors_must_match_the_state() {
    // NotFound from a read of a file known to exist.
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    failed(&mut h, 2, "f", Op::Read, ErrorKind::NotFound);
    assert_violation(&h, "f");

    // AlreadyExists from a create of a file that never existed.
    let mut h = History::new();
    failed(&mut h, 1, "f", Op::Create, ErrorKind::AlreadyExists);
    assert_violation(&h, "f");

    // NotFound from an append: dfs appends create missing files.
    let mut h = History::new();
    failed(&mut h, 1, "f", append("x"), ErrorKind::NotFound);
    assert_violation(&h, "f");
}

#[test]
fn append_offsets_are_checked() {
    // Offsets contradicting the order the read shows.
    let mut h = History::new();
    let a = h.invoke(1, "f", append("ab"));
    let b = h.invoke(2, "f", append("c"));
    ok(&mut h, a, Ret::Appended { offset: 0 });
    ok(&mut h, b, Ret::Appended { offset: 2 });
    read(&mut h, 3, "f", "cab");
    assert_violation(&h, "f");

    // Two appends claiming the same offset.
    let mut h = History::new();
    let a = h.invoke(1, "f", append("a"));
    let b = h.invoke(2, "f", append("b"));
    ok(&mut h, a, Ret::Appended { offset: 0 });
    ok(&mut h, b, Ret::Appended { offset: 0 });
    assert_violation(&h, "f");
}

#[test]
fn violations_on_one_file_are_found_among_good_files() {
    let mut h = History::new();
    for round in 0..20 {
        for (p, file) in ["a", "b", "c"].into_iter().enumerate() {
            done(&mut h, p as u64, file, append("z"), Ret::Done);
            if round == 10 && file == "b" {
                read(&mut h, 9, file, &"z".repeat(10));
            } else {
                read(&mut h, 9, file, &"z".repeat(round + 1));
            }
        }
    }
    assert_violation(&h, "b");
}

#[test]
fn explanation_names_the_file_the_prefix_and_the_candidates() {
    let mut h = History::new();
    done(&mut h, 1, "dir/f", Op::Create, Ret::Done);
    let a = h.invoke(2, "dir/f", append("x"));
    let b = h.invoke(3, "dir/f", append("y"));
    read(&mut h, 4, "dir/f", "q");
    ok(&mut h, a, Ret::Done);
    ok(&mut h, b, Ret::Done);
    let why = assert_violation(&h, "dir/f");
    for needle in [
        "\"dir/f\"",
        "op#0 (process 1) create -> ok",
        "op#3 (process 4) read -> \"q\"",
        "op#1 (process 2) append \"x\"",
        "op#2 (process 3) append \"y\"",
        "cannot, the model would answer \"\" since \"dir/f\" holds \"\"",
        "fits, but then \"dir/f\" holds \"x\", and op#3 (process 4) read -> \"q\"",
    ] {
        assert!(why.contains(needle), "{needle:?} missing from:\n{why}");
    }
    let verdict = check(&h);
    assert!(
        verdict
            .to_string()
            .starts_with("not linearizable on \"dir/f\"")
    );
}

// ---------------------------------------------------------------------------
// Known-good histories.
// ---------------------------------------------------------------------------

#[test]
fn concurrent_appends_may_land_in_either_order() {
    for (order, offsets) in [("xy", [0, 1]), ("yx", [1, 0])] {
        let mut h = History::new();
        done(&mut h, 1, "f", Op::Create, Ret::Done);
        let a = h.invoke(1, "f", append("x"));
        let b = h.invoke(2, "f", append("y"));
        ok(&mut h, b, Ret::Appended { offset: offsets[1] });
        ok(&mut h, a, Ret::Appended { offset: offsets[0] });
        read(&mut h, 3, "f", order);
        assert_linearizable(&h);
    }
}

#[test]
fn read_concurrent_with_a_write_may_return_either_value() {
    for seen in ["old", "new"] {
        let mut h = History::new();
        done(&mut h, 1, "f", put("old"), Ret::Done);
        let w = h.invoke(1, "f", put("new"));
        read(&mut h, 2, "f", seen);
        ok(&mut h, w, Ret::Done);
        read(&mut h, 2, "f", "new");
        assert_linearizable(&h);
    }
    // Also when the read's interval contains the write's whole interval.
    let mut h = History::new();
    done(&mut h, 1, "f", put("old"), Ret::Done);
    let r = h.invoke(2, "f", Op::Read);
    done(&mut h, 1, "f", put("new"), Ret::Done);
    ok(&mut h, r, value("old"));
    assert_linearizable(&h);
}

#[test]
fn unknown_ops_may_or_may_not_take_effect() {
    for seen in ["", "x"] {
        let mut h = History::new();
        done(&mut h, 1, "f", Op::Create, Ret::Done);
        let a = h.invoke(1, "f", append("x"));
        h.unknown(a).expect("unknown");
        read(&mut h, 2, "f", seen);
        read(&mut h, 2, "f", seen);
        assert_linearizable(&h);
    }
    // It may take effect late: after later operations, even ones that started after it
    // gave up.
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    let a = h.invoke(1, "f", append("x"));
    h.unknown(a).expect("unknown");
    done(&mut h, 1, "f", append("y"), Ret::Done);
    read(&mut h, 2, "f", "y");
    read(&mut h, 2, "f", "yx");
    assert_linearizable(&h);
    // But once seen, it cannot un-happen.
    read(&mut h, 2, "f", "y");
    assert_violation(&h, "f");

    // An unknown delete and an unknown create.
    for seen in [Ok("x"), Err(ErrorKind::NotFound)] {
        let mut h = History::new();
        done(&mut h, 1, "f", put("x"), Ret::Done);
        let d = h.invoke(1, "f", Op::Delete);
        h.unknown(d).expect("unknown");
        match seen {
            Ok(v) => read(&mut h, 2, "f", v),
            Err(e) => failed(&mut h, 2, "f", Op::Read, e),
        };
        assert_linearizable(&h);
    }
    let mut h = History::new();
    let c = h.invoke(1, "f", Op::Create);
    h.unknown(c).expect("unknown");
    failed(&mut h, 2, "f", Op::Create, ErrorKind::AlreadyExists);
    read(&mut h, 2, "f", "");
    assert_linearizable(&h);
}

#[test]
fn pending_ops_count_as_unknown() {
    let mut h = History::new();
    h.invoke(1, "f", put("x"));
    h.invoke(2, "f", Op::Read); // a read that never answered observed nothing
    read(&mut h, 3, "f", "x");
    assert_linearizable(&h);
}

#[test]
fn rejected_ops_are_ignored() {
    let mut h = History::new();
    failed(&mut h, 1, "f", put("x"), ErrorKind::Rejected);
    failed(&mut h, 1, "f", Op::Read, ErrorKind::Rejected);
    failed(&mut h, 1, "f", Op::Read, ErrorKind::NotFound);
    assert_linearizable(&h);
}

#[test]
fn dfs_semantics_append_and_put_create_missing_files() {
    let mut h = History::new();
    done(&mut h, 1, "a", append("x"), Ret::Appended { offset: 0 });
    read(&mut h, 1, "a", "x");
    done(&mut h, 1, "p", put("y"), Ret::Done);
    read(&mut h, 1, "p", "y");
    failed(&mut h, 1, "p", Op::Create, ErrorKind::AlreadyExists);
    done(&mut h, 1, "p", Op::Delete, Ret::Done);
    failed(&mut h, 1, "p", Op::Delete, ErrorKind::NotFound);
    failed(&mut h, 1, "p", Op::Read, ErrorKind::NotFound);
    done(&mut h, 1, "p", Op::Create, Ret::Done);
    read(&mut h, 1, "p", "");
    done(&mut h, 1, "p", put(""), Ret::Done);
    read(&mut h, 1, "p", "");
    assert_linearizable(&h);
}

#[test]
fn initial_state_is_respected() {
    let mut h = History::new();
    h.set_initial("f", b"seed".to_vec());
    assert_eq!(h.initial("f"), Some(&b"seed"[..]));
    assert_eq!(h.initial("g"), None);
    done(&mut h, 1, "f", append("!"), Ret::Appended { offset: 4 });
    read(&mut h, 1, "f", "seed!");
    assert_linearizable(&h);

    let mut h = History::new();
    h.set_initial("f", b"seed".to_vec());
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    assert_violation(&h, "f");
}

#[test]
fn long_sequential_history_is_accepted() {
    let mut h = History::new();
    let mut content: Option<Vec<u8>> = None;
    for i in 0..3000u32 {
        let p = u64::from(i % 7);
        match i % 10 {
            0 if content.is_none() => {
                done(&mut h, p, "f", Op::Create, Ret::Done);
                content = Some(Vec::new());
            }
            0 | 9 if i % 3 == 0 => {
                if content.take().is_some() {
                    done(&mut h, p, "f", Op::Delete, Ret::Done);
                } else {
                    failed(&mut h, p, "f", Op::Delete, ErrorKind::NotFound);
                }
            }
            1..=5 => {
                let data = format!("{i},");
                let offset = content.as_ref().map_or(0, |c| c.len() as u64);
                done(&mut h, p, "f", append(&data), Ret::Appended { offset });
                content.get_or_insert_with(Vec::new).extend(data.bytes());
            }
            6 => {
                let data = format!("put{i}");
                done(&mut h, p, "f", put(&data), Ret::Done);
                content = Some(data.into_bytes());
            }
            _ => match &content {
                Some(c) => {
                    done(&mut h, p, "f", Op::Read, Ret::Value(c.clone()));
                }
                None => {
                    failed(&mut h, p, "f", Op::Read, ErrorKind::NotFound);
                }
            },
        }
    }
    assert_linearizable(&h);
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&History::new());
}

// ---------------------------------------------------------------------------
// Writes at an offset and truncations.
// ---------------------------------------------------------------------------

#[test]
fn a_read_that_sees_a_write_at_before_it_was_invoked_is_flagged() {
    let mut h = History::new();
    done(&mut h, 1, "f", put("abcdef"), Ret::Done);
    read(&mut h, 2, "f", "abXYef");
    done(&mut h, 1, "f", write_at(2, "XY"), Ret::Size(6));
    let why = assert_violation(&h, "f");
    assert!(why.contains("read -> \"abXYef\""), "{why}");
    assert!(why.contains("\"f\" holds \"abcdef\""), "{why}");

    // Seen after it, or during it, the same read is fine.
    let mut h = History::new();
    done(&mut h, 1, "f", put("abcdef"), Ret::Done);
    let w = h.invoke(1, "f", write_at(2, "XY"));
    read(&mut h, 2, "f", "abXYef");
    ok(&mut h, w, Ret::Size(6));
    read(&mut h, 2, "f", "abXYef");
    assert_linearizable(&h);
}

#[test]
fn a_read_of_the_old_longer_content_after_a_truncate_is_flagged() {
    let mut h = History::new();
    done(&mut h, 1, "f", put("abcdef"), Ret::Done);
    done(&mut h, 1, "f", truncate(3), Ret::Size(3));
    read(&mut h, 2, "f", "abcdef");
    let why = assert_violation(&h, "f");
    assert!(why.contains("truncate to 3"), "{why}");

    let mut h = History::new();
    done(&mut h, 1, "f", put("abcdef"), Ret::Done);
    done(&mut h, 1, "f", truncate(3), Ret::Size(3));
    read(&mut h, 2, "f", "abc");
    assert_linearizable(&h);
}

#[test]
fn a_write_at_in_the_middle_overwrites_in_place() {
    let mut h = History::new();
    done(&mut h, 1, "f", put("hello world"), Ret::Done);
    done(&mut h, 1, "f", write_at(6, "there"), Ret::Size(11));
    read(&mut h, 2, "f", "hello there");
    done(&mut h, 1, "f", write_at(0, "J"), Ret::Size(11));
    read(&mut h, 2, "f", "Jello there");
    done(&mut h, 1, "f", write_at(9, "ABCD"), Ret::Size(13));
    read(&mut h, 2, "f", "Jello theABCD");
    assert_linearizable(&h);

    // Inserting instead of overwriting is flagged.
    let mut h = History::new();
    done(&mut h, 1, "f", put("hello world"), Ret::Done);
    done(&mut h, 1, "f", write_at(6, "there"), Ret::Done);
    read(&mut h, 2, "f", "hello thereworld");
    assert_violation(&h, "f");
}

#[test]
fn a_write_past_the_end_and_a_truncate_upwards_fill_with_zeros() {
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    done(&mut h, 1, "f", append("ab"), Ret::Appended { offset: 0 });
    done(&mut h, 1, "f", write_at(5, "X"), Ret::Size(6));
    done(&mut h, 2, "f", Op::Read, Ret::Value(b"ab\0\0\0X".to_vec()));
    done(&mut h, 1, "f", truncate(8), Ret::Size(8));
    done(
        &mut h,
        2,
        "f",
        Op::Read,
        Ret::Value(b"ab\0\0\0X\0\0".to_vec()),
    );
    done(&mut h, 1, "f", append("c"), Ret::Appended { offset: 8 });
    done(
        &mut h,
        2,
        "f",
        Op::Read,
        Ret::Value(b"ab\0\0\0X\0\0c".to_vec()),
    );
    assert_linearizable(&h);

    // The gap must hold zeros, not whatever was there before or anything else.
    for gap in [&b"ab   X"[..], b"abcd X", b"abX"] {
        let mut h = History::new();
        done(&mut h, 1, "f", put("abcd"), Ret::Done);
        done(&mut h, 1, "f", truncate(2), Ret::Size(2));
        done(&mut h, 1, "f", write_at(5, "X"), Ret::Size(6));
        done(&mut h, 2, "f", Op::Read, Ret::Value(gap.to_vec()));
        assert_violation(&h, "f");
    }
    // A write at an offset into a created, empty file.
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    done(&mut h, 1, "f", write_at(2, "z"), Ret::Size(3));
    done(&mut h, 2, "f", Op::Read, Ret::Value(b"\0\0z".to_vec()));
    assert_linearizable(&h);
}

#[test]
fn write_at_and_truncate_fail_with_not_found_on_a_missing_file_and_create_nothing() {
    let mut h = History::new();
    failed(&mut h, 1, "f", write_at(0, "x"), ErrorKind::NotFound);
    failed(&mut h, 1, "f", truncate(4), ErrorKind::NotFound);
    failed(&mut h, 2, "f", Op::Read, ErrorKind::NotFound);
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    read(&mut h, 2, "f", "");
    done(&mut h, 1, "f", Op::Delete, Ret::Done);
    failed(&mut h, 1, "f", write_at(3, "y"), ErrorKind::NotFound);
    failed(&mut h, 1, "f", truncate(0), ErrorKind::NotFound);
    assert_linearizable(&h);

    // Succeeding on a missing file, or creating it, is flagged.
    for op in [write_at(0, "x"), truncate(0)] {
        let mut h = History::new();
        done(&mut h, 1, "f", op.clone(), Ret::Done);
        assert_violation(&h, "f");

        let mut h = History::new();
        failed(&mut h, 1, "f", op, ErrorKind::NotFound);
        read(&mut h, 2, "f", "");
        assert_violation(&h, "f");
    }
    // NotFound on a file known to exist is flagged.
    for op in [write_at(0, "x"), truncate(0)] {
        let mut h = History::new();
        done(&mut h, 1, "f", Op::Create, Ret::Done);
        failed(&mut h, 1, "f", op, ErrorKind::NotFound);
        assert_violation(&h, "f");
    }
}

#[test]
fn write_at_and_truncate_sizes_are_checked() {
    // A write inside the file leaves its size; one past the end extends it.
    let mut h = History::new();
    done(&mut h, 1, "f", put("abcdef"), Ret::Done);
    done(&mut h, 1, "f", write_at(1, "x"), Ret::Size(6));
    done(&mut h, 1, "f", write_at(4, "yyyy"), Ret::Size(8));
    done(&mut h, 1, "f", truncate(2), Ret::Size(2));
    done(&mut h, 1, "f", write_at(1, "z"), Ret::Done);
    read(&mut h, 2, "f", "az");
    assert_linearizable(&h);

    for (op, wrong) in [
        (write_at(1, "x"), 2),
        (write_at(4, "yyyy"), 6),
        (truncate(2), 6),
    ] {
        let mut h = History::new();
        done(&mut h, 1, "f", put("abcdef"), Ret::Done);
        done(&mut h, 1, "f", op, Ret::Size(wrong));
        assert_violation(&h, "f");
    }
}

#[test]
fn concurrent_write_at_and_append_may_land_in_either_order() {
    // The write at the end first: the append lands after it. The append first: the write
    // overwrites the appended byte.
    for (seen, write_size, append_offset) in [("0123WA", 5, 5), ("0123W", 5, 4)] {
        let mut h = History::new();
        done(&mut h, 1, "f", put("0123"), Ret::Done);
        let w = h.invoke(1, "f", write_at(4, "W"));
        let a = h.invoke(2, "f", append("A"));
        ok(
            &mut h,
            a,
            Ret::Appended {
                offset: append_offset,
            },
        );
        ok(&mut h, w, Ret::Size(write_size));
        read(&mut h, 3, "f", seen);
        assert_linearizable(&h);
    }
    // Without the results' offsets and sizes, both orders are still considered.
    for seen in ["0123WA", "0123W"] {
        let mut h = History::new();
        done(&mut h, 1, "f", put("0123"), Ret::Done);
        let w = h.invoke(1, "f", write_at(4, "W"));
        let a = h.invoke(2, "f", append("A"));
        ok(&mut h, a, Ret::Done);
        ok(&mut h, w, Ret::Done);
        read(&mut h, 3, "f", seen);
        assert_linearizable(&h);
    }
    // No order gives this.
    let mut h = History::new();
    done(&mut h, 1, "f", put("0123"), Ret::Done);
    let w = h.invoke(1, "f", write_at(4, "W"));
    let a = h.invoke(2, "f", append("A"));
    ok(&mut h, a, Ret::Done);
    ok(&mut h, w, Ret::Done);
    read(&mut h, 3, "f", "0123AW");
    assert_violation(&h, "f");
    // Nor do results that contradict the order the read shows.
    let mut h = History::new();
    done(&mut h, 1, "f", put("0123"), Ret::Done);
    let w = h.invoke(1, "f", write_at(4, "W"));
    let a = h.invoke(2, "f", append("A"));
    ok(&mut h, a, Ret::Appended { offset: 4 });
    ok(&mut h, w, Ret::Size(5));
    read(&mut h, 3, "f", "0123WA");
    assert_violation(&h, "f");
}

#[test]
fn unknown_write_at_and_truncate_may_or_may_not_take_effect() {
    for seen in ["abc", "aXc"] {
        let mut h = History::new();
        done(&mut h, 1, "f", put("abc"), Ret::Done);
        let w = h.invoke(1, "f", write_at(1, "X"));
        h.unknown(w).expect("unknown");
        read(&mut h, 2, "f", seen);
        read(&mut h, 2, "f", seen);
        assert_linearizable(&h);
    }
    // Once seen, it cannot un-happen.
    let mut h = History::new();
    done(&mut h, 1, "f", put("abc"), Ret::Done);
    let w = h.invoke(1, "f", write_at(1, "X"));
    h.unknown(w).expect("unknown");
    read(&mut h, 2, "f", "aXc");
    read(&mut h, 2, "f", "abc");
    assert_violation(&h, "f");

    // An unknown truncation, possibly after a later append.
    for seen in ["abcd", "a", "ad"] {
        let mut h = History::new();
        done(&mut h, 1, "f", put("abc"), Ret::Done);
        let t = h.invoke(1, "f", truncate(1));
        h.unknown(t).expect("unknown");
        done(&mut h, 1, "f", append("d"), Ret::Done);
        read(&mut h, 2, "f", seen);
        assert_linearizable(&h);
    }
    // But it cuts to its size, nothing else.
    let mut h = History::new();
    done(&mut h, 1, "f", put("abc"), Ret::Done);
    let t = h.invoke(1, "f", truncate(1));
    h.unknown(t).expect("unknown");
    read(&mut h, 2, "f", "ab");
    assert_violation(&h, "f");
}

#[test]
fn read_prefix_pruning_waits_for_pending_writes_at_and_truncations() {
    // After the append the content is "ab", which "Xb" does not start with: only the
    // concurrent write at offset 0 explains the read.
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    let a = h.invoke(1, "f", append("ab"));
    let w = h.invoke(2, "f", write_at(0, "X"));
    let r = h.invoke(3, "f", Op::Read);
    ok(&mut h, a, Ret::Done);
    ok(&mut h, r, value("Xb"));
    ok(&mut h, w, Ret::Done);
    assert_linearizable(&h);

    // Likewise a truncation between two appends.
    let mut h = History::new();
    done(&mut h, 1, "f", Op::Create, Ret::Done);
    let a = h.invoke(1, "f", append("abc"));
    let t = h.invoke(2, "f", truncate(1));
    let d = h.invoke(3, "f", append("d"));
    let r = h.invoke(4, "f", Op::Read);
    ok(&mut h, r, value("ad"));
    ok(&mut h, d, Ret::Done);
    ok(&mut h, t, Ret::Done);
    ok(&mut h, a, Ret::Done);
    assert_linearizable(&h);

    // A write that failed (it met the file absent) changed nothing: it cannot explain
    // such a read.
    let mut h = History::new();
    let w = h.invoke(2, "f", write_at(0, "X"));
    let c = h.invoke(1, "f", Op::Create);
    let a = h.invoke(1, "f", append("ab"));
    let r = h.invoke(3, "f", Op::Read);
    ok(&mut h, c, Ret::Done);
    ok(&mut h, a, Ret::Done);
    ok(&mut h, r, value("Xb"));
    h.fail(w, ErrorKind::NotFound).expect("fail");
    assert_violation(&h, "f");
}

#[test]
fn memoized_states_that_differ_only_by_overwritten_bytes_are_not_conflated() {
    // Two concurrent writes of different bytes at the same offset give contents of equal
    // length but different bytes; the read must see the last one in some order, and the
    // later read must agree with it.
    let cases = [
        ("aXc", "aXc", true),
        ("aYc", "aYc", true),
        ("aXc", "aYc", false),
    ];
    for (first, second, linearizable) in cases {
        let mut h = History::new();
        done(&mut h, 1, "f", put("abc"), Ret::Done);
        let x = h.invoke(1, "f", write_at(1, "X"));
        let y = h.invoke(2, "f", write_at(1, "Y"));
        ok(&mut h, x, Ret::Size(3));
        ok(&mut h, y, Ret::Size(3));
        read(&mut h, 3, "f", first);
        read(&mut h, 3, "f", second);
        if linearizable {
            assert_linearizable(&h);
        } else {
            assert_violation(&h, "f");
        }
    }
}

#[test]
fn huge_offsets_and_sizes_are_modelled_without_materializing_them() {
    let big = 1u64 << 50;
    let mut h = History::new();
    done(&mut h, 1, "f", put("ab"), Ret::Done);
    done(&mut h, 1, "f", truncate(big), Ret::Size(big));
    done(&mut h, 1, "f", write_at(big, "z"), Ret::Size(big + 1));
    done(&mut h, 1, "f", write_at(1, "Q"), Ret::Size(big + 1));
    done(
        &mut h,
        1,
        "f",
        append("!"),
        Ret::Appended { offset: big + 1 },
    );
    done(&mut h, 1, "f", truncate(3), Ret::Size(3));
    read(&mut h, 2, "f", "aQ\0");
    assert_linearizable(&h);

    // A read that sees the huge content (it cannot hold it) is flagged, and the
    // explanation shows the content shortened.
    let mut h = History::new();
    done(&mut h, 1, "f", put("ab"), Ret::Done);
    done(&mut h, 1, "f", truncate(big), Ret::Size(big));
    read(&mut h, 2, "f", "ab");
    let why = assert_violation(&h, "f");
    assert!(why.contains(&format!("({big} bytes)")), "{why}");

    // A write ending past 2^64 - 1 bytes never succeeds; of unknown outcome, it is fine.
    let mut h = History::new();
    done(&mut h, 1, "f", put("ab"), Ret::Done);
    done(&mut h, 1, "f", write_at(u64::MAX, "z"), Ret::Done);
    assert_violation(&h, "f");
    let mut h = History::new();
    done(&mut h, 1, "f", put("ab"), Ret::Done);
    let w = h.invoke(1, "f", write_at(u64::MAX, "z"));
    h.unknown(w).expect("unknown");
    done(&mut h, 1, "f", truncate(u64::MAX), Ret::Size(u64::MAX));
    let a = h.invoke(1, "f", append("!"));
    h.unknown(a).expect("unknown");
    read(&mut h, 2, "f", "ab");
    assert_violation(&h, "f");
}

// ---------------------------------------------------------------------------
// The budget.
// ---------------------------------------------------------------------------

/// Many concurrent unknown appends and a read that no order explains: the search must try
/// a great many orders before giving up.
fn hard_history() -> History {
    let mut h = History::new();
    // A put that may come anywhere defeats the read-prefix pruning.
    let mut ids = vec![h.invoke(100, "f", put("z"))];
    ids.extend((0..14).map(|i| h.invoke(i, "f", Op::Append(vec![b'a' + i as u8]))));
    for id in ids {
        h.unknown(id).expect("unknown");
    }
    read(&mut h, 99, "f", "#");
    h
}

#[test]
fn search_is_bounded_and_says_inconclusive() {
    let h = hard_history();
    let options = CheckOptions {
        max_steps_per_file: 1000,
    };
    assert_eq!(
        check_with(&h, &options),
        Verdict::Inconclusive {
            file: "f".to_owned(),
            steps: 1000
        }
    );
    // A violation on another file still wins over an inconclusive one.
    let mut h = hard_history();
    done(&mut h, 1, "g", Op::Create, Ret::Done);
    done(&mut h, 1, "g", Op::Create, Ret::Done);
    assert!(matches!(
        check_with(&h, &options),
        Verdict::NotLinearizable { file, .. } if file == "g"
    ));
}

#[test]
fn memoization_keeps_identical_unknown_appends_tractable() {
    // Twelve concurrent appends of the same byte, of unknown outcome, then a read that
    // shows seven of them: 12!/5! orders to try without memoization of (set, state), a few
    // thousand configurations with it.
    let mut h = History::new();
    let ids: Vec<OpId> = (0..12).map(|i| h.invoke(i, "f", append("a"))).collect();
    for id in ids {
        h.unknown(id).expect("unknown");
    }
    read(&mut h, 99, "f", "aaaaaaa");
    let options = CheckOptions {
        max_steps_per_file: 100_000,
    };
    assert_eq!(check_with(&h, &options), Verdict::Linearizable);
}

// ---------------------------------------------------------------------------
// Recording.
// ---------------------------------------------------------------------------

#[test]
fn recording_errors_are_reported() {
    let mut h = History::new();
    let r = h.invoke(1, "f", Op::Read);
    assert_eq!(
        h.ok(OpId(7), Ret::Done),
        Err(HistoryError::NoSuchOp(OpId(7)))
    );
    assert!(matches!(
        h.ok(r, Ret::Done),
        Err(HistoryError::WrongResult { op: "read", .. })
    ));
    assert!(matches!(
        h.ok(r, Ret::Appended { offset: 0 }),
        Err(HistoryError::WrongResult { .. })
    ));
    assert!(matches!(
        h.ok(r, Ret::Size(1)),
        Err(HistoryError::WrongResult { .. })
    ));
    ok(&mut h, r, value("x"));
    assert_eq!(h.unknown(r), Err(HistoryError::AlreadyCompleted(r)));
    for op in [write_at(0, "x"), truncate(1)] {
        let w = h.invoke(1, "f", op);
        assert!(matches!(
            h.ok(w, Ret::Appended { offset: 0 }),
            Err(HistoryError::WrongResult { .. })
        ));
        assert!(matches!(
            h.ok(w, value("x")),
            Err(HistoryError::WrongResult { .. })
        ));
        ok(&mut h, w, Ret::Size(1));
    }

    let mut h = History::new();
    let w = h.invoke_at(1, "f", put("x"), 100);
    assert_eq!(
        h.complete_at(w, Outcome::Ok(Ret::Done), 99),
        Err(HistoryError::CompletedBeforeInvoked {
            id: w,
            invoked_at: 100,
            at: 99
        })
    );
    assert_eq!(h.get(w).map(|e| &e.completion), Some(&Completion::Pending));
    h.complete_at(w, Outcome::Ok(Ret::Done), 100)
        .expect("same instant");
    assert_eq!(h.len(), 1);
    assert!(!h.is_empty());
}

#[test]
fn explicit_times_may_be_recorded_out_of_order() {
    // Two threads' events, recorded late and interleaved arbitrarily.
    let mut h = History::new();
    let r = h.invoke_at(2, "f", Op::Read, 50);
    let w = h.invoke_at(1, "f", put("x"), 10);
    h.complete_at(r, Outcome::Ok(value("x")), 60)
        .expect("complete");
    h.complete_at(w, Outcome::Ok(Ret::Done), 20)
        .expect("complete");
    let late = h.invoke_at(3, "f", Op::Read, 70);
    h.complete_at(late, Outcome::Failed(ErrorKind::NotFound), 80)
        .expect("complete");
    // The late NotFound contradicts the completed put.
    assert_violation(&h, "f");

    // Touching intervals (a response and an invocation at the same instant) are
    // concurrent.
    let mut h = History::new();
    let w = h.invoke_at(1, "f", put("x"), 10);
    h.complete_at(w, Outcome::Ok(Ret::Done), 20)
        .expect("complete");
    let r = h.invoke_at(2, "f", Op::Read, 5);
    h.complete_at(r, Outcome::Failed(ErrorKind::NotFound), 10)
        .expect("complete");
    assert_linearizable(&h);
}

#[test]
fn files_lists_every_file_once() {
    let mut h = History::new();
    h.set_initial("z", Vec::new());
    h.invoke(1, "b", Op::Read);
    h.invoke(1, "a", Op::Read);
    h.invoke(1, "b", Op::Read);
    assert_eq!(h.files(), ["a", "b", "z"]);
}

#[test]
fn shared_history_records_from_many_threads() {
    let shared = SharedHistory::new();
    shared.set_initial("f", Vec::new());
    std::thread::scope(|s| {
        for p in 0..4u64 {
            let shared = shared.clone();
            s.spawn(move || {
                for i in 0..25u8 {
                    let id = shared.invoke(p, "f", Op::Append(vec![i]));
                    shared.ok(id, Ret::Done).expect("complete");
                }
            });
        }
    });
    assert_eq!(shared.snapshot().len(), 100);
    assert_eq!(shared.check(), Verdict::Linearizable);
    // A read that lost everything.
    let r = shared.invoke(9, "f", Op::Read);
    shared.ok(r, value("")).expect("complete");
    assert!(!shared.check().is_linearizable());
}

#[test]
fn history_round_trips_through_json() {
    let mut h = History::new();
    h.set_initial("f", b"a".to_vec());
    done(&mut h, 1, "f", append("b"), Ret::Appended { offset: 1 });
    let u = h.invoke(2, "f", Op::Delete);
    h.unknown(u).expect("unknown");
    failed(&mut h, 3, "g", Op::Read, ErrorKind::NotFound);
    h.invoke(4, "g", Op::Create);
    done(&mut h, 1, "f", write_at(3, "c"), Ret::Size(4));
    done(&mut h, 1, "f", truncate(2), Ret::Done);
    let json = serde_json::to_string(&h).expect("serialize");
    let back: History = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back.entries(), h.entries());
    assert_eq!(back.initial("f"), Some(&b"a"[..]));
    // The clock continues after the loaded events.
    let mut back = back;
    let next = back.invoke(5, "g", Op::Read);
    let last = h.entries().iter().map(|e| e.invoked_at).max().unwrap_or(0);
    assert!(back.get(next).is_some_and(|e| e.invoked_at > last));

    // Deserializing validates like recording does.
    let bad = json.replacen("\"Appended\":{\"offset\":1}", "\"Value\":[1]", 1);
    assert_ne!(bad, json);
    let err = serde_json::from_str::<History>(&bad).expect_err("invalid result");
    assert!(err.to_string().contains("cannot return"), "{err}");
}
