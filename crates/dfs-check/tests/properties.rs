//! Property tests: histories produced by a linearizable simulation of the file store are
//! accepted, and the same histories with one impossible result are rejected.
//!
//! The simulation has its own, naive implementation of the dfs model (a map of file name
//! to `Option<Vec<u8>>`), independent of the checker's.

use std::collections::BTreeMap;
use std::time::Instant;

use dfs_check::{Completion, ErrorKind, History, Op, Outcome, Ret, Verdict, check};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const FILES: [&str; 3] = ["a", "b", "dir/c"];

/// The naive model: applies `op` to `files` and returns what dfs would answer.
fn apply(files: &mut BTreeMap<String, Vec<u8>>, file: &str, op: &Op) -> Outcome {
    let present = files.contains_key(file);
    match op {
        Op::Create if present => Outcome::Failed(ErrorKind::AlreadyExists),
        Op::Create => {
            files.insert(file.to_owned(), Vec::new());
            Outcome::Ok(Ret::Done)
        }
        Op::Append(data) => {
            let content = files.entry(file.to_owned()).or_default();
            let offset = content.len() as u64;
            content.extend_from_slice(data);
            Outcome::Ok(Ret::Appended { offset })
        }
        Op::Put(data) => {
            files.insert(file.to_owned(), data.clone());
            Outcome::Ok(Ret::Done)
        }
        Op::WriteAt { offset, data } => match files.get_mut(file) {
            Some(content) => {
                let (start, end) = (*offset as usize, *offset as usize + data.len());
                if content.len() < end {
                    content.resize(end, 0);
                }
                content[start..end].copy_from_slice(data);
                Outcome::Ok(Ret::Size(content.len() as u64))
            }
            None => Outcome::Failed(ErrorKind::NotFound),
        },
        Op::Truncate { size } => match files.get_mut(file) {
            Some(content) => {
                content.resize(*size as usize, 0);
                Outcome::Ok(Ret::Size(*size))
            }
            None => Outcome::Failed(ErrorKind::NotFound),
        },
        Op::Read => match files.get(file) {
            Some(content) => Outcome::Ok(Ret::Value(content.clone())),
            None => Outcome::Failed(ErrorKind::NotFound),
        },
        Op::Delete => match files.remove(file) {
            Some(_) => Outcome::Ok(Ret::Done),
            None => Outcome::Failed(ErrorKind::NotFound),
        },
    }
}

/// Data written by the simulations: bytes from `a..=e` only, so `#` is never written.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(b'a'..=b'e', 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Create),
        4 => data().prop_map(Op::Append),
        1 => data().prop_map(Op::Put),
        2 => (0..6u64, data()).prop_map(|(offset, data)| Op::WriteAt { offset, data }),
        1 => (0..6u64).prop_map(|size| Op::Truncate { size }),
        4 => Just(Op::Read),
        1 => Just(Op::Delete),
    ]
}

/// What becomes of a simulated operation.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Answered; an append sometimes without its offset, a write at an offset or a
    /// truncation sometimes without the size it left.
    Answered { with_offset: bool },
    /// Took effect at its linearization point, but the client never heard back.
    UnknownApplied,
    /// Never took effect; the client never heard back.
    UnknownLost,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        18 => any::<bool>().prop_map(|with_offset| Fate::Answered { with_offset }),
        1 => Just(Fate::UnknownApplied),
        1 => Just(Fate::UnknownLost),
    ]
}

/// At most this many operations of unknown outcome per history: each may float to any
/// later point, which is what makes the search exponential.
const UNKNOWN_MAX: usize = 3;

fn cap_unknowns(fates: &mut [Fate]) {
    let mut unknown = 0;
    for f in fates {
        if !matches!(f, Fate::Answered { .. }) {
            unknown += 1;
            if unknown > UNKNOWN_MAX {
                *f = Fate::Answered { with_offset: true };
            }
        }
    }
}

