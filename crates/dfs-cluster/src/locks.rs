//! The lock leases of the cluster map ([`Locks`]): who holds which name's lock, in which
//! mode, and the fencing tokens. Pure and deterministic like the rest of
//! [`ClusterState`](crate::ClusterState): no clock. A lease lapses when the map's leader,
//! which keeps the deadlines on its own monotonic clock ([`LeaseClock`]), commits
//! [`MapCommand::ExpireLock`](crate::MapCommand::ExpireLock).
//!
//! # Fencing
//! Every grant takes the next token (one counter for the whole map, so tokens only grow,
//! across any failover). Each locked name keeps a *fence*: the first token of its current
//! holders. An exclusive grant sets it to its own token; a shared grant sets it to its own
//! only when it starts a new group (no shared holder left). A write carrying token `t` is
//! refused when `t` is below the fence: the lock has been granted since to someone who
//! does not share with `t`'s holder.
//!
//! # Bounds
//! At most [`LEASES_MAX`] leases exist. The fences of names nobody holds are remembered for
//! the [`IDLE_NAMES_MAX`] most recently released names; an older one is forgotten into a
//! *floor* (the greatest fence forgotten), and a token below the floor is refused for every
//! name the map no longer remembers. That refuses only tokens whose leases ended long ago.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use dfs_proto::{LOCK_TTL_MS_MAX, LOCK_TTL_MS_MIN, LockGrant, LockMode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Most lock leases the map holds at once; a grant beyond is refused.
pub const LEASES_MAX: usize = 65_536;

/// Most names without a holder whose fences the map remembers (see the module docs).
pub const IDLE_NAMES_MAX: usize = 65_536;

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The name locked.
    pub name: String,
    /// How it is held.
    pub mode: LockMode,
    /// Its time to live, in milliseconds.
    pub ttl_ms: u64,
    /// The fencing token of its grant.
    pub token: u64,
    /// How many times it was renewed (an expiry names the count it saw, so a renewal
    /// committed first wins).
    pub renewals: u64,
}

/// One name's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NameLock {
    /// The first token of the current holders (see the module docs).
    fence: u64,
    /// The leases holding it.
    holders: BTreeSet<u64>,
    /// When the name last lost its last holder (its place in `idle`), while it has none.
    idle_since: Option<u64>,
}

/// Why a fenced write is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// A newer conflicting grant exists.
    #[error(
        "fencing token {token} is stale: the lock of {name:?} was granted since (fence {fence})"
    )]
    Stale {
        /// The file.
        name: String,
        /// The token the write carried.
        token: u64,
        /// The oldest token still accepted for the name.
        fence: u64,
    },
    /// No such token was ever granted.
    #[error("fencing token {token} was never granted (the newest is {newest})")]
    Unknown {
        /// The token the write carried.
        token: u64,
        /// The newest token granted.
        newest: u64,
    },
}

/// The answer to an acquire that cannot be granted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Whether the holder holds it exclusively.
    pub exclusive: bool,
    /// How many leases hold it.
    pub holders: u32,
}

/// The lock leases and fences (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locks {
    last_token: u64,
    last_lease: u64,
    floor: u64,
    idle_count: u64,
    names: BTreeMap<String, NameLock>,
    leases: BTreeMap<u64, Lease>,
    idle: VecDeque<(u64, String)>,
}

