//! Tenant documents from Kubernetes: the fleet's tenant-document Secrets in one namespace,
//! listed and then watched through the API server.
//!
//! The operator renders one Secret per tenant in the fleet's namespace, labelled
//! `pgfleet.io/fleet: <fleet>`, with the document under the data key `tenant.yaml`. This source
//! lists those Secrets (label selector), watches them, and feeds every change into the same
//! reload path as the directory source ([`TenantRegistry::apply`]), debounced so that a burst
//! of changes is one reload.
//!
//! Policy, the same as the directory source's:
//! - a Secret whose `tenant.yaml` is missing or invalid is logged (namespace/name and reason);
//!   if it had a valid document before, that last valid version keeps being served, so an
//!   edit mistake never takes a tenant offline;
//! - a deleted Secret (or one that loses the fleet label) removes its tenant;
//! - two Secrets with the same `externalId`: the first by Secret name wins, the other is logged.
//!
//! The registry is only touched once the first full list is in, so `/readyz` reports
//! "tenant source not synced" until then. While the API server cannot be reached (or refuses
//! the list), the source retries with capped exponential backoff and logs every failure; once
//! synced, the pooler keeps serving the last known tenants through any later outage, and
//! catches up when the watch resumes (relisting when needed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client};
use pgfleet_crds::TenantDocument;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::TenantRegistry;
use crate::pool::Pools;

/// Label naming the fleet a tenant-document Secret belongs to.
pub const FLEET_LABEL: &str = "pgfleet.io/fleet";
/// Data key of the tenant document in the Secret.
pub const DOCUMENT_KEY: &str = "tenant.yaml";
/// Changes arriving within this window of the first one are applied as one reload.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// First retry delay after the API server failed.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// After this long without a failure, the next failure starts the backoff over.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// Where the Kubernetes source reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesSourceConfig {
    /// The fleet: only Secrets labelled `pgfleet.io/fleet=<fleet>` are read.
    pub fleet: String,
    /// The namespace of the Secrets; `None` uses the client's default namespace (the pod's
    /// own namespace in a cluster, the kubeconfig context's namespace outside).
    pub namespace: Option<String>,
    /// A kubeconfig file to use; `None` infers the configuration as `kubectl` does
    /// (`KUBECONFIG`, `~/.kube/config`, then the in-cluster ServiceAccount).
    pub kubeconfig: Option<PathBuf>,
}

