//! Tests of the weight function, `place` and `PlacementTable`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::hash::{fmix64, fnv1a64, splitmix64};
use crate::{NodeId, Placement, PlacementError, PlacementTable, place, weight};

// ---------------------------------------------------------------------------
// The hash: pinned values. If one of these fails, the weight function changed
// and existing data would be looked for on the wrong nodes.
// ---------------------------------------------------------------------------

#[test]
fn hash_building_blocks_match_reference_vectors() {
    // Published FNV-1a 64 test vectors.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    // First output of the reference splitmix64 generator seeded with 0.
    assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    // fmix64 fixes zero.
    assert_eq!(fmix64(0), 0);
}

#[test]
fn weight_values_are_pinned() {
    // Values computed by an independent reimplementation of the documented
    // formula, not by this crate.
    let pinned: [(&str, NodeId, u64); 7] = [
        ("", 0, 0xc1d2_7cb0_f43c_3484),
        ("", 1, 0x68b7_bf5a_3819_139d),
        ("dir/file-0", 1, 0x887e_bb99_be37_2676),
        ("dir/file-0", 2, 0x1dd1_cef7_6cfd_0cf8),
        ("dir/file-0", 3, 0x5d2d_908d_d612_4cfd),
        ("photos/2024/cat.jpg", 42, 0xa533_bd81_7c50_c5c4),
        ("ünïcødé", u64::MAX, 0x41f5_df78_32df_9a8a),
    ];
    for (name, node, expected) in pinned {
        assert_eq!(weight(name, node), expected, "weight({name:?}, {node})");
    }
}

#[test]
fn placements_are_pinned() {
    let members = [1, 2, 3, 4, 5];
    let cases: [(&str, [NodeId; 5]); 3] = [
        ("dir/file-0", [4, 1, 3, 5, 2]),
        ("dir/file-1", [3, 4, 2, 5, 1]),
        ("photos/2024/cat.jpg", [3, 2, 1, 5, 4]),
    ];
    for (name, expected) in cases {
        let got = place(name, &members, 5).expect("5 members for 5 replicas");
        assert_eq!(got, expected, "place({name:?})");
        let primary = place(name, &members, 1).expect("5 members for 1 replica");
        assert_eq!(primary, expected[..1], "primary of {name:?}");
    }
}

// ---------------------------------------------------------------------------
// place: errors and properties.
// ---------------------------------------------------------------------------

#[test]
fn place_errors() {
    assert_eq!(place("x", &[1, 2, 3], 0), Err(PlacementError::ZeroReplicas));
    assert_eq!(place("x", &[], 0), Err(PlacementError::ZeroReplicas));
    assert_eq!(
        place("x", &[], 1),
        Err(PlacementError::NotEnoughNodes {
            wanted: 1,
            available: 0
        })
    );
    // Duplicates do not count as extra nodes.
    assert_eq!(
        place("x", &[7, 7, 7, 8], 3),
        Err(PlacementError::NotEnoughNodes {
            wanted: 3,
            available: 2
        })
    );
    assert_eq!(place("x", &[7, 7, 7], 1), Ok(vec![7]));
}

#[test]
fn error_messages() {
    assert_eq!(
        PlacementError::ZeroReplicas.to_string(),
        "a placement needs at least one replica, but zero were requested"
    );
    assert_eq!(
        PlacementError::NotEnoughNodes {
            wanted: 3,
            available: 2
        }
        .to_string(),
        "cannot place 3 replicas on only 2 distinct nodes"
    );
    assert_eq!(
        PlacementError::AlreadyPlaced("a/b".into()).to_string(),
        "\"a/b\" is already placed"
    );
    assert_eq!(
        PlacementError::NotPlaced("a/b".into()).to_string(),
        "\"a/b\" is not placed"
    );
}

