//! Lock leases for users and the conditions of writes: `lock`, `renew` and `unlock` (any
//! node serves them: each is a change of the cluster map, kept under consensus, see
//! `dfs_cluster::Locks`), the map leader's expiry of leases whose holders stopped renewing,
//! and the check of a write's or delete's [`Condition`] (fencing token, expected version)
//! by the file's primary.

use std::time::Duration;

use dfs_cluster::{FenceError, MapCommand, MapResponse, MapRole};
use dfs_proto::{Condition, LOCK_WAIT_MS_MAX, LockGrant, LockMode, Name, OpTag};
use tokio::time::Instant;

use crate::Engine;
use crate::engine::tagged;
use crate::error::EngineError;

/// How often the map's leader looks for leases whose ttl has passed: a lease lapses at
/// most this much after its ttl (plus the commit of its expiry).
pub(crate) const LOCK_EXPIRY_TICK: Duration = Duration::from_millis(50);

/// Longest a waiting `lock` trusts this node's map to tell it of a release before it asks
/// the leader again (the map normally tells at once, when it applies the release).
const LOCK_RECHECK: Duration = Duration::from_millis(250);

impl Engine {
    /// Takes a lock lease on `name`, waiting up to `wait` while others hold it in a
    /// conflicting mode. A tagged request is granted at most once: a retry whose first
    /// attempt was granted gets that grant.
    ///
    /// # Errors
    ///
    /// [`EngineError::LockHeld`] if still held when the wait ends;
    /// [`EngineError::InvalidRequest`] for a ttl or wait out of range;
    /// [`EngineError::Unavailable`] without a map quorum.
    pub async fn lock(
        &self,
        name: &str,
        mode: LockMode,
        ttl_ms: u64,
        wait: Duration,
        tag: Option<OpTag>,
    ) -> Result<LockGrant, EngineError> {
        let name = Name::parse(name)?.into_string();
        if wait > Duration::from_millis(LOCK_WAIT_MS_MAX) {
            return Err(EngineError::InvalidRequest(format!(
                "a lock waits at most {LOCK_WAIT_MS_MAX} ms, not {} ms",
                wait.as_millis()
            )));
        }
        let deadline = Instant::now() + wait;
        let mut applied = self.map.raft().metrics();
        let mut first = true;
        loop {
            // The first attempt always asks the leader (this node's map may be behind);
            // later ones only once this node's map shows the lock free.
            let held = self.map.read(|s| s.locks.conflict(&name, mode));
            let answer = if first || held.is_none() {
                first = false;
                let command = MapCommand::AcquireLock {
                    name: name.clone(),
                    mode,
                    ttl_ms,
                };
                match self.map.propose(tagged(tag, command)).await {
                    Ok(answer) => Some(answer),
                    Err(e) => return Err(EngineError::Unavailable(e.to_string())),
                }
            } else {
                None
            };
            let held = match answer {
                Some(MapResponse::Locked(grant)) => {
                    tracing::debug!(
                        name,
                        lease = grant.lease,
                        token = grant.token,
                        ?mode,
                        "lock granted"
                    );
                    return Ok(grant);
                }
                Some(MapResponse::LockHeld(held)) => Some(held),
                Some(MapResponse::Rejected(why)) => return Err(EngineError::InvalidRequest(why)),
                Some(other) => {
                    return Err(EngineError::Internal(format!("lock answered {other:?}")));
                }
                None => held,
            };
            let now = Instant::now();
            if now >= deadline {
                let holders = held.map_or_else(
                    || "others".to_owned(),
                    |h| {
                        let how = if h.exclusive { "exclusively" } else { "shared" };
                        format!("{} holder(s), {how}", h.holders)
                    },
                );
                return Err(EngineError::LockHeld(format!(
                    "{name:?} is locked by {holders}; waited {} ms",
                    wait.as_millis()
                )));
            }
            // Wake when this node applies something (a release, an expiry), or to ask
            // again; never past the deadline.
            let until = deadline.min(now + LOCK_RECHECK);
            if let Ok(Err(_)) = tokio::time::timeout_at(until, applied.changed()).await {
                return Err(EngineError::Unavailable(
                    "the cluster map stopped on this node".into(),
                ));
            }
        }
    }