/// Why the Kubernetes source could not be set up. Reaching the API server is not part of
/// setup: an unreachable API server is retried, not an error.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesSourceError {
    /// The fleet name cannot be used in a label selector.
    #[error("--fleet {fleet:?} is not a valid label value: {reason}")]
    InvalidFleet {
        /// The fleet name given.
        fleet: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The namespace is not a valid namespace name.
    #[error("--namespace {0:?} is not a valid namespace name")]
    InvalidNamespace(String),
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No configuration was found, or the client could not be built from it.
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// The tenant-document Secrets of one fleet in one namespace.
pub struct KubernetesSource {
    api: Api<Secret>,
    namespace: String,
    fleet: String,
}

impl KubernetesSource {
    /// Builds the API client from `config` (no request is made yet) and checks the names.
    pub async fn connect(config: &KubernetesSourceConfig) -> Result<Self, KubernetesSourceError> {
        check_fleet(&config.fleet)?;
        install_crypto_provider();
        let client = match &config.kubeconfig {
            Some(path) => {
                let kubeconfig_error = |source| KubernetesSourceError::Kubeconfig {
                    path: path.clone(),
                    source,
                };
                let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
                let client_config =
                    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await
                        .map_err(kubeconfig_error)?;
                Client::try_from(client_config).map_err(KubernetesSourceError::Client)?
            }
            None => Client::try_default()
                .await
                .map_err(KubernetesSourceError::Client)?,
        };
        Self::from_client(client, config.namespace.as_deref(), &config.fleet)
    }

    /// A source over `client`, reading `namespace` (or the client's default namespace).
    pub fn from_client(
        client: Client,
        namespace: Option<&str>,
        fleet: &str,
    ) -> Result<Self, KubernetesSourceError> {
        check_fleet(fleet)?;
        let namespace = namespace
            .filter(|ns| !ns.is_empty())
            .unwrap_or(client.default_namespace())
            .to_string();
        if !is_dns_label(&namespace) {
            return Err(KubernetesSourceError::InvalidNamespace(namespace));
        }
        Ok(KubernetesSource {
            api: Api::namespaced(client, &namespace),
            namespace,
            fleet: fleet.to_string(),
        })
    }

    /// The namespace whose Secrets are read.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The label selector of the fleet's Secrets.
    pub fn label_selector(&self) -> String {
        format!("{FLEET_LABEL}={}", self.fleet)
    }

    /// Lists and watches the fleet's Secrets until shutdown, applying every change to the
    /// registry (debounced). The first apply happens when the first full list is in, which
    /// is what marks the registry synced. Each `reload` signal (SIGHUP) restarts the watch
    /// with a fresh list. Never returns an error: failures are logged and retried.
    pub async fn run(
        self,
        registry: Arc<TenantRegistry>,
        pools: Arc<Pools>,
        mut reload_signal: mpsc::Receiver<()>,
        shutdown: CancellationToken,
    ) {
        let selector = self.label_selector();
        tracing::info!(namespace = %self.namespace, selector = %selector, "watching tenant-document Secrets");
        let watch_config = watcher::Config::default().labels(&selector);
        let mut store = SecretDocuments::default();
        let mut backoff = Backoff::default();
        let mut reload_at: Option<Instant> = None;
        let mut signals_open = true;
        loop {
            let mut events = pin!(watcher(self.api.clone(), watch_config.clone()));
            loop {
                let debounce = async {
                    match reload_at {
                        Some(at) => crate::timer::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    () = debounce => {
                        reload_at = None;
                        self.reload(&store, &registry, &pools).await;
                    }
                    got = reload_signal.recv(), if signals_open => {
                        if got.is_some() {
                            tracing::info!("SIGHUP: relisting tenant-document Secrets");
                            break;
                        }
                        signals_open = false;
                    }
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            // `Init` comes before the list request, so it proves nothing.
                            if !matches!(event, watcher::Event::Init) {
                                backoff.succeeded();
                            }
                            if self.handle(&mut store, event) && store.is_synced() {
                                reload_at.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                            }
                        }
                        Some(Err(error)) => {
                            let delay = backoff.failed();
                            tracing::warn!(
                                namespace = %self.namespace, selector = %selector, error = %error,
                                synced = store.is_synced(), retry_in_ms = delay.as_millis(),
                                "cannot list or watch tenant-document Secrets"
                            );
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                () = crate::timer::sleep(delay) => {}
                            }
                        }
                        // The watcher stream does not end; if it ever does, start it over.
                        None => break,
                    }
                }
            }
        }
    }

    /// Folds one watch event into the store and logs Secrets that are not loaded. True when
    /// the registry should be reloaded.
    fn handle(&self, store: &mut SecretDocuments, event: watcher::Event<Secret>) -> bool {
        match event {
            watcher::Event::Init => {
                store.begin_relist();
                false
            }
            watcher::Event::InitApply(secret) => {
                let read = store.relist_apply(&secret);
                self.log_problem(read.problem.as_ref());
                false
            }
            watcher::Event::InitDone => {
                let first = !store.is_synced();
                store.finish_relist();
                if first {
                    tracing::info!(
                        namespace = %self.namespace,
                        secrets = store.len(),
                        "tenant-document Secrets listed"
                    );
                }
                // A relist can follow an outage of any length: always reconcile.
                true
            }
            watcher::Event::Apply(secret) => {
                let read = store.apply(&secret);
                self.log_problem(read.problem.as_ref());
                read.changed
            }
            watcher::Event::Delete(secret) => store.delete(&name_of(&secret)),
        }
    }

    fn log_problem(&self, problem: Option<&SecretProblem>) {
        if let Some(p) = problem {
            tracing::error!(
                secret = %format!("{}/{}", self.namespace, p.name),
                reason = %p.reason,
                "tenant document not loaded"
            );
        }
    }

    /// Applies the store's documents to the registry and logs what changed.
    async fn reload(&self, store: &SecretDocuments, registry: &TenantRegistry, pools: &Pools) {
        let (docs, problems) = store.documents();
        for p in &problems {
            self.log_problem(Some(p));
        }
        let s = registry.apply(docs, pools).await;
        tracing::info!(
            added = %s.added.join(","), changed = %s.changed.join(","), removed = %s.removed.join(","),
            unchanged = s.unchanged, invalid = store.invalid() + problems.len(), "tenants loaded"
        );
    }
}

