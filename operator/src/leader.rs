//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! reconcile at once.
//!
//! The algorithm is client-go's `leaderelection` with a Lease lock: a candidate takes the Lease when
//! it is free or when its record (holder and renew time) has not changed for `lease_duration` as
//! measured on the candidate's own clock (so clock skew between replicas does not matter); the
//! leader renews every `retry_period` and gives up when it could not renew for `renew_deadline`.
//! Every write is a compare-and-swap on `resourceVersion`, so two candidates cannot both win.
//! Invariant: `renew_deadline < lease_duration`, so a leader stops acting before anyone else may
//! take over. The decision is the pure function [`decide`]; [`LeaderElector`] only does the I/O.
//! See docs/adr/0102-leader-election.md for why this is not a crate.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tracing::{debug, info, warn};

/// Timing of the election (client-go's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease record must stay unchanged before a candidate may take it.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// Interval between attempts.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the Lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The Lease does not exist: create it holding it.
    Create,
    /// This candidate holds it: renew.
    Renew,
    /// The Lease is free or expired: take it over.
    Acquire,
    /// Someone else holds a live Lease.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// The part of a Lease record whose change proves the holder alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
}

fn record(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renew_time: spec.renew_time.map(|t| t.0),
    }
}

/// Decides what to do with `lease` (None: not found), given how long its current record has been
/// observed unchanged by this candidate.
pub fn decide(
    lease: Option<&Lease>,
    me: &str,
    unchanged_for: Duration,
    timing: &Timing,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let rec = record(lease);
    match rec.holder {
        Some(h) if h == me => Decision::Renew,
        None => Decision::Acquire,
        Some(_) if unchanged_for >= lease_duration_of(lease, timing) => Decision::Acquire,
        Some(h) => Decision::Wait { holder: h },
    }
}

/// The Lease's own duration if set (the holder chose it), else ours.
fn lease_duration_of(lease: &Lease, timing: &Timing) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(timing.lease_duration)
}

/// A candidate for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    observed: Option<(Record, Instant)>,
}

impl LeaderElector {
    /// A candidate named `identity` for Lease `name` reachable through `api`.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        LeaderElector {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            observed: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt to acquire or renew; Ok(true) when this candidate holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now = Instant::now();
        let unchanged_for = match (&current, &self.observed) {
            (Some(l), Some((rec, since))) if record(l) == *rec => now.duration_since(*since),
            (Some(l), _) => {
                self.observed = Some((record(l), now));
                Duration::ZERO
            }
            (None, _) => Duration::ZERO,
        };
        let decision = decide(
            current.as_ref(),
            &self.identity,
            unchanged_for,
            &self.timing,
        );
        debug!(lease = %self.name, ?decision, "leader election");
        let stamp = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(15);
        let result = match (decision, current) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(stamp);
                spec.lease_duration_seconds = Some(duration_secs);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Acquire, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let previous = spec.holder_identity.clone().unwrap_or_default();
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(duration_secs);
                spec.acquire_time = Some(stamp.clone());
                spec.renew_time = Some(stamp);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                info!(lease = %self.name, previous = %previous, "taking over the leader Lease");
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Wait { holder }, _) => {
                debug!(lease = %self.name, %holder, "another replica leads");
                return Ok(false);
            }
            (Decision::Renew | Decision::Acquire, None) => return Ok(false),
        };
        match result {
            Ok(lease) => {
                self.observed = Some((record(&lease), Instant::now()));
                Ok(true)
            }
            // Lost a compare-and-swap race: someone else wrote first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "acquired the leader Lease");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(lease = %self.name, error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the Lease until that fails for `renew_deadline`; returns when leadership is lost.
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.name, "the leader Lease was taken by another replica");
                    return;
                }
                Err(e) => warn!(lease = %self.name, error = %e, "failed to renew the leader Lease"),
            }
            if last_renewed.elapsed() >= self.timing.renew_deadline {
                warn!(lease = %self.name, "could not renew the leader Lease before the deadline");
                return;
            }
        }
    }

    /// Gives the Lease up (on shutdown), so a standby takes over at once.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released the leader Lease"),
            Err(e) => warn!(lease = %self.name, error = %e, "failed to release the leader Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: duration,
                renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decision_table() {
        let t = Timing::default();
        let s = Duration::from_secs;
        let cases = [
            ("missing", None, s(0), Decision::Create),
            (
                "mine",
                Some(lease(Some("me"), Some(15))),
                s(100),
                Decision::Renew,
            ),
            ("free", Some(lease(None, Some(15))), s(0), Decision::Acquire),
            (
                "released",
                Some(lease(Some(""), Some(1))),
                s(0),
                Decision::Acquire,
            ),
            (
                "live other",
                Some(lease(Some("other"), Some(15))),
                s(14),
                Decision::Wait {
                    holder: "other".into(),
                },
            ),
            (
                "expired other",
                Some(lease(Some("other"), Some(15))),
                s(15),
                Decision::Acquire,
            ),
            (
                "other's longer duration wins",
                Some(lease(Some("other"), Some(60))),
                s(30),
                Decision::Wait {
                    holder: "other".into(),
                },
            ),
            (
                "no duration uses ours",
                Some(lease(Some("other"), None)),
                s(16),
                Decision::Acquire,
            ),
        ];
        for (name, l, unchanged, want) in cases {
            assert_eq!(decide(l.as_ref(), "me", unchanged, &t), want, "{name}");
        }
    }

    #[test]
    fn defaults_stop_acting_before_others_may_take_over() {
        let t = Timing::default();
        assert!(t.renew_deadline < t.lease_duration);
        assert!(t.retry_period < t.renew_deadline);
    }
}