impl Locks {
    /// Grants a lease on `name`, or says who holds it in a conflicting mode.
    ///
    /// # Errors
    ///
    /// A message when the ttl is out of range or [`LEASES_MAX`] leases exist.
    pub fn acquire(
        &mut self,
        name: &str,
        mode: LockMode,
        ttl_ms: u64,
    ) -> Result<Result<LockGrant, Held>, String> {
        if !(LOCK_TTL_MS_MIN..=LOCK_TTL_MS_MAX).contains(&ttl_ms) {
            return Err(format!(
                "a lock's ttl must be {LOCK_TTL_MS_MIN} ms to {LOCK_TTL_MS_MAX} ms, not {ttl_ms} ms"
            ));
        }
        if let Some(held) = self.conflict(name, mode) {
            return Ok(Err(held));
        }
        if self.leases.len() >= LEASES_MAX {
            return Err(format!("too many locks held ({LEASES_MAX}); release some"));
        }
        self.last_token += 1;
        self.last_lease += 1;
        let (token, lease) = (self.last_token, self.last_lease);
        let entry = self.names.entry(name.to_owned()).or_insert(NameLock {
            fence: 0,
            holders: BTreeSet::new(),
            idle_since: None,
        });
        if mode == LockMode::Exclusive || entry.holders.is_empty() {
            entry.fence = token;
        }
        entry.holders.insert(lease);
        entry.idle_since = None;
        let held = Lease {
            name: name.to_owned(),
            mode,
            ttl_ms,
            token,
            renewals: 0,
        };
        let grant = grant(lease, &held);
        self.leases.insert(lease, held);
        Ok(Ok(grant))
    }

    /// Who holds `name` in a mode that conflicts with `mode`, if anyone.
    pub fn conflict(&self, name: &str, mode: LockMode) -> Option<Held> {
        let entry = self.names.get(name)?;
        // Holders share only in shared mode: any one of them tells how all hold it.
        let exclusive = entry
            .holders
            .first()
            .and_then(|lease| self.leases.get(lease))
            .is_some_and(|held| held.mode == LockMode::Exclusive);
        let conflicts = !entry.holders.is_empty() && (mode == LockMode::Exclusive || exclusive);
        conflicts.then(|| Held {
            exclusive,
            holders: u32::try_from(entry.holders.len()).unwrap_or(u32::MAX),
        })
    }

    /// Renews `lease` (its ttl counts again from the renewal); `None` if it is gone.
    pub fn renew(&mut self, lease: u64) -> Option<LockGrant> {
        let held = self.leases.get_mut(&lease)?;
        held.renewals += 1;
        Some(grant(lease, held))
    }

    /// Releases `lease`; `false` if it is gone.
    pub fn release(&mut self, lease: u64) -> bool {
        let Some(held) = self.leases.remove(&lease) else {
            return false;
        };
        let Some(entry) = self.names.get_mut(&held.name) else {
            return true;
        };
        entry.holders.remove(&lease);
        if entry.holders.is_empty() {
            self.idle_count += 1;
            entry.idle_since = Some(self.idle_count);
            self.idle.push_back((self.idle_count, held.name));
            while self.idle.len() > IDLE_NAMES_MAX {
                let Some((since, name)) = self.idle.pop_front() else {
                    break;
                };
                // Only if it is still idle since then (not taken and released again).
                if let Some(entry) = self.names.get(&name)
                    && entry.idle_since == Some(since)
                {
                    self.floor = self.floor.max(entry.fence);
                    self.names.remove(&name);
                }
            }
        }
        true
    }

    /// Expires `lease` if it was renewed exactly `renewals` times (else a renewal came
    /// first and it lives on): `Some(true)` expired, `Some(false)` renewed meanwhile,
    /// `None` gone already.
    pub fn expire(&mut self, lease: u64, renewals: u64) -> Option<bool> {
        let held = self.leases.get(&lease)?;
        if held.renewals != renewals {
            return Some(false);
        }
        Some(self.release(lease))
    }

    /// Whether a write to `name` carrying fencing token `token` may be applied.
    ///
    /// # Errors
    ///
    /// [`FenceError::Stale`] if the lock was granted since to a holder that does not share
    /// with `token`'s; [`FenceError::Unknown`] if no such token was granted.
    pub fn check_fence(&self, name: &str, token: u64) -> Result<(), FenceError> {
        if token > self.last_token {
            return Err(FenceError::Unknown {
                token,
                newest: self.last_token,
            });
        }
        let fence = self.names.get(name).map_or(self.floor, |e| e.fence);
        if token < fence {
            return Err(FenceError::Stale {
                name: name.to_owned(),
                token,
                fence,
            });
        }
        Ok(())
    }

    /// One lease.
    pub fn lease(&self, lease: u64) -> Option<&Lease> {
        self.leases.get(&lease)
    }