/// A Secret whose document is not (or not currently) loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProblem {
    /// The Secret's name (in the source's namespace).
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

/// What reading one Secret did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SecretRead {
    /// The document served for the Secret changed.
    pub changed: bool,
    /// Its `tenant.yaml` is missing or invalid (freshly seen, not logged before).
    pub problem: Option<SecretProblem>,
}

/// One Secret: the raw document last seen and the last valid document.
#[derive(Clone, Debug, PartialEq)]
struct SecretEntry {
    /// `tenant.yaml` as last seen (`None`: no such key), to skip re-reading unchanged Secrets.
    raw: Option<Vec<u8>>,
    /// The last valid document, served even while `raw` is broken.
    doc: Option<TenantDocument>,
    /// `raw` is not a valid document.
    broken: bool,
}

/// The fleet's Secrets by name, as the watch reports them, with each one's last valid
/// document. Pure bookkeeping, no I/O: [`KubernetesSource::run`] drives it.
#[derive(Default)]
pub struct SecretDocuments {
    current: BTreeMap<String, SecretEntry>,
    /// Secrets of a list in progress; swapped in whole when the list is complete.
    relist: Option<BTreeMap<String, SecretEntry>>,
    synced: bool,
}

impl SecretDocuments {
    /// True once a full list was completed.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Secrets known.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// No Secret known.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Secrets whose current `tenant.yaml` is missing or invalid.
    pub fn invalid(&self) -> usize {
        self.current.values().filter(|e| e.broken).count()
    }

    /// A (re)list starts: Secrets are collected aside until it completes, while the
    /// current set keeps being served.
    pub fn begin_relist(&mut self) {
        self.relist = Some(BTreeMap::new());
    }

    /// A Secret of the list in progress.
    pub fn relist_apply(&mut self, secret: &Secret) -> SecretRead {
        let name = name_of(secret);
        let (entry, read) = read_secret(&name, secret, self.current.get(&name));
        self.relist
            .get_or_insert_with(BTreeMap::new)
            .insert(name, entry);
        read
    }

    /// The list is complete: it replaces the current set (Secrets not listed are gone).
    pub fn finish_relist(&mut self) {
        self.current = self.relist.take().unwrap_or_default();
        self.synced = true;
    }

    /// A Secret was added or modified.
    pub fn apply(&mut self, secret: &Secret) -> SecretRead {
        let name = name_of(secret);
        let (entry, read) = read_secret(&name, secret, self.current.get(&name));
        self.current.insert(name, entry);
        read
    }

    /// A Secret was deleted (or no longer matches the selector). True if it served a tenant.
    pub fn delete(&mut self, name: &str) -> bool {
        self.current
            .remove(name)
            .is_some_and(|entry| entry.doc.is_some())
    }

    /// The documents to serve, in Secret name order. A document whose `externalId` an
    /// earlier Secret already uses is left out and reported.
    pub fn documents(&self) -> (Vec<TenantDocument>, Vec<SecretProblem>) {
        let mut docs: Vec<TenantDocument> = Vec::new();
        let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, entry) in &self.current {
            let Some(doc) = &entry.doc else { continue };
            match owners.get(doc.external_id.as_str()) {
                Some(owner) => problems.push(SecretProblem {
                    name: name.clone(),
                    reason: format!(
                        "externalId {:?} is already used by Secret {owner}",
                        doc.external_id
                    ),
                }),
                None => {
                    owners.insert(&doc.external_id, name);
                    docs.push(doc.clone());
                }
            }
        }
        (docs, problems)
    }
}