    /// Renews a lease: it lasts its ttl again from now.
    ///
    /// # Errors
    ///
    /// [`EngineError::LeaseExpired`] once it has expired or was released.
    pub async fn renew(&self, lease: u64, tag: Option<OpTag>) -> Result<LockGrant, EngineError> {
        match self
            .lock_command(tag, MapCommand::RenewLock { lease })
            .await?
        {
            MapResponse::Locked(grant) => Ok(grant),
            MapResponse::NotFound => Err(EngineError::LeaseExpired(lease)),
            other => Err(EngineError::Internal(format!("renew answered {other:?}"))),
        }
    }

    /// Releases a lease.
    ///
    /// # Errors
    ///
    /// [`EngineError::LeaseExpired`] once it has expired (or was released before).
    pub async fn unlock(&self, lease: u64, tag: Option<OpTag>) -> Result<(), EngineError> {
        match self
            .lock_command(tag, MapCommand::ReleaseLock { lease })
            .await?
        {
            MapResponse::Released => Ok(()),
            MapResponse::NotFound => Err(EngineError::LeaseExpired(lease)),
            other => Err(EngineError::Internal(format!("unlock answered {other:?}"))),
        }
    }

    /// Commits a lock command for request `tag`. Not [`Engine::propose`]: a lock command
    /// that fails leaves nothing this node serves files by in doubt.
    async fn lock_command(
        &self,
        tag: Option<OpTag>,
        command: MapCommand,
    ) -> Result<MapResponse, EngineError> {
        self.map
            .propose(tagged(tag, command))
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))
    }

    /// On the map's leader: expires the leases whose ttl has passed since this node saw
    /// them granted or renewed (see `dfs_cluster::LeaseClock`). Elsewhere forgets its
    /// deadlines, so that a node that becomes leader gives every lease its whole ttl.
    pub(crate) async fn expire_locks(&self) {
        let status = self.map.status();
        if status.role != MapRole::Leader {
            self.lock_clock.lock().reset();
            return;
        }
        let now = Instant::now();
        let expired = {
            let mut clock = self.lock_clock.lock();
            self.map.read(|s| clock.expired(status.term, &s.locks, now))
        };
        for (lease, renewals) in expired {
            match self
                .map
                .propose_as_leader(MapCommand::ExpireLock { lease, renewals })
                .await
            {
                Ok(answer) => tracing::debug!(lease, ?answer, "lock lease expired"),
                Err(e) => {
                    tracing::debug!(lease, error = %e, "lock lease expiry not committed");
                    return;
                }
            }
        }
    }

    /// Checks a write's or delete's condition, as the file's primary under the file's
    /// exclusive lock, with the file at `version` (0 for one that does not exist). The
    /// fencing token is checked against the map with every grant committed before this
    /// call visible: a grant that commits later orders after this request (the new holder's
    /// requests take the file's lock after it).
    pub(crate) async fn check_condition(
        &self,
        name: &str,
        cond: Condition,
        version: u64,
    ) -> Result<(), EngineError> {
        if let Some(expected) = cond.if_version
            && expected != version
        {
            return Err(EngineError::VersionMismatch {
                name: name.to_owned(),
                expected,
                actual: version,
            });
        }
        if let Some(token) = cond.fence {
            self.map
                .catch_up()
                .await
                .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            self.map
                .read(|s| s.locks.check_fence(name, token))
                .map_err(|e| match e {
                    FenceError::Stale { .. } => EngineError::Fenced(e.to_string()),
                    FenceError::Unknown { .. } => EngineError::InvalidRequest(e.to_string()),
                })?;
        }
        Ok(())
    }
}
