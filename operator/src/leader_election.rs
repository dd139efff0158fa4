//! Leader election on a `coordination.k8s.io/v1` Lease, the protocol of client-go's
//! `leaderelection` package (which controller-runtime and kube-controller-manager use).
//!
//! Every candidate reads the Lease, decides ([`decide`], a pure function) and writes with
//! optimistic concurrency: an update carries the `resourceVersion` it read, so of two
//! candidates racing for one Lease exactly one write succeeds and the other gets `409
//! Conflict`; a missing Lease is created, and two creates race the same way (`409
//! AlreadyExists`).
//!
//! - **Acquire**: a Lease that is absent, released (no `holderIdentity`), expired, or already
//!   ours is written with our identity. Taking it from someone else (or after a release) sets
//!   `acquireTime` and increments `leaseTransitions`.
//! - **Expiry** is judged as client-go judges it: a Lease held by another candidate is expired
//!   once this candidate has seen it *unchanged* for its `leaseDurationSeconds`, measured on
//!   the local monotonic clock from the moment the current record was first observed. The
//!   holder's `renewTime` is written (for people and tools) but never compared with the local
//!   wall clock, so clock skew between nodes cannot make a standby take over a live leader.
//!   The cost: a candidate that starts after the leader died waits one full lease duration.
//! - **Renew**: the leader rewrites `renewTime` every retry period. If it has not renewed
//!   successfully for the renew deadline (shorter than the lease duration), it has lost
//!   leadership ([`LeaderElector::hold`] returns), and the caller must stop acting as leader
//!   at once; `pgfleet-operator` exits non-zero and comes back as a standby.
//! - **Release**: on a graceful shutdown the leader clears `holderIdentity` (and sets
//!   `leaseDurationSeconds` to 1), so a standby takes over at its next attempt instead of
//!   waiting for the lease to expire.
//!
//! Like client-go's, this is cooperative, without fencing tokens: between a leader that
//! stalls (a long GC pause, a frozen VM) past the lease duration and its next check of the
//! deadline, two replicas may act at once. Reconciles here are idempotent server-side applies,
//! so the damage is limited to duplicate writes.
//!
//! The ServiceAccount needs `get`, `create` and `update` on `leases` in the Lease's namespace.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt as _};
use tokio::time::Instant;

/// Settings of one candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This candidate's identity, unique among the candidates.
    pub identity: String,
    /// How long a Lease stays valid after its last renewal (written to the Lease in whole
    /// seconds, rounded up).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// Pause between two attempts to acquire or renew.
    pub retry_period: Duration,
}

/// Why an [`ElectionConfig`] cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElectionConfigError {
    /// A name is empty.
    #[error("leader election: the {0} must not be empty")]
    Empty(&'static str),
    /// The timings are out of order.
    #[error(
        "leader election: need lease duration ({lease_duration:?}) > renew deadline \
         ({renew_deadline:?}) > retry period ({retry_period:?}) > 0"
    )]
    Timings {
        /// `--lease-duration`.
        lease_duration: Duration,
        /// `--renew-deadline`.
        renew_deadline: Duration,
        /// `--retry-period`.
        retry_period: Duration,
    },
}