/// The result recorded for an answered operation.
fn observed(outcome: Outcome, with_offset: bool) -> Outcome {
    match outcome {
        Outcome::Ok(Ret::Appended { .. } | Ret::Size(_)) if !with_offset => Outcome::Ok(Ret::Done),
        other => other,
    }
}

/// One simulated operation: who, where, what, its interval and when it takes effect.
#[derive(Debug, Clone)]
struct Sim {
    process: u64,
    file: &'static str,
    op: Op,
    invoke: u64,
    respond: u64,
    /// The linearization point, inside `[invoke, respond]` (for an unknown-applied
    /// operation: any time after `invoke`).
    effect: u64,
    fate: Fate,
}

fn sim() -> impl Strategy<Value = Sim> {
    (
        0..5u64,
        0..FILES.len(),
        op(),
        0..1000u64,
        0..60u64,
        0..=100u32,
        0..3000u64,
        fate(),
    )
        .prop_map(|(process, file, op, invoke, duration, frac, late, fate)| {
            let respond = invoke + duration;
            let effect = match fate {
                Fate::UnknownApplied => invoke + late,
                _ => invoke + duration * u64::from(frac) / 100,
            };
            Sim {
                process,
                file: FILES[file],
                op,
                invoke,
                respond,
                effect,
                fate,
            }
        })
}

/// Runs the operations at their linearization points and records what each client saw,
/// with explicit times.
fn simulate(mut sims: Vec<Sim>) -> History {
    let mut fates: Vec<Fate> = sims.iter().map(|s| s.fate).collect();
    cap_unknowns(&mut fates);
    for (s, f) in sims.iter_mut().zip(fates) {
        if matches!(s.fate, Fate::UnknownApplied) && !matches!(f, Fate::UnknownApplied) {
            s.effect = s.effect.min(s.respond);
        }
        s.fate = f;
    }
    let mut order: Vec<usize> = (0..sims.len()).collect();
    order.sort_by_key(|&i| (sims[i].effect, i));
    let mut files = BTreeMap::new();
    let mut outcomes = vec![None; sims.len()];
    for i in order {
        let s = &sims[i];
        if !matches!(s.fate, Fate::UnknownLost) {
            outcomes[i] = Some(apply(&mut files, s.file, &s.op));
        }
    }
    let mut h = History::new();
    for (s, outcome) in sims.iter().zip(outcomes) {
        let id = h.invoke_at(s.process, s.file, s.op.clone(), s.invoke);
        let recorded = match (s.fate, outcome) {
            (Fate::Answered { with_offset }, Some(outcome)) => {
                h.complete_at(id, observed(outcome, with_offset), s.respond)
            }
            _ => h.unknown(id),
        };
        recorded.expect("the simulation records well-formed events");
    }
    h
}

/// Runs the operations one after the other and records them with the logical clock.
fn sequential(ops: Vec<(u64, usize, Op, Fate)>) -> History {
    let mut fates: Vec<Fate> = ops.iter().map(|o| o.3).collect();
    cap_unknowns(&mut fates);
    let mut files = BTreeMap::new();
    let mut h = History::new();
    for ((process, file, op, _), fate) in ops.into_iter().zip(fates) {
        let file = FILES[file];
        let id = h.invoke(process, file, op.clone());
        let recorded = match fate {
            Fate::Answered { with_offset } => {
                h.complete(id, observed(apply(&mut files, file, &op), with_offset))
            }
            Fate::UnknownApplied => {
                apply(&mut files, file, &op);
                h.unknown(id)
            }
            Fate::UnknownLost => h.unknown(id),
        };
        recorded.expect("the simulation records well-formed events");
    }
    h
}

/// The index of the `pick`-th (wrapping) operation that succeeded with a result `kind`
/// accepts; `None` if there is none.
fn pick_acked(h: &History, pick: usize, kind: impl Fn(&Ret) -> bool) -> Option<usize> {
    let acked: Vec<usize> = h
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(&e.completion, Completion::Ok { ret, .. } if kind(ret)))
        .map(|(i, _)| i)
        .collect();
    acked.get(pick % acked.len().max(1)).copied()
}