/// Reads `secret`'s document against its `previous` entry.
fn read_secret(
    name: &str,
    secret: &Secret,
    previous: Option<&SecretEntry>,
) -> (SecretEntry, SecretRead) {
    let raw = secret
        .data
        .as_ref()
        .and_then(|data| data.get(DOCUMENT_KEY))
        .map(|bytes| bytes.0.clone());
    if let Some(previous) = previous
        && previous.raw == raw
    {
        // Unchanged (labels, annotations, a relist): nothing to parse, nothing new to log.
        return (previous.clone(), SecretRead::default());
    }
    let parsed = match &raw {
        None => Err(format!("the Secret has no `{DOCUMENT_KEY}` data key")),
        Some(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| format!("`{DOCUMENT_KEY}` is not UTF-8 text"))
            .and_then(|text| TenantDocument::parse(text).map_err(|e| e.to_string())),
    };
    let last_valid = previous.and_then(|p| p.doc.clone());
    match parsed {
        Ok(doc) => {
            let changed = last_valid.as_ref() != Some(&doc);
            let entry = SecretEntry {
                raw,
                doc: Some(doc),
                broken: false,
            };
            (
                entry,
                SecretRead {
                    changed,
                    problem: None,
                },
            )
        }
        Err(mut reason) => {
            if last_valid.is_some() {
                reason.push_str("; keeping its last valid version");
            }
            let entry = SecretEntry {
                raw,
                doc: last_valid,
                broken: true,
            };
            let problem = SecretProblem {
                name: name.to_string(),
                reason,
            };
            (
                entry,
                SecretRead {
                    changed: false,
                    problem: Some(problem),
                },
            )
        }
    }
}

fn name_of(secret: &Secret) -> String {
    secret.metadata.name.clone().unwrap_or_default()
}

/// Checks that `fleet` can be a label value (and so a selector term): 1 to 63 characters,
/// alphanumeric at both ends, `-`, `_` and `.` inside.
fn check_fleet(fleet: &str) -> Result<(), KubernetesSourceError> {
    let invalid = |reason| {
        Err(KubernetesSourceError::InvalidFleet {
            fleet: fleet.to_string(),
            reason,
        })
    };
    let bytes = fleet.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return invalid("it is empty");
    };
    if bytes.len() > 63 {
        return invalid("it is longer than 63 characters");
    }
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return invalid("it must start and end with a letter or digit");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return invalid("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// An RFC 1123 label, as namespace names are.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// rustls needs one process-wide crypto provider; pick ring explicitly so that a build in
/// which another crate also enables aws-lc-rs cannot leave the choice ambiguous (which would
/// make the client fail to build its TLS configuration).
fn install_crypto_provider() {
    // Err means a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Capped exponential backoff with jitter for API server failures.
struct Backoff {
    next: Duration,
    last_failure: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
            last_failure: None,
        }
    }
}

