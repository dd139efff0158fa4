//! Tenant documents from a directory: one YAML or JSON file per tenant, watched for changes
//! and re-read on SIGHUP.
//!
//! A file that does not parse or validate is logged with its name and reason and skipped; the
//! other tenants are unaffected.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use pgfleet_crds::TenantDocument;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::TenantRegistry;
use crate::pool::Pools;

/// A file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// Reads every `*.yaml`, `*.yml` and `*.json` file in `dir` (not hidden, not recursive), in
/// name order. A second document with an `externalId` already seen is a problem, not a load.
pub fn load_dir(dir: &Path) -> Result<(Vec<TenantDocument>, Vec<LoadProblem>), std::io::Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
                && p.is_file()
        })
        .collect();
    paths.sort();
    let mut docs: Vec<TenantDocument> = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| TenantDocument::parse(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(doc) if docs.iter().any(|d| d.external_id == doc.external_id) => {
                problems.push(LoadProblem {
                    reason: format!(
                        "externalId {:?} is already used by another file",
                        doc.external_id
                    ),
                    path,
                })
            }
            Ok(doc) => docs.push(doc),
            Err(reason) => problems.push(LoadProblem { path, reason }),
        }
    }
    Ok((docs, problems))
}

/// Loads the directory into the registry and logs what changed.
pub async fn reload(dir: &Path, registry: &TenantRegistry, pools: &Pools) {
    match load_dir(dir) {
        Ok((docs, problems)) => {
            for p in &problems {
                tracing::error!(file = %p.path.display(), reason = %p.reason, "tenant document not loaded");
            }
            let s = registry.apply(docs, pools).await;
            tracing::info!(
                added = ?s.added, changed = ?s.changed, removed = ?s.removed, unchanged = s.unchanged,
                invalid = problems.len(), "tenants loaded"
            );
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read tenants directory")
        }
    }
}

/// Reloads on every change in `dir` (debounced) and on SIGHUP until shutdown. The caller
/// does the first load, so clients are not accepted before tenants exist.
pub async fn watch(
    dir: PathBuf,
    registry: Arc<TenantRegistry>,
    pools: Arc<Pools>,
    shutdown: CancellationToken,
) -> Result<(), notify::Error> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watch_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = watch_tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    spawn_sighup_forwarder(tx, shutdown.clone());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            got = rx.recv() => if got.is_none() { return Ok(()) },
        }
        // Editors and `kubectl cp` write in several steps: let them finish.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while rx.try_recv().is_ok() {}
        reload(&dir, &registry, &pools).await;
    }
}

#[cfg(unix)]
fn spawn_sighup_forwarder(tx: mpsc::Sender<()>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload by editing files instead");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() { return; }
                    tracing::info!("SIGHUP: reloading tenants");
                    let _ = tx.try_send(());
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_sighup_forwarder(_tx: mpsc::Sender<()>, _shutdown: CancellationToken) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_reported_and_the_rest_load() {
        let dir = std::env::temp_dir().join(format!("pgfleet-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let good = "externalId: a\nupstream: {host: h}\nusers: [{name: u, password: p}]\n";
        std::fs::write(dir.join("a.yaml"), good).expect("write");
        std::fs::write(dir.join("b.yaml"), "externalId: [").expect("write");
        std::fs::write(
            dir.join("c.json"),
            r#"{"externalId":"a","upstream":{"host":"h"},"users":[{"name":"u","password":"p"}]}"#,
        )
        .expect("write");
        std::fs::write(dir.join("d.txt"), "ignored").expect("write");
        std::fs::write(dir.join(".e.yaml"), "ignored").expect("write");
        let (docs, problems) = load_dir(&dir).expect("load");
        assert_eq!(docs.len(), 1);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].path.ends_with("b.yaml"));
        assert!(
            problems[1].reason.contains("already used"),
            "{:?}",
            problems[1]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