/// Replaces the result of the `pick`-th successful read (if any) with a value no write
/// ever produced.
fn corrupt_a_read(h: &History, pick: usize) -> Option<History> {
    let victim = pick_acked(h, pick, |r| matches!(r, Ret::Value(_)))?;
    rebuild(h, |i, completion| match completion {
        Completion::Ok {
            ret: Ret::Value(v),
            at,
        } if i == victim => {
            let mut impossible = b"#".to_vec();
            impossible.extend_from_slice(v);
            (Outcome::Ok(Ret::Value(impossible)), Some(*at))
        }
        other => as_outcome(other),
    })
}

/// Replaces the offset of the `pick`-th acknowledged append (if any) with one past every
/// byte ever written.
fn corrupt_an_offset(h: &History, pick: usize) -> Option<History> {
    let victim = pick_acked(h, pick, |r| matches!(r, Ret::Appended { .. }))?;
    rebuild(h, |i, completion| match completion {
        Completion::Ok { at, .. } if i == victim => {
            (Outcome::Ok(Ret::Appended { offset: 1 << 40 }), Some(*at))
        }
        other => as_outcome(other),
    })
}

/// Replaces the size of the `pick`-th acknowledged `write_at` or `truncate` (if any) with
/// one past every byte ever written.
fn corrupt_a_size(h: &History, pick: usize) -> Option<History> {
    let victim = pick_acked(h, pick, |r| matches!(r, Ret::Size(_)))?;
    rebuild(h, |i, completion| match completion {
        Completion::Ok { at, .. } if i == victim => (Outcome::Ok(Ret::Size(1 << 40)), Some(*at)),
        other => as_outcome(other),
    })
}

fn as_outcome(completion: &Completion) -> (Outcome, Option<u64>) {
    match completion {
        Completion::Ok { ret, at } => (Outcome::Ok(ret.clone()), Some(*at)),
        Completion::Failed { error, at } => (Outcome::Failed(*error), Some(*at)),
        Completion::Pending | Completion::Unknown => (Outcome::Unknown, None),
    }
}

/// A copy of `h` with each completion replaced by `f`'s.
fn rebuild(
    h: &History,
    f: impl Fn(usize, &Completion) -> (Outcome, Option<u64>),
) -> Option<History> {
    let mut out = History::new();
    for (i, e) in h.entries().iter().enumerate() {
        let id = out.invoke_at(e.process, e.file.clone(), e.op.clone(), e.invoked_at);
        let (outcome, at) = f(i, &e.completion);
        out.complete_at(id, outcome, at.unwrap_or(e.invoked_at))
            .ok()?;
    }
    Some(out)
}

/// Decides linearizability by brute force: tries every order of the operations (all files
/// together) that respects real time, leaving out any subset of those of unknown outcome.
fn brute_force(h: &History) -> bool {
    fn fits(observed: &Completion, got: &Outcome) -> bool {
        match (observed, got) {
            (Completion::Pending | Completion::Unknown, _) => true,
            (
                Completion::Ok { ret: Ret::Done, .. },
                Outcome::Ok(Ret::Appended { .. } | Ret::Size(_)),
            ) => true,
            (Completion::Ok { ret, .. }, Outcome::Ok(got)) => ret == got,
            (Completion::Failed { error, .. }, Outcome::Failed(got)) => error == got,
            _ => false,
        }
    }
    fn go(h: &History, done: &mut Vec<bool>, files: &BTreeMap<String, Vec<u8>>) -> bool {
        let entries = h.entries();
        if (0..entries.len()).all(|i| done[i] || entries[i].completion.at().is_none()) {
            return true;
        }
        for i in 0..entries.len() {
            if done[i] {
                continue;
            }
            let e = &entries[i];
            // Every operation that responded before `i` was invoked must come first.
            let blocked = (0..entries.len()).any(|j| {
                !done[j]
                    && entries[j]
                        .completion
                        .at()
                        .is_some_and(|at| at < e.invoked_at)
            });
            if blocked {
                continue;
            }
            let mut next = files.clone();
            let got = apply(&mut next, &e.file, &e.op);
            if !fits(&e.completion, &got) {
                continue;
            }
            done[i] = true;
            let found = go(h, done, &next);
            done[i] = false;
            if found {
                return true;
            }
        }
        false
    }
    go(h, &mut vec![false; h.len()], &BTreeMap::new())
}

