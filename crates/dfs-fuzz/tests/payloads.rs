//! The peer payloads: the cluster map's consensus messages (`RaftRpc`, `RaftReply`, inside
//! `PeerMessage.payload`) and the data layer's (`DataRpc`, `DataReply`, inside
//! `RaftRpc::Data`), fed the corpus and mutations of it.
//!
//! `DFS_FUZZ_ITERS` and `DFS_FUZZ_SEED` set the run; see `FUZZING.md`.

use std::alloc::System;
use std::time::{Duration, Instant};

use cap::Cap;
use dfs_fuzz::{
    CLUSTER_PAYLOADS, Campaign, DATA_PAYLOADS, HUGE_VARINTS, Mutator, for_each_nesting,
    panic_message, samples, starting_inputs, targets,
};

/// Beyond this the process aborts (see `frames.rs`).
const HEAP_LIMIT: usize = 2 << 30;

/// No decode may take the heap's peak over this.
const HEAP_PEAK_MAX: usize = 256 << 20;

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, HEAP_LIMIT);

fn heap_peak() -> usize {
    HEAP.max_allocated()
}

/// Inputs per target by default: the suite stays within seconds in a debug build.
const ITERS: usize = 100_000;

/// A mutation of a payload: bytes mostly, sometimes a repeated run (nesting), sometimes
/// noise.
fn mutate_payload(m: &mut Mutator, base: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    match m.below(10) {
        0..=7 => m.bytes(base, seeds),
        8 => {
            // A run of the input repeated many times over: nested or repeated structures.
            let mut out = base.to_vec();
            if !out.is_empty() {
                let from = m.below(out.len());
                let n = 1 + m.below(8.min(out.len() - from));
                let run = out[from..from + n].to_vec();
                let times = 1 + m.below(4096);
                let at = from + n;
                let repeated: Vec<u8> = run.iter().copied().cycle().take(n * times).collect();
                out.splice(at..at, repeated);
                out.truncate(dfs_fuzz::INPUT_BYTES_MAX);
            }
            out
        }
        _ => m.random_bytes(256),
    }
}

fn fuzz_payloads(target: &str, check: fn(&[u8])) {
    let campaign = Campaign::new(target, ITERS).with_heap_peak(heap_peak, HEAP_PEAK_MAX);
    let seeds = starting_inputs(target);
    assert!(seeds.len() > 10, "{target}: only {} seeds", seeds.len());
    let runs = campaign.fuzz(&seeds, mutate_payload, check);
    eprintln!("{target}: {runs} inputs, seed {:#x}", campaign.seed());
}

#[test]
fn cluster_payloads_survive_fuzzing() {
    fuzz_payloads(CLUSTER_PAYLOADS, |p| {
        let _ = targets::cluster_payloads(p);
    });
}

#[test]
fn data_payloads_survive_fuzzing() {
    fuzz_payloads(DATA_PAYLOADS, |p| {
        let _ = targets::data_payloads(p);
    });
}

/// Every sample payload with a huge varint over, or inserted at, each of its first bytes:
/// each decode fails (or succeeds) at once, allocating nothing to speak of.
#[test]
fn huge_declared_lengths_in_peer_payloads_fail_fast_without_allocating() {
    let campaign = Campaign::new("huge_varints", 1).with_heap_peak(heap_peak, HEAP_PEAK_MAX);
    let mut n = 0;
    let payloads = samples::cluster_payloads()
        .into_iter()
        .chain(samples::data_payloads());
    for (name, body) in payloads {
        for at in 0..body.len().min(96) {
            for v in HUGE_VARINTS {
                for insert in [false, true] {
                    let mut input = body.clone();
                    let end = if insert {
                        at
                    } else {
                        (at + v.len()).min(body.len())
                    };
                    input.splice(at..end, v.iter().copied());
                    let started = Instant::now();
                    campaign.check(n, &input, |p| {
                        let _ = targets::cluster_payloads(p);
                        let _ = targets::data_payloads(p);
                    });
                    let took = started.elapsed();
                    assert!(took < Duration::from_secs(1), "{name} at {at}: {took:?}");
                    n += 1;
                }
            }
        }
    }
    assert!(n > 1000, "only {n} inputs");
}