/// A set of 1..=9 distinct node ids, the same ids in a random order, and a
/// replica count in `1..=len`.
fn members_and_r() -> impl Strategy<Value = (Vec<NodeId>, Vec<NodeId>, usize)> {
    prop::collection::btree_set(any::<NodeId>(), 1..=9).prop_flat_map(|set| {
        let sorted: Vec<NodeId> = set.into_iter().collect();
        let len = sorted.len();
        (Just(sorted.clone()), Just(sorted).prop_shuffle(), 1..=len)
    })
}

proptest! {
    #[test]
    fn place_picks_r_distinct_members_deterministically(
        name in any::<String>(),
        (sorted, shuffled, r) in members_and_r(),
    ) {
        let got = place(&name, &shuffled, r).expect("r <= members");
        prop_assert_eq!(got.len(), r);
        let distinct: BTreeSet<NodeId> = got.iter().copied().collect();
        prop_assert_eq!(distinct.len(), r);
        prop_assert!(got.iter().all(|n| sorted.contains(n)));

        // Deterministic, independent of member order and of duplicates.
        prop_assert_eq!(&place(&name, &shuffled, r).expect("r <= members"), &got);
        prop_assert_eq!(&place(&name, &sorted, r).expect("r <= members"), &got);
        let doubled: Vec<NodeId> = shuffled.iter().chain(sorted.iter()).copied().collect();
        prop_assert_eq!(&place(&name, &doubled, r).expect("r <= members"), &got);

        // The chosen nodes are the heaviest, in descending weight order.
        let weights: Vec<u64> = got.iter().map(|&n| weight(&name, n)).collect();
        prop_assert!(weights.windows(2).all(|w| w[0] > w[1]));
        let lightest_chosen = weights[r - 1];
        for node in sorted.iter().filter(|n| !got.contains(n)) {
            prop_assert!(weight(&name, *node) < lightest_chosen);
        }

        // A prefix of a longer placement: asking for fewer replicas keeps the order.
        let all = place(&name, &sorted, sorted.len()).expect("r == members");
        prop_assert_eq!(&all[..r], &got[..]);
    }

    #[test]
    fn place_rejects_bad_replica_counts(
        name in any::<String>(),
        (sorted, shuffled, _r) in members_and_r(),
        extra in 1usize..5,
    ) {
        let wanted = sorted.len() + extra;
        prop_assert_eq!(
            place(&name, &shuffled, wanted),
            Err(PlacementError::NotEnoughNodes { wanted, available: sorted.len() })
        );
        prop_assert_eq!(place(&name, &shuffled, 0), Err(PlacementError::ZeroReplicas));
    }
}

// ---------------------------------------------------------------------------
// Balance and stability over many names.
// ---------------------------------------------------------------------------

const NAMES: usize = 100_000;

fn names() -> Vec<String> {
    (0..NAMES).map(|i| format!("dir/file-{i}")).collect()
}

fn nodes(n: NodeId) -> Vec<NodeId> {
    (1..=n).collect()
}

fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= expected * tolerance
}

#[test]
fn load_is_balanced() {
    let names = names();
    for n in [3u64, 5, 7] {
        let members = nodes(n);
        let mut primaries: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut slots: BTreeMap<NodeId, usize> = BTreeMap::new();
        for name in &names {
            let replicas = place(name, &members, 2).expect("n >= 2");
            *primaries.entry(replicas[0]).or_default() += 1;
            for node in replicas {
                *slots.entry(node).or_default() += 1;
            }
        }
        let expected_primaries = NAMES as f64 / n as f64;
        let expected_slots = 2.0 * NAMES as f64 / n as f64;
        for &node in &members {
            let p = primaries.get(&node).copied().unwrap_or(0);
            let s = slots.get(&node).copied().unwrap_or(0);
            assert!(
                within(p as f64, expected_primaries, 0.10),
                "N={n}: node {node} is primary for {p} names, expected ~{expected_primaries:.0}"
            );
            assert!(
                within(s as f64, expected_slots, 0.10),
                "N={n}: node {node} holds {s} replicas, expected ~{expected_slots:.0}"
            );
        }
        println!("N={n}: primaries {primaries:?}, r=2 replica slots {slots:?}");
    }
}