    /// Every lease, by id.
    pub fn leases(&self) -> impl Iterator<Item = (u64, &Lease)> {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    /// How many names the map keeps a lock entry for (held, or idle and remembered).
    pub fn names_tracked(&self) -> usize {
        self.names.len()
    }
}

fn grant(lease: u64, held: &Lease) -> LockGrant {
    LockGrant {
        name: held.name.clone(),
        mode: held.mode,
        lease,
        token: held.token,
        ttl_ms: held.ttl_ms,
    }
}

/// The map leader's clock for lock leases: a deadline per lease, on this node's monotonic
/// clock, counted from when this node first saw the lease's grant or latest renewal applied
/// (never before the holder sent it), and from when this node became leader for every
/// lease it found then (a new leader cannot know how long ago the old one last saw a
/// renewal, so it gives every lease its whole ttl again: leases may outlive their ttl
/// across a failover, never fall short of it).
#[derive(Debug, Default)]
pub struct LeaseClock {
    term: Option<u64>,
    deadlines: HashMap<u64, (u64, Instant)>,
}

impl LeaseClock {
    /// A clock that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings the deadlines up to date with `locks` as of `now`, for a leader in `term`,
    /// and answers the leases whose deadline has passed, with the renewal count each
    /// should expire at.
    pub fn expired(&mut self, term: u64, locks: &Locks, now: Instant) -> Vec<(u64, u64)> {
        if self.term != Some(term) {
            self.term = Some(term);
            self.deadlines.clear();
        }
        self.deadlines.retain(|id, _| locks.leases.contains_key(id));
        let mut expired = Vec::new();
        for (id, lease) in &locks.leases {
            let ttl = Duration::from_millis(lease.ttl_ms);
            let (renewals, deadline) = self
                .deadlines
                .entry(*id)
                .or_insert((lease.renewals, now + ttl));
            if *renewals != lease.renewals {
                *renewals = lease.renewals;
                *deadline = now + ttl;
            }
            if *deadline <= now {
                expired.push((*id, *renewals));
            }
        }
        expired
    }