impl ElectionConfig {
    /// Checks the names and that `lease_duration > renew_deadline > retry_period > 0`: the
    /// leader must give up before a standby may take over, and must get at least one retry
    /// before giving up.
    pub fn validate(&self) -> Result<(), ElectionConfigError> {
        for (what, value) in [
            ("Lease name", &self.lease_name),
            ("Lease namespace", &self.namespace),
            ("identity", &self.identity),
        ] {
            if value.is_empty() {
                return Err(ElectionConfigError::Empty(what));
            }
        }
        if !(self.lease_duration > self.renew_deadline
            && self.renew_deadline > self.retry_period
            && !self.retry_period.is_zero())
        {
            return Err(ElectionConfigError::Timings {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(())
    }

    /// The lease duration as the Lease stores it: whole seconds, rounded up, at least 1.
    pub fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }
}

/// What a candidate should do with the Lease it just read.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// There is no Lease: create it with this spec.
    Create(LeaseSpec),
    /// Write this spec over the Lease as read (same `resourceVersion`).
    Update {
        /// The spec to write.
        spec: LeaseSpec,
        /// Whether this takes the Lease from another holder (or after a release), as opposed
        /// to renewing our own.
        takeover: bool,
    },
    /// Another candidate holds a valid Lease: wait.
    Wait {
        /// Its identity.
        holder: String,
    },
}

/// The holder of `spec`, if any (an empty identity counts as none, as in client-go).
pub fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Decides what candidate `identity` does with the Lease it read (`current`, `None` when
/// there is none), at wall-clock time `now`, having seen `current` unchanged for
/// `unchanged_for` on its own monotonic clock. `lease_duration_seconds` is what this candidate
/// writes; the validity of another holder's Lease is judged by the duration *that* holder
/// wrote.
pub fn decide(
    current: Option<&LeaseSpec>,
    identity: &str,
    lease_duration_seconds: i32,
    now: Timestamp,
    unchanged_for: Duration,
) -> Decision {
    let now = MicroTime(now);
    let Some(current) = current else {
        return Decision::Create(LeaseSpec {
            holder_identity: Some(identity.to_string()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(lease_duration_seconds),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        });
    };
    match holder(current) {
        Some(holder) if holder == identity => Decision::Update {
            spec: LeaseSpec {
                acquire_time: current.acquire_time.clone().or_else(|| Some(now.clone())),
                renew_time: Some(now),
                lease_duration_seconds: Some(lease_duration_seconds),
                lease_transitions: Some(current.lease_transitions.unwrap_or(0)),
                ..current.clone()
            },
            takeover: false,
        },
        Some(holder) if !expired(current, lease_duration_seconds, unchanged_for) => {
            Decision::Wait {
                holder: holder.to_string(),
            }
        }
        // Released, or held by someone who stopped renewing.
        _ => Decision::Update {
            spec: LeaseSpec {
                holder_identity: Some(identity.to_string()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: Some(lease_duration_seconds),
                lease_transitions: Some(current.lease_transitions.unwrap_or(0).saturating_add(1)),
                ..current.clone()
            },
            takeover: true,
        },
    }
}

/// Whether a Lease seen unchanged for `unchanged_for` has expired: after the duration its
/// holder wrote (ours when it wrote none).
fn expired(current: &LeaseSpec, own_duration_seconds: i32, unchanged_for: Duration) -> bool {
    let seconds = current
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .unwrap_or(own_duration_seconds);
    unchanged_for >= Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The spec that releases `current` if `identity` holds it: no holder, a 1-second duration,
/// `renewTime` now; `None` when someone else holds it (nothing to release).
pub fn released(current: &LeaseSpec, identity: &str, now: Timestamp) -> Option<LeaseSpec> {
    (holder(current) == Some(identity)).then(|| LeaseSpec {
        holder_identity: None,
        renew_time: Some(MicroTime(now)),
        lease_duration_seconds: Some(1),
        ..current.clone()
    })
}

/// A failed attempt to read or write the Lease.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The API call failed.
    #[error("{action} Lease {lease}: {source}")]
    Kube {
        /// `read`, `create` or `update`.
        action: &'static str,
        /// `namespace/name`.
        lease: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Another candidate wrote the Lease between our read and our write.
    #[error("Lease {0} was changed by another candidate while we wrote it")]
    Conflict(String),
}

/// The outcome of one successful round trip to the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (just acquired or renewed); `takeover` when we were not the holder.
    Held {
        /// Whether this attempt took the Lease over.
        takeover: bool,
    },
    /// Someone else holds a valid Lease.
    HeldBy(String),
}

/// Why [`LeaderElector::hold`] returned: leadership is lost and the caller must stop acting as
/// leader.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LostLeadership {
    /// No renewal succeeded within the renew deadline.
    #[error("could not renew the Lease within the renew deadline ({0:?})")]
    RenewDeadline(Duration),
    /// Another candidate holds the Lease now.
    #[error("the Lease is now held by {0}")]
    TakenBy(String),
}

/// The Lease record as last read, and since when (on the local monotonic clock) it has been
/// seen unchanged.
#[derive(Clone, Debug)]
struct Observed {
    spec: Option<LeaseSpec>,
    since: Instant,
}

/// One candidate in the election for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Option<Observed>,
    /// When the last successful acquisition or renewal started, while leading.
    last_renewed: Option<Instant>,
}

impl LeaderElector {
    /// A candidate for the Lease `config.namespace/config.lease_name`.
    pub fn new(client: Client, config: ElectionConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            last_renewed: None,
        }
    }

    /// How much longer this candidate may act as leader without another renewal: the renew
    /// deadline minus the time since the start of its last successful acquisition or renewal
    /// (zero when it does not lead). Work done as leader after [`LeaderElector::hold`] returned
    /// (e.g. draining controllers at shutdown) must end within it.
    pub fn leadership_left(&self) -> Duration {
        self.last_renewed.map_or(Duration::ZERO, |at| {
            self.config.renew_deadline.saturating_sub(at.elapsed())
        })
    }

    /// The settings.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    fn lease_key(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.lease_name)
    }