#[test]
fn adding_a_node_moves_about_one_over_n_plus_one() {
    let names = names();
    for n in [3u64, 5, 7] {
        let before = nodes(n);
        let after = nodes(n + 1);
        let new_node = n + 1;
        let mut primary_moves = 0usize;
        let mut set_changes = 0usize;
        for name in &names {
            let old = place(name, &before, 2).expect("n >= 2");
            let new = place(name, &after, 2).expect("n + 1 >= 2");
            if old[0] != new[0] {
                primary_moves += 1;
                assert_eq!(
                    new[0], new_node,
                    "{name:?}: primary moved between old nodes"
                );
            }
            let old_set: BTreeSet<NodeId> = old.iter().copied().collect();
            let new_set: BTreeSet<NodeId> = new.iter().copied().collect();
            if old_set != new_set {
                set_changes += 1;
                assert!(new_set.contains(&new_node), "{name:?}: {old:?} -> {new:?}");
                // Exactly one old replica made room for the new node.
                assert_eq!(old_set.intersection(&new_set).count(), 1, "{name:?}");
            }
        }
        let expected = NAMES as f64 / (n + 1) as f64;
        assert!(
            within(primary_moves as f64, expected, 0.20),
            "N={n}: {primary_moves} primaries moved, expected ~{expected:.0}"
        );
        // With r = 2 the new node enters the top two for ~2/(N+1) of the names.
        let expected_sets = 2.0 * expected;
        assert!(
            within(set_changes as f64, expected_sets, 0.20),
            "N={n}: {set_changes} replica sets changed, expected ~{expected_sets:.0}"
        );
        println!(
            "N={n} -> {}: {primary_moves} primaries moved (expected ~{expected:.0}), \
             {set_changes} r=2 replica sets changed (expected ~{expected_sets:.0})",
            n + 1
        );
    }
}