/// A small history, mostly linearizable, with some results replaced by plausible wrong
/// ones.
fn small_history() -> impl Strategy<Value = History> {
    let sim = (
        0..3u64,
        0..2usize,
        op(),
        0..20u64,
        0..12u64,
        0..=100u32,
        0..30u64,
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(|(process, file, op, invoke, duration, frac, late, fate)| {
            let respond = invoke + duration;
            let (fate, effect) = match fate {
                0 => (
                    Fate::Answered {
                        with_offset: frac % 2 == 0,
                    },
                    invoke + duration * u64::from(frac) / 100,
                ),
                1 => (Fate::UnknownApplied, invoke + late),
                _ => (Fate::UnknownLost, invoke),
            };
            Sim {
                process,
                file: FILES[file],
                op,
                invoke,
                respond,
                effect,
                fate,
            }
        });
    let mutation = (0..4u8, data(), 0..6u64);
    (
        prop::collection::vec(sim, 1..7),
        prop::collection::vec(mutation, 7),
    )
        .prop_map(|(sims, mutations)| {
            let h = simulate(sims);
            rebuild(&h, |i, completion| {
                let (kind, bytes, n) = &mutations[i];
                let (outcome, at) = as_outcome(completion);
                let Some(at) = at else {
                    return (outcome, None);
                };
                if *kind != 0 {
                    return (outcome, Some(at));
                }
                let wrong = match (&h.entries()[i].op, outcome) {
                    (Op::Read, Outcome::Ok(_)) if *n == 0 => Outcome::Failed(ErrorKind::NotFound),
                    (Op::Read, _) => Outcome::Ok(Ret::Value(bytes.clone())),
                    (Op::Append(_), _) => Outcome::Ok(Ret::Appended { offset: *n }),
                    (Op::WriteAt { .. } | Op::Truncate { .. }, Outcome::Ok(_)) if *n == 0 => {
                        Outcome::Failed(ErrorKind::NotFound)
                    }
                    (Op::WriteAt { .. } | Op::Truncate { .. }, _) => Outcome::Ok(Ret::Size(*n)),
                    (Op::Create, Outcome::Ok(_)) => Outcome::Failed(ErrorKind::AlreadyExists),
                    (Op::Delete, Outcome::Ok(_)) => Outcome::Failed(ErrorKind::NotFound),
                    (_, Outcome::Failed(_)) => Outcome::Ok(Ret::Done),
                    (_, other) => other,
                };
                (wrong, Some(at))
            })
            .unwrap_or_default()
        })
}

/// `cases` cases; failures are saved next to this file (the default looks for a `lib.rs`,
/// which an integration test does not have).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn small_histories_agree_with_brute_force(h in small_history()) {
        let verdict = check(&h);
        prop_assert!(!matches!(verdict, Verdict::Inconclusive { .. }), "{}", verdict);
        prop_assert_eq!(verdict.is_linearizable(), brute_force(&h), "{:#?}\n{}", h.entries(), verdict);
    }
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn sequential_histories_of_the_model_are_linearizable(
        ops in prop::collection::vec((0..5u64, 0..FILES.len(), op(), fate()), 0..150),
    ) {
        let h = sequential(ops);
        let verdict = check(&h);
        prop_assert_eq!(&verdict, &Verdict::Linearizable, "{}", verdict);
    }

    #[test]
    fn concurrent_histories_of_a_linearizable_store_are_linearizable(
        sims in prop::collection::vec(sim(), 0..80),
    ) {
        let h = simulate(sims);
        let verdict = check(&h);
        prop_assert_eq!(&verdict, &Verdict::Linearizable, "{}", verdict);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected(
        sims in prop::collection::vec(sim(), 1..80),
        pick in any::<usize>(),
    ) {
        let h = simulate(sims);
        if let Some(bad) = corrupt_a_read(&h, pick) {
            let verdict = check(&bad);
            prop_assert!(
                matches!(verdict, Verdict::NotLinearizable { .. }),
                "{}", verdict
            );
        }
    }

    #[test]
    fn an_append_offset_past_every_byte_written_is_rejected(
        sims in prop::collection::vec(sim(), 1..80),
        pick in any::<usize>(),
    ) {
        let h = simulate(sims);
        if let Some(bad) = corrupt_an_offset(&h, pick) {
            let verdict = check(&bad);
            prop_assert!(
                matches!(verdict, Verdict::NotLinearizable { .. }),
                "{}", verdict
            );
        }
    }
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn a_write_at_or_truncate_size_past_every_byte_written_is_rejected(
        sims in prop::collection::vec(sim(), 1..80),
        pick in any::<usize>(),
    ) {
        let h = simulate(sims);
        if let Some(bad) = corrupt_a_size(&h, pick) {
            let verdict = check(&bad);
            prop_assert!(
                matches!(verdict, Verdict::NotLinearizable { .. }),
                "{}", verdict
            );
        }
    }
}