impl Backoff {
    /// A failure: how long to wait before trying again.
    fn failed(&mut self) -> Duration {
        let now = Instant::now();
        if self
            .last_failure
            .is_some_and(|at| now.duration_since(at) > BACKOFF_RESET)
        {
            self.next = BACKOFF_START;
        }
        self.last_failure = Some(now);
        let delay = self.next.mul_f64(rand::random_range(0.8..1.2));
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    /// Something came through: the next failure starts the backoff over.
    fn succeeded(&mut self) {
        self.next = BACKOFF_START;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn secret(name: &str, document: Option<&str>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            data: document.map(|d| {
                [(DOCUMENT_KEY.to_string(), ByteString(d.as_bytes().to_vec()))]
                    .into_iter()
                    .collect()
            }),
            ..Secret::default()
        }
    }

    fn doc(id: &str, pool_size: u32) -> String {
        format!(
            "externalId: {id}\nupstream: {{host: h}}\ndefaultPoolSize: {pool_size}\nusers: [{{name: u, password: p}}]\n"
        )
    }

    fn ids(store: &SecretDocuments) -> Vec<String> {
        store
            .documents()
            .0
            .into_iter()
            .map(|d| d.external_id)
            .collect()
    }

    #[test]
    fn a_list_replaces_the_set_only_when_complete() {
        let mut store = SecretDocuments::default();
        store.begin_relist();
        let read = store.relist_apply(&secret("a", Some(&doc("a", 1))));
        assert!(read.changed && read.problem.is_none());
        assert!(
            ids(&store).is_empty(),
            "nothing served before the list is complete"
        );
        assert!(!store.is_synced());
        store.finish_relist();
        assert!(store.is_synced());
        assert_eq!(ids(&store), ["a"]);

        // A relist that no longer has `a` drops it; until it completes, `a` is served.
        store.begin_relist();
        store.relist_apply(&secret("b", Some(&doc("b", 1))));
        assert_eq!(ids(&store), ["a"]);
        store.finish_relist();
        assert_eq!(ids(&store), ["b"]);
    }

    #[test]
    fn broken_documents_keep_the_last_valid_version() {
        let mut store = SecretDocuments::default();
        store.begin_relist();
        store.finish_relist();
        assert!(store.apply(&secret("a", Some(&doc("a", 1)))).changed);
        let read = store.apply(&secret("a", Some("externalId: [")));
        assert!(!read.changed);
        let problem = read.problem.expect("a problem");
        assert_eq!(problem.name, "a");
        assert!(problem.reason.contains("last valid"), "{problem:?}");
        assert_eq!(ids(&store), ["a"]);
        assert_eq!(store.invalid(), 1);
        // The same broken content again (a relist, a label change) is not reported twice.
        assert_eq!(
            store.apply(&secret("a", Some("externalId: ["))),
            SecretRead::default()
        );
        // A missing key is a problem too; the last valid version stays.
        let read = store.apply(&secret("a", None));
        assert!(
            read.problem
                .expect("problem")
                .reason
                .contains("no `tenant.yaml`")
        );
        assert_eq!(ids(&store), ["a"]);
        // Fixed: served again, and counted as a change only if the document differs.
        assert!(!store.apply(&secret("a", Some(&doc("a", 1)))).changed);
        assert!(store.apply(&secret("a", Some(&doc("a", 2)))).changed);
        assert_eq!(store.invalid(), 0);
        // A Secret that was never valid serves nothing.
        let read = store.apply(&secret("b", Some("nope: 1")));
        assert!(!read.problem.expect("problem").reason.contains("last valid"));
        assert_eq!(ids(&store), ["a"]);
        assert!(!store.delete("b"), "b served nothing");
        assert!(store.delete("a"));
        assert!(ids(&store).is_empty());
    }

    #[test]
    fn duplicate_external_ids_first_secret_by_name_wins() {
        let mut store = SecretDocuments::default();
        store.begin_relist();
        store.relist_apply(&secret("zz", Some(&doc("same", 1))));
        store.relist_apply(&secret("aa", Some(&doc("same", 2))));
        store.finish_relist();
        let (docs, problems) = store.documents();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].default_pool_size, 2, "Secret aa wins");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].name, "zz");
        assert!(problems[0].reason.contains("Secret aa"), "{problems:?}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_fleet("main").is_ok());
        assert!(check_fleet("a.b_c-9").is_ok());
        for bad in ["", "-a", "a-", "a b", "a=b", &"x".repeat(64)] {
            assert!(check_fleet(bad).is_err(), "{bad:?}");
        }
        assert!(is_dns_label("team-a"));
        assert!(!is_dns_label("Team"));
        assert!(!is_dns_label("a_b"));
    }

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            last = backoff.failed();
        }
        assert!(last <= BACKOFF_MAX.mul_f64(1.2) && last >= BACKOFF_MAX.mul_f64(0.8));
        backoff.succeeded();
        assert!(backoff.failed() <= BACKOFF_START.mul_f64(1.2));
    }
}