    fn kube_error(&self, action: &'static str) -> impl FnOnce(kube::Error) -> ElectionError {
        let lease = self.lease_key();
        move |source| match &source {
            kube::Error::Api(status) if status.is_conflict() || status.is_already_exists() => {
                ElectionError::Conflict(lease)
            }
            _ => ElectionError::Kube {
                action,
                lease,
                source,
            },
        }
    }

    /// Records what was read; returns how long it has been seen unchanged.
    fn observe(&mut self, spec: Option<&LeaseSpec>) -> Duration {
        let now = Instant::now();
        match &self.observed {
            Some(seen) if seen.spec.as_ref() == spec => now - seen.since,
            _ => {
                self.observed = Some(Observed {
                    spec: spec.cloned(),
                    since: now,
                });
                Duration::ZERO
            }
        }
    }

    /// One round: read the Lease, decide, and write when acquiring or renewing.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, ElectionError> {
        let name = self.config.lease_name.clone();
        let current = self
            .api
            .get_opt(&name)
            .await
            .map_err(self.kube_error("read"))?;
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let unchanged_for = self.observe(spec.as_ref());
        let decision = decide(
            spec.as_ref(),
            &self.config.identity,
            self.config.lease_duration_seconds(),
            Timestamp::now(),
            unchanged_for,
        );
        let (written, takeover) = match (decision, current) {
            (Decision::Wait { holder }, _) => return Ok(Attempt::HeldBy(holder)),
            (Decision::Create(spec), _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                let created = self
                    .api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map_err(self.kube_error("create"))?;
                (created, true)
            }
            (Decision::Update { spec, takeover }, Some(mut lease)) => {
                // `lease` still carries the resourceVersion we read: the write fails with a
                // conflict if anyone wrote in between.
                lease.spec = Some(spec);
                let replaced = self
                    .api
                    .replace(&name, &PostParams::default(), &lease)
                    .await
                    .map_err(self.kube_error("update"))?;
                (replaced, takeover)
            }
            // `decide` only updates a Lease that exists.
            (Decision::Update { .. }, None) => {
                return Err(ElectionError::Conflict(self.lease_key()));
            }
        };
        self.observed = Some(Observed {
            spec: written.spec.clone(),
            since: Instant::now(),
        });
        if takeover {
            tracing::info!(
                lease = %self.lease_key(),
                identity = %self.config.identity,
                transitions = written.spec.as_ref().and_then(|s| s.lease_transitions),
                resource_version = written.resource_version().unwrap_or_default(),
                "acquired the Lease"
            );
        }
        Ok(Attempt::Held { takeover })
    }

    /// Tries every retry period (plus up to 20 % jitter) until this candidate holds the Lease,
    /// and returns when the successful attempt started (pass it to [`LeaderElector::hold`]).
    /// Runs until then: select it against a shutdown signal.
    pub async fn acquire(&mut self) -> Instant {
        let mut last_holder: Option<String> = None;
        loop {
            let started = Instant::now();
            let attempt =
                tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(Attempt::Held { .. })) => {
                    self.last_renewed = Some(started);
                    return started;
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(
                            lease = %self.lease_key(),
                            %holder,
                            identity = %self.config.identity,
                            "standing by: another replica leads"
                        );
                        last_holder = Some(holder);
                    }
                }
                Ok(Err(ElectionError::Conflict(lease))) => {
                    tracing::debug!(%lease, "lost a race for the Lease; retrying");
                }
                Ok(Err(error)) => tracing::warn!(%error, "cannot acquire the Lease; retrying"),
                Err(_) => tracing::warn!(
                    lease = %self.lease_key(),
                    timeout = ?self.config.renew_deadline,
                    "reading or writing the Lease timed out; retrying"
                ),
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews the Lease every retry period for as long as it can, starting from a successful
    /// acquisition or renewal that started at `acquired` (what [`LeaderElector::acquire`]
    /// returns); returns when leadership is lost: another candidate holds the Lease, or no
    /// renewal succeeded within the renew deadline (each attempt is cut off there too). The
    /// deadline counts from the *start* of the last successful attempt, before its
    /// `renewTime` was taken, so the leader always gives up before a standby that saw that
    /// renewal can take over.
    pub async fn hold(&mut self, acquired: Instant) -> LostLeadership {
        let deadline = self.config.renew_deadline;
        let mut last_renewed = acquired;
        self.last_renewed = Some(acquired);
        loop {
            let remaining = deadline.saturating_sub(last_renewed.elapsed());
            tokio::time::sleep(self.config.retry_period.min(remaining)).await;
            let remaining = deadline.saturating_sub(last_renewed.elapsed());
            if remaining.is_zero() {
                return LostLeadership::RenewDeadline(deadline);
            }
            let started = Instant::now();
            match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Held { .. })) => {
                    last_renewed = started;
                    self.last_renewed = Some(started);
                }
                Ok(Ok(Attempt::HeldBy(holder))) => return LostLeadership::TakenBy(holder),
                Ok(Err(error)) => tracing::warn!(%error, "cannot renew the Lease; retrying"),
                Err(_) => return LostLeadership::RenewDeadline(deadline),
            }
        }
    }

    /// Gives the Lease up if this candidate holds it, so a standby takes over at once.
    /// Returns whether it was released (`false`: someone else holds it, or there is none).
    pub async fn release(&mut self) -> Result<bool, ElectionError> {
        let name = self.config.lease_name.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&name)
            .await
            .map_err(self.kube_error("read"))?
        else {
            return Ok(false);
        };
        let current = lease.spec.clone().unwrap_or_default();
        let Some(spec) = released(&current, &self.config.identity, Timestamp::now()) else {
            return Ok(false);
        };
        lease.spec = Some(spec);
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await
            .map_err(self.kube_error("update"))?;
        self.observed = None;
        self.last_renewed = None;
        tracing::info!(lease = %self.lease_key(), identity = %self.config.identity, "released the Lease");
        Ok(true)
    }
}