/// splitmix64, for a deterministic workload without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Five clients, each running 100 operations one at a time over three files, with a few
/// timeouts; the store is linearizable. With `rewrites`, some appends are writes at an
/// offset and some reads truncations.
fn five_clients(rewrites: bool) -> History {
    let mut rng = Rng(42);
    let mut sims = Vec::new();
    let mut unknown = 0;
    for process in 0..5u64 {
        let mut now = rng.below(10);
        for n in 0..100u64 {
            let file = FILES[rng.below(3) as usize];
            let bytes = format!("{process}.{n};").into_bytes();
            let op = match rng.below(12) {
                0 => Op::Create,
                1 => Op::Delete,
                2 => Op::Put(bytes),
                3 | 4 if rewrites => Op::WriteAt {
                    offset: rng.below(40),
                    data: bytes,
                },
                3..=6 => Op::Append(bytes),
                7 if rewrites => Op::Truncate {
                    size: rng.below(30),
                },
                _ => Op::Read,
            };
            let duration = 1 + rng.below(40);
            let (fate, effect) = if rng.below(100) == 0 && unknown < 5 {
                unknown += 1;
                if rng.below(2) == 0 {
                    (Fate::UnknownApplied, now + rng.below(500))
                } else {
                    (Fate::UnknownLost, now)
                }
            } else {
                let with_offset = rng.below(2) == 0;
                (
                    Fate::Answered { with_offset },
                    now + rng.below(duration + 1),
                )
            };
            sims.push(Sim {
                process,
                file,
                op,
                invoke: now,
                respond: now + duration,
                effect,
                fate,
            });
            now += duration + 1 + rng.below(5);
        }
    }
    simulate(sims)
}

/// [`five_clients`] is checked quickly (not timed here), and one corrupted read among its
/// operations is found.
fn check_five_clients(rewrites: bool) {
    let h = five_clients(rewrites);
    assert_eq!(h.len(), 500);
    let started = Instant::now();
    let verdict = check(&h);
    eprintln!("checked 500 operations in {:?}", started.elapsed());
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");

    // And a single corrupted read among them is found.
    let bad = corrupt_a_read(&h, 123).expect("the workload has reads");
    let started = Instant::now();
    let verdict = check(&bad);
    eprintln!("rejected the corrupted history in {:?}", started.elapsed());
    assert!(
        matches!(verdict, Verdict::NotLinearizable { .. }),
        "{verdict}"
    );
}

#[test]
fn five_clients_five_hundred_ops_on_three_files() {
    check_five_clients(false);
}

#[test]
fn five_clients_five_hundred_ops_with_writes_at_offsets_and_truncations() {
    check_five_clients(true);
}