#[test]
fn removing_a_node_only_moves_its_names() {
    let names = names();
    let before = nodes(5);
    let after: Vec<NodeId> = before.iter().copied().filter(|&n| n != 3).collect();
    for name in names.iter().take(20_000) {
        let old = place(name, &before, 2).expect("5 >= 2");
        let new = place(name, &after, 2).expect("4 >= 2");
        if old.contains(&3) {
            // The survivors keep their relative order; the next node fills in.
            let survivors: Vec<NodeId> = old.iter().copied().filter(|&n| n != 3).collect();
            assert_eq!(new[..survivors.len()], survivors[..], "{name:?}");
        } else {
            assert_eq!(new, old, "{name:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Placement and PlacementTable.
// ---------------------------------------------------------------------------

fn placement(file_id: u64, replicas: &[NodeId]) -> Placement {
    Placement {
        file_id,
        replicas: replicas.to_vec(),
        epoch: file_id.wrapping_mul(10),
    }
}

#[test]
fn placement_accessors() {
    let p = placement(1, &[4, 2, 9]);
    assert_eq!(p.primary(), Some(4));
    assert!(p.holds(2));
    assert!(!p.holds(3));
    let empty = placement(2, &[]);
    assert_eq!(empty.primary(), None);
    assert!(!empty.holds(4));
}

#[test]
fn table_insert_get_remove() {
    let mut table = PlacementTable::new();
    assert!(table.is_empty());
    assert_eq!(table.len(), 0);
    assert_eq!(table.get("a"), None);

    table
        .insert("a".into(), placement(1, &[1, 2]))
        .expect("a is new");
    table
        .insert("b".into(), placement(2, &[2, 3]))
        .expect("b is new");
    assert_eq!(table.len(), 2);
    assert!(!table.is_empty());
    assert!(table.contains("a"));
    assert_eq!(table.get("a"), Some(&placement(1, &[1, 2])));

    assert_eq!(
        table.insert("a".into(), placement(3, &[3])),
        Err(PlacementError::AlreadyPlaced("a".into()))
    );
    // A refused insert leaves the old placement alone.
    assert_eq!(table.get("a"), Some(&placement(1, &[1, 2])));

    assert_eq!(table.remove("a"), Ok(placement(1, &[1, 2])));
    assert_eq!(
        table.remove("a"),
        Err(PlacementError::NotPlaced("a".into()))
    );
    assert!(!table.contains("a"));
    assert_eq!(table.len(), 1);
    assert_eq!(table.get("b"), Some(&placement(2, &[2, 3])));
}

fn sample_table() -> PlacementTable {
    let mut table = PlacementTable::new();
    let entries: [(&str, &[NodeId]); 5] = [
        ("photos/b.jpg", &[1, 2]),
        ("docs/x", &[2, 3]),
        ("photos/a.jpg", &[3, 1]),
        ("photos", &[1]),
        ("ünï/ç", &[u64::MAX, 0]),
    ];
    for (i, (name, replicas)) in entries.into_iter().enumerate() {
        table
            .insert(name.to_owned(), placement(i as u64, replicas))
            .expect("names are distinct");
    }
    table
}

#[test]
fn table_iter_and_names_on() {
    let table = sample_table();
    let names: Vec<&str> = table.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["docs/x", "photos", "photos/a.jpg", "photos/b.jpg", "ünï/ç"]
    );
    let on_1: Vec<&str> = table.names_on(1).collect();
    assert_eq!(on_1, ["photos", "photos/a.jpg", "photos/b.jpg"]);
    let on_3: Vec<&str> = table.names_on(3).collect();
    assert_eq!(on_3, ["docs/x", "photos/a.jpg"]);
    assert_eq!(table.names_on(42).count(), 0);
}

#[test]
fn table_page_examples() {
    let table = sample_table();
    let page = |prefix, after, limit| -> Vec<String> {
        table
            .page(prefix, after, limit)
            .into_iter()
            .map(|(n, _)| n.to_owned())
            .collect()
    };
    assert_eq!(page("photos/", None, 10), ["photos/a.jpg", "photos/b.jpg"]);
    assert_eq!(page("photos/", None, 1), ["photos/a.jpg"]);
    assert_eq!(page("photos/", Some("photos/a.jpg"), 10), ["photos/b.jpg"]);
    assert_eq!(
        page("photos/", Some("photos/b.jpg"), 10),
        Vec::<String>::new()
    );
    assert_eq!(
        page("photos", None, 10),
        ["photos", "photos/a.jpg", "photos/b.jpg"]
    );
    // start_after before the prefix: start at the prefix.
    assert_eq!(
        page("photos/", Some("a"), 10),
        ["photos/a.jpg", "photos/b.jpg"]
    );
    // start_after beyond every name with the prefix.
    assert_eq!(page("docs/", Some("z"), 10), Vec::<String>::new());
    assert_eq!(page("", None, 0), Vec::<String>::new());
    assert_eq!(page("", Some("photos/b.jpg"), 10), ["ünï/ç"]);
    assert_eq!(page("nope", None, 10), Vec::<String>::new());
}

#[test]
fn table_serde_round_trip() {
    let table = sample_table();

    let json = serde_json::to_string(&table).expect("serialise to JSON");
    let from_json: PlacementTable = serde_json::from_str(&json).expect("deserialise JSON");
    assert_eq!(from_json, table);

    let bytes = postcard::to_stdvec(&table).expect("serialise to postcard");
    let from_postcard: PlacementTable = postcard::from_bytes(&bytes).expect("deserialise postcard");
    assert_eq!(from_postcard, table);

    let empty = PlacementTable::new();
    let bytes = postcard::to_stdvec(&empty).expect("serialise empty table");
    let back: PlacementTable = postcard::from_bytes(&bytes).expect("deserialise empty table");
    assert_eq!(back, empty);
}

/// Names over a tiny alphabet so that prefixes, `start_after` and names
/// collide often.
fn short_name() -> impl Strategy<Value = String> {
    "[ab/é]{0,5}"
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, u64),
    Remove(String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (short_name(), any::<u64>()).prop_map(|(n, id)| Op::Insert(n, id)),
        short_name().prop_map(Op::Remove),
    ]
}

proptest! {
    #[test]
    fn table_page_matches_naive_filter(
        names in prop::collection::btree_set(short_name(), 0..40),
        prefix in "[ab/é]{0,3}",
        start_after in prop::option::of(short_name()),
        limit in 0usize..12,
    ) {
        let mut table = PlacementTable::new();
        let mut model: BTreeMap<String, Placement> = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let p = placement(i as u64, &[i as u64 % 3]);
            table.insert(name.clone(), p.clone()).expect("names are distinct");
            model.insert(name.clone(), p);
        }
        let expected: Vec<(&str, &Placement)> = model
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .filter(|(n, _)| start_after.as_deref().is_none_or(|after| n.as_str() > after))
            .take(limit)
            .map(|(n, p)| (n.as_str(), p))
            .collect();
        prop_assert_eq!(table.page(&prefix, start_after.as_deref(), limit), expected);
    }

    #[test]
    fn table_paging_visits_every_prefixed_name_once(
        names in prop::collection::btree_set(short_name(), 0..40),
        prefix in "[ab/é]{0,2}",
        limit in 1usize..6,
    ) {
        let mut table = PlacementTable::new();
        for (i, name) in names.iter().enumerate() {
            table.insert(name.clone(), placement(i as u64, &[1])).expect("names are distinct");
        }
        let mut seen: Vec<String> = Vec::new();
        loop {
            let page = table.page(&prefix, seen.last().map(String::as_str), limit);
            prop_assert!(page.len() <= limit);
            let done = page.len() < limit;
            seen.extend(page.into_iter().map(|(n, _)| n.to_owned()));
            if done {
                break;
            }
        }
        let expected: Vec<String> = names.iter().filter(|n| n.starts_with(&prefix)).cloned().collect();
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn table_matches_model_under_inserts_and_removes(ops in prop::collection::vec(op(), 0..60)) {
        let mut table = PlacementTable::new();
        let mut model: BTreeMap<String, Placement> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(name, id) => {
                    let p = placement(id, &[id % 5, id % 5 + 1]);
                    let expected = if model.contains_key(&name) {
                        Err(PlacementError::AlreadyPlaced(name.clone()))
                    } else {
                        model.insert(name.clone(), p.clone());
                        Ok(())
                    };
                    prop_assert_eq!(table.insert(name, p), expected);
                }
                Op::Remove(name) => {
                    let expected = model
                        .remove(&name)
                        .ok_or_else(|| PlacementError::NotPlaced(name.clone()));
                    prop_assert_eq!(table.remove(&name), expected);
                }
            }
            prop_assert_eq!(table.len(), model.len());
            prop_assert_eq!(table.is_empty(), model.is_empty());
        }
        let got: Vec<(&str, &Placement)> = table.iter().collect();
        let expected: Vec<(&str, &Placement)> = model.iter().map(|(n, p)| (n.as_str(), p)).collect();
        prop_assert_eq!(got, expected);
        for node in 0..6 {
            let got: Vec<&str> = table.names_on(node).collect();
            let expected: Vec<&str> = model
                .iter()
                .filter(|(_, p)| p.replicas.contains(&node))
                .map(|(n, _)| n.as_str())
                .collect();
            prop_assert_eq!(got, expected);
        }
        let bytes = postcard::to_stdvec(&table).expect("serialise to postcard");
        let back: PlacementTable = postcard::from_bytes(&bytes).expect("deserialise postcard");
        prop_assert_eq!(back, table);
    }
}