/// `period` plus up to 20 % (client-go's jitter factor is 1.2), so candidates that started
/// together do not keep colliding.
fn jittered(period: Duration) -> Duration {
    use rand::Rng as _;
    period.mul_f64(1.0 + rand::rng().random_range(0.0..0.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "op-a";
    const OTHER: &str = "op-b";
    const SECS: i32 = 15;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid timestamp")
    }

    fn held_by(holder: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            acquire_time: Some(MicroTime(t(0))),
            renew_time: Some(MicroTime(t(5))),
            lease_duration_seconds: Some(SECS),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn creates_an_absent_lease() {
        let Decision::Create(spec) = decide(None, ME, SECS, t(10), Duration::ZERO) else {
            panic!("expected Create");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(SECS));
        assert_eq!(spec.acquire_time, Some(MicroTime(t(10))));
        assert_eq!(spec.renew_time, Some(MicroTime(t(10))));
    }

    #[test]
    fn renews_its_own_lease_keeping_acquire_time_and_transitions() {
        let current = held_by(ME, 3);
        // Even "expired" by observation: the holder renews its own Lease.
        for unchanged in [Duration::ZERO, Duration::from_secs(60)] {
            let decision = decide(Some(&current), ME, SECS, t(20), unchanged);
            let Decision::Update { spec, takeover } = decision else {
                panic!("expected Update, got {decision:?}");
            };
            assert!(!takeover);
            assert_eq!(spec.holder_identity.as_deref(), Some(ME));
            assert_eq!(spec.acquire_time, Some(MicroTime(t(0))));
            assert_eq!(spec.renew_time, Some(MicroTime(t(20))));
            assert_eq!(spec.lease_transitions, Some(3));
        }
    }

    #[test]
    fn waits_while_another_holder_is_fresh() {
        let current = held_by(OTHER, 1);
        for unchanged in [
            Duration::ZERO,
            Duration::from_secs(14),
            Duration::from_millis(14_999),
        ] {
            assert_eq!(
                decide(Some(&current), ME, SECS, t(100), unchanged),
                Decision::Wait {
                    holder: OTHER.into()
                },
                "unchanged for {unchanged:?}"
            );
        }
    }

    #[test]
    fn takes_over_an_expired_lease_and_counts_the_transition() {
        let current = held_by(OTHER, 4);
        let decision = decide(Some(&current), ME, SECS, t(100), Duration::from_secs(15));
        let Decision::Update { spec, takeover } = decision else {
            panic!("expected Update, got {decision:?}");
        };
        assert!(takeover);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(5));
        assert_eq!(spec.acquire_time, Some(MicroTime(t(100))));
        assert_eq!(spec.renew_time, Some(MicroTime(t(100))));
    }

    #[test]
    fn expiry_uses_the_holders_duration_not_the_wall_clock() {
        // The holder wrote 30 s: 20 s unchanged is still fresh, whatever our own duration.
        let mut current = held_by(OTHER, 0);
        current.lease_duration_seconds = Some(30);
        // renewTime is far in the past by our wall clock: ignored (clock skew).
        assert!(matches!(
            decide(Some(&current), ME, 3, t(10_000), Duration::from_secs(20)),
            Decision::Wait { .. }
        ));
        assert!(matches!(
            decide(Some(&current), ME, 3, t(10_000), Duration::from_secs(30)),
            Decision::Update { takeover: true, .. }
        ));
        // No duration written: ours applies.
        current.lease_duration_seconds = None;
        assert!(matches!(
            decide(Some(&current), ME, 3, t(0), Duration::from_secs(3)),
            Decision::Update { takeover: true, .. }
        ));
    }

    #[test]
    fn takes_over_a_released_lease_at_once() {
        let released_spec = released(&held_by(OTHER, 2), OTHER, t(50)).expect("holder releases");
        assert_eq!(released_spec.holder_identity, None);
        assert_eq!(released_spec.lease_duration_seconds, Some(1));
        assert_eq!(released_spec.lease_transitions, Some(2));
        let decision = decide(Some(&released_spec), ME, SECS, t(51), Duration::ZERO);
        let Decision::Update { spec, takeover } = decision else {
            panic!("expected Update, got {decision:?}");
        };
        assert!(takeover);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.lease_duration_seconds, Some(SECS));

        // An empty identity counts as released too; a missing counter starts from 0.
        let empty = LeaseSpec {
            holder_identity: Some(String::new()),
            ..LeaseSpec::default()
        };
        let Decision::Update { spec, takeover } =
            decide(Some(&empty), ME, SECS, t(0), Duration::ZERO)
        else {
            panic!("expected Update");
        };
        assert!(takeover);
        assert_eq!(spec.lease_transitions, Some(1));
    }

    #[test]
    fn only_the_holder_releases() {
        assert_eq!(released(&held_by(OTHER, 0), ME, t(0)), None);
        assert_eq!(released(&LeaseSpec::default(), ME, t(0)), None);
    }

    #[test]
    fn config_validation() {
        let good = ElectionConfig {
            lease_name: "pgfleet-operator".into(),
            namespace: "ops".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(good.lease_duration_seconds(), 15);
        let with = |f: fn(&mut ElectionConfig)| {
            let mut c = good.clone();
            f(&mut c);
            c
        };
        assert_eq!(
            with(|c| c.lease_duration = Duration::from_millis(2500)).lease_duration_seconds(),
            3
        );
        assert!(
            with(|c| c.renew_deadline = Duration::from_secs(15))
                .validate()
                .is_err()
        );
        assert!(
            with(|c| c.retry_period = Duration::from_secs(10))
                .validate()
                .is_err()
        );
        assert!(
            with(|c| c.retry_period = Duration::ZERO)
                .validate()
                .is_err()
        );
        assert_eq!(
            with(|c| c.identity.clear()).validate(),
            Err(ElectionConfigError::Empty("identity"))
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(1));
            assert!(d >= Duration::from_secs(1) && d < Duration::from_millis(1200));
        }
    }
}
