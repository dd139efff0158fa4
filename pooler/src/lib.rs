//! pgfleet's pooler: the PostgreSQL wire protocol for many tenants, with transaction and
//! session pooling, hot-reloaded tenant documents, and per-client cancellation.
//!
//! The binary (`main.rs`) wires a [`Shared`] state to listeners ([`listener`]), the admin
//! port ([`admin`]) and a tenant source: a directory ([`tenants::directory`]) or the fleet's
//! Secrets in Kubernetes ([`tenants::kubernetes`]), both feeding the same reload path
//! ([`tenants::TenantRegistry::apply`]). Tests drive the same pieces in-process ([`app`]).

pub mod admin;
pub mod app;
pub mod auth;
pub mod cancel;
pub mod cli;
pub mod client;
pub mod config;
pub mod errors;
pub mod listener;
pub mod pool;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod tenants;
pub mod timer;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

/// Settings every connection reads.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time a client has from connecting to being logged in.
    pub login_timeout: Duration,
    /// Pause before answering a wrong password or unknown tenant.
    pub auth_failure_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            login_timeout: Duration::from_secs(15),
            auth_failure_delay: Duration::from_millis(500),
        }
    }
}

/// State shared by every connection of the process.
pub struct Shared {
    /// Loaded tenants.
    pub tenants: Arc<tenants::TenantRegistry>,
    /// Server pools.
    pub pools: Arc<pool::Pools>,
    /// Synthetic cancel keys.
    pub cancels: Arc<cancel::CancelRegistry>,
    /// Settings.
    pub settings: Settings,
    /// Cancelled when the pooler starts draining, for session-mode relays to wait on (see
    /// [`Shared::drained`]). Private, like the two below: only [`Shared::start_draining`] may
    /// set the three, so they never disagree.
    draining: tokio_util::sync::CancellationToken,
    /// Set with `draining`, for the hot path: the token's own check takes a lock shared by
    /// every worker, and transaction mode asks twice per transaction.
    draining_flag: std::sync::atomic::AtomicBool,
    /// Transaction-mode clients, woken when draining starts (see [`Shared::start_draining`]).
    pub idle_wakers: client::idle_wakers::IdleWakers,
    /// Errors sent to clients, by tenant and code (metrics).
    pub errors: stats::ErrorCounts,
}

impl Shared {
    /// Empty state with the given settings.
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Shared {
            tenants: Arc::default(),
            pools: Arc::default(),
            cancels: Arc::default(),
            settings,
            draining: tokio_util::sync::CancellationToken::new(),
            draining_flag: std::sync::atomic::AtomicBool::new(false),
            idle_wakers: client::idle_wakers::IdleWakers::default(),
            errors: stats::ErrorCounts::default(),
        })
    }

    /// Starts draining: sessions end at their next idle moment, and clients idle between
    /// transactions are woken to be told so now.
    pub fn start_draining(&self) {
        self.draining_flag
            .store(true, std::sync::atomic::Ordering::Release);
        self.draining.cancel();
        self.idle_wakers.wake_all();
    }

    /// Completes once draining started. For session-mode relays, which wait for it only when
    /// idle; transaction mode uses [`Shared::is_draining`] and the idle wakers instead.
    pub fn drained(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.draining.clone().cancelled_owned()
    }

    /// True once draining started.
    pub fn is_draining(&self) -> bool {
        self.draining_flag
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