    /// Forgets every deadline (this node stopped leading).
    pub fn reset(&mut self) {
        self.term = None;
        self.deadlines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(locks: &mut Locks, name: &str, mode: LockMode) -> LockGrant {
        match locks.acquire(name, mode, 1000) {
            Ok(Ok(g)) => g,
            other => panic!("expected a grant of {name}, got {other:?}"),
        }
    }

    #[test]
    fn exclusive_excludes_everyone_and_shared_share() {
        let mut locks = Locks::default();
        let a = granted(&mut locks, "f", LockMode::Shared);
        let b = granted(&mut locks, "f", LockMode::Shared);
        assert!(b.token > a.token);
        assert_eq!(
            locks.acquire("f", LockMode::Exclusive, 1000),
            Ok(Err(Held {
                exclusive: false,
                holders: 2
            }))
        );
        assert!(locks.release(a.lease));
        assert!(locks.release(b.lease));
        let c = granted(&mut locks, "f", LockMode::Exclusive);
        assert_eq!(
            locks.acquire("f", LockMode::Shared, 1000),
            Ok(Err(Held {
                exclusive: true,
                holders: 1
            }))
        );
        // Another name is independent.
        granted(&mut locks, "g", LockMode::Exclusive);
        assert!(!locks.release(a.lease), "released twice");
        assert!(locks.release(c.lease));
    }

    #[test]
    fn tokens_grow_with_every_grant() {
        let mut locks = Locks::default();
        let mut last = 0;
        for name in ["a", "b", "a", "c", "a"] {
            let g = granted(&mut locks, name, LockMode::Exclusive);
            assert!(g.token > last);
            last = g.token;
            locks.release(g.lease);
        }
    }

    #[test]
    fn a_newer_exclusive_grant_fences_the_older_token() {
        let mut locks = Locks::default();
        let a = granted(&mut locks, "f", LockMode::Exclusive);
        assert_eq!(locks.check_fence("f", a.token), Ok(()));
        // A's lease lapses and B takes the lock: A's token is refused, B's accepted.
        assert_eq!(locks.expire(a.lease, 0), Some(true));
        assert_eq!(
            locks.check_fence("f", a.token),
            Ok(()),
            "no newer grant yet"
        );
        let b = granted(&mut locks, "f", LockMode::Exclusive);
        assert!(matches!(
            locks.check_fence("f", a.token),
            Err(FenceError::Stale { .. })
        ));
        assert_eq!(locks.check_fence("f", b.token), Ok(()));
        assert!(matches!(
            locks.check_fence("f", b.token + 1),
            Err(FenceError::Unknown { .. })
        ));
    }

    #[test]
    fn shared_holders_fence_only_after_their_group() {
        let mut locks = Locks::default();
        let a = granted(&mut locks, "f", LockMode::Shared);
        let b = granted(&mut locks, "f", LockMode::Shared);
        assert_eq!(locks.check_fence("f", a.token), Ok(()), "b shares with a");
        locks.release(a.lease);
        locks.release(b.lease);
        let c = granted(&mut locks, "f", LockMode::Shared);
        assert!(locks.check_fence("f", b.token).is_err(), "a new group");
        assert_eq!(locks.check_fence("f", c.token), Ok(()));
    }

    #[test]
    fn a_renewal_beats_an_expiry_that_saw_the_lease_before_it() {
        let mut locks = Locks::default();
        let a = granted(&mut locks, "f", LockMode::Exclusive);
        assert!(locks.renew(a.lease).is_some());
        assert_eq!(locks.expire(a.lease, 0), Some(false));
        assert_eq!(locks.expire(a.lease, 1), Some(true));
        assert_eq!(locks.expire(a.lease, 1), None);
        assert_eq!(locks.renew(a.lease), None);
    }

    #[test]
    fn forgotten_names_leave_a_floor() {
        let mut locks = Locks::default();
        let old = granted(&mut locks, "old", LockMode::Exclusive);
        locks.release(old.lease);
        let newer = granted(&mut locks, "old", LockMode::Exclusive);
        locks.release(newer.lease);
        for i in 0..IDLE_NAMES_MAX {
            let g = granted(&mut locks, &format!("n{i}"), LockMode::Exclusive);
            locks.release(g.lease);
        }
        assert_eq!(locks.names_tracked(), IDLE_NAMES_MAX);
        // "old" is forgotten; its stale token is still refused.
        assert!(locks.check_fence("old", old.token).is_err());
    }

    #[test]
    fn bad_ttls_and_too_many_leases_are_refused() {
        let mut locks = Locks::default();
        assert!(locks.acquire("f", LockMode::Shared, 0).is_err());
        assert!(
            locks
                .acquire("f", LockMode::Shared, LOCK_TTL_MS_MAX + 1)
                .is_err()
        );
        for i in 0..LEASES_MAX {
            granted(&mut locks, &format!("n{i}"), LockMode::Exclusive);
        }
        assert!(locks.acquire("x", LockMode::Shared, 1000).is_err());
    }

    #[test]
    fn the_lease_clock_counts_from_what_it_saw() {
        let mut locks = Locks::default();
        let a = granted(&mut locks, "f", LockMode::Exclusive);
        let mut clock = LeaseClock::new();
        let t0 = Instant::now();
        let ttl = Duration::from_millis(1000);
        assert!(clock.expired(1, &locks, t0).is_empty());
        assert!(clock.expired(1, &locks, t0 + ttl / 2).is_empty());
        // A renewal seen at ttl/2 counts its ttl from then.
        locks.renew(a.lease);
        assert!(clock.expired(1, &locks, t0 + ttl / 2).is_empty());
        assert!(clock.expired(1, &locks, t0 + ttl).is_empty());
        assert_eq!(
            clock.expired(1, &locks, t0 + ttl + ttl / 2),
            vec![(a.lease, 1)]
        );
        // A new term (a new leader) gives the lease its whole ttl again.
        assert!(clock.expired(2, &locks, t0 + ttl + ttl / 2).is_empty());
        assert_eq!(clock.expired(2, &locks, t0 + 3 * ttl), vec![(a.lease, 1)]);
    }
}