/// Every kind of consensus message has a sample (every map change and answer among them)
/// and decodes.
#[test]
fn every_peer_payload_kind_has_a_sample_that_decodes() {
    let commands: Vec<_> = samples::map_commands()
        .iter()
        .map(samples::map_command_kind)
        .collect();
    assert_eq!(commands.len(), 18, "a new map change needs a sample");
    let responses: Vec<_> = samples::map_responses()
        .iter()
        .map(samples::map_response_kind)
        .collect();
    assert_eq!(responses.len(), 12, "a new map answer needs a sample");
    let requests: Vec<String> = samples::raft_rpcs()
        .iter()
        .map(samples::raft_rpc_kind)
        .collect();
    let commands = commands.iter().map(|c| format!("propose-{c}"));
    for kind in [
        "heartbeat",
        "append-entries",
        "vote",
        "install-snapshot",
        "read-index",
        "data",
        "standing",
        "readmit",
    ]
    .map(String::from)
    .into_iter()
    .chain(commands)
    {
        assert!(requests.contains(&kind), "no sample request {kind}");
    }
    let answers: Vec<String> = samples::raft_replies()
        .iter()
        .map(samples::raft_reply_kind)
        .collect();
    let responses = responses.iter().map(|r| format!("propose-{r}"));
    for kind in [
        "append-entries",
        "vote",
        "install-snapshot",
        "refused",
        "propose-error",
        "read-index",
        "data",
        "standing",
        "readmit",
    ]
    .map(String::from)
    .into_iter()
    .chain(responses)
    {
        assert!(answers.contains(&kind), "no sample answer {kind}");
    }
    for (name, payload) in samples::cluster_payloads() {
        let (request, answer) = targets::cluster_payloads(&payload);
        assert!(request || answer, "{name} does not decode");
    }
    for (name, payload) in samples::data_payloads() {
        let (request, answer) = targets::data_payloads(&payload);
        assert!(request || answer, "{name} does not decode");
    }
    assert!(
        samples::cluster_payloads()
            .iter()
            .any(|(n, _)| n == "request-propose-tagged")
    );
}

/// The stack the nesting sweeps decode on: an eighth of a tokio worker's, so a decoder
/// that recurses once per level of its input overflows it (and aborts the test) well
/// within the levels offered.
const SMALL_STACK: usize = 256 * 1024;

/// Copies of a run in a nesting sweep's input.
const NESTING_LEVELS: usize = 4096;

/// Every run of up to 12 bytes of every sample repeated thousands of times: where the run
/// is one level of a recursive message (a `Tagged` map change holds a map change), the
/// decoder meets thousands of levels, and must refuse them rather than recurse through
/// them (a stack overflow aborts the whole node).
#[test]
fn nested_runs_in_peer_payloads_do_not_overflow_the_stack() {
    let payloads: Vec<(String, Vec<u8>)> = samples::cluster_payloads()
        .into_iter()
        .chain(samples::data_payloads())
        .collect();
    let n = std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let campaign = Campaign::new("nesting", 1).with_heap_peak(heap_peak, HEAP_PEAK_MAX);
            let mut n = 0;
            for (_, payload) in &payloads {
                let head = &payload[..payload.len().min(160)];
                let tail = &payload[head.len()..];
                for_each_nesting(head, 12, NESTING_LEVELS, |input| {
                    let mut input = input.to_vec();
                    input.extend_from_slice(tail);
                    campaign.check(n, &input, |p| {
                        let _ = targets::cluster_payloads(p);
                        let _ = targets::data_payloads(p);
                    });
                    n += 1;
                });
            }
            n
        })
        .expect("spawns")
        .join()
        .unwrap_or_else(|p| panic!("{}", panic_message(&*p)));
    assert!(n > 1000, "only {n} inputs");
}
