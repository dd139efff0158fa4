//! Tenant documents from a directory: one YAML or JSON file per tenant, watched for changes
//! and re-read on SIGHUP.
//!
//! A file that does not parse or validate is logged with its name and reason and skipped; the
//! other tenants are unaffected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
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

/// A document and the file it came from.
pub type FileDocument = (PathBuf, TenantDocument);

/// Reads every `*.yaml`, `*.yml` and `*.json` file in `dir` (not hidden, not recursive), in
/// name order. A second document with an `externalId` already seen is a problem, not a load.
pub fn load_dir(dir: &Path) -> Result<(Vec<FileDocument>, Vec<LoadProblem>), std::io::Error> {
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
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| TenantDocument::parse(&text).map_err(|e| e.to_string()))
        {
            Ok(doc) => docs.push((path, doc)),
            Err(reason) => problems.push(LoadProblem { path, reason }),
        }
    }
    Ok((docs, problems))
}

/// A directory of tenant documents, remembering each file's last valid version.
///
/// A file that stops parsing (a typo in an edit, a half-written file) keeps serving its last
/// valid version, as PgBouncer keeps its last good config: an edit mistake never takes a
/// tenant offline. Deleting the file removes the tenant.
pub struct DirectorySource {
    dir: PathBuf,
    last_good: Mutex<HashMap<PathBuf, TenantDocument>>,
}

impl DirectorySource {
    /// A source over `dir`.
    pub fn new(dir: PathBuf) -> Self {
        DirectorySource {
            dir,
            last_good: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the directory: valid files, plus the last valid version of files that are now
    /// broken, and the problems found.
    pub fn load(&self) -> Result<(Vec<TenantDocument>, Vec<LoadProblem>), std::io::Error> {
        let (loaded, mut problems) = load_dir(&self.dir)?;
        let mut last_good = self.last_good.lock();
        let mut next = HashMap::new();
        for (path, doc) in loaded {
            next.insert(path, doc);
        }
        for problem in &mut problems {
            if let Some(old) = last_good.get(&problem.path) {
                problem.reason.push_str("; keeping its last valid version");
                next.insert(problem.path.clone(), old.clone());
            }
        }
        let mut paths: Vec<&PathBuf> = next.keys().collect();
        paths.sort();
        let mut docs: Vec<TenantDocument> = Vec::new();
        for path in paths {
            let doc = &next[path];
            if docs.iter().any(|d| d.external_id == doc.external_id) {
                problems.push(LoadProblem {
                    path: path.clone(),
                    reason: format!(
                        "externalId {:?} is already used by another file",
                        doc.external_id
                    ),
                });
            } else {
                docs.push(doc.clone());
            }
        }
        *last_good = next;
        Ok((docs, problems))
    }

    /// Loads the directory into the registry and logs what changed.
    pub async fn reload(&self, registry: &TenantRegistry, pools: &Pools) {
        match self.load() {
            Ok((docs, problems)) => {
                for p in &problems {
                    tracing::error!(file = %p.path.display(), reason = %p.reason, "tenant document not loaded");
                }
                let s = registry.apply(docs, pools).await;
                tracing::info!(
                    added = %s.added.join(","), changed = %s.changed.join(","), removed = %s.removed.join(","),
                    unchanged = s.unchanged, invalid = problems.len(), "tenants loaded"
                );
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read tenants directory")
            }
        }
    }

    /// Reloads on every change in the directory (debounced) and on each `reload` signal
    /// (SIGHUP) until shutdown. The caller does the first load, so clients are not accepted
    /// before tenants exist.
    pub async fn watch(
        self: Arc<Self>,
        registry: Arc<TenantRegistry>,
        pools: Arc<Pools>,
        mut reload_signal: mpsc::Receiver<()>,
        shutdown: CancellationToken,
    ) -> Result<(), notify::Error> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| changes_content(&e.kind)) {
                    let _ = tx.try_send(());
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                got = rx.recv() => if got.is_none() { return Ok(()) },
                got = reload_signal.recv() => {
                    if got.is_none() { return Ok(()) }
                    tracing::info!("SIGHUP: reloading tenants");
                }
            }
            // Editors and `kubectl cp` write in several steps: let them finish.
            crate::timer::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            self.reload(&registry, &pools).await;
        }
    }
}

/// True for events that can change what the directory holds. Opening and reading a file is
/// an event too (inotify's `IN_OPEN`, `IN_CLOSE_NOWRITE`), and a reload reads every file: if
/// those counted, each reload would set off the next, forever.
fn changes_content(kind: &notify::EventKind) -> bool {
    !matches!(kind, notify::EventKind::Access(_))
}

/// Turns SIGHUP into reload requests. Installed before the first load, so an early SIGHUP
/// reloads instead of killing the process with the signal's default action.
#[cfg(unix)]
pub fn sighup_reloads(shutdown: CancellationToken) -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() { return; }
                    let _ = tx.try_send(());
                }
            }
        }
    });
    Ok(rx)
}

/// No SIGHUP off Unix: a channel that never fires.
#[cfg(not(unix))]
pub fn sighup_reloads(_shutdown: CancellationToken) -> std::io::Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel(1);
    std::mem::forget(tx);
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "externalId: a\nupstream: {host: h}\nusers: [{name: u, password: p}]\n";

    #[test]
    fn bad_files_are_reported_and_the_rest_load() {
        let dir = std::env::temp_dir().join(format!("pgfleet-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.yaml"), GOOD).expect("write");
        std::fs::write(dir.join("b.yaml"), "externalId: [").expect("write");
        let dup =
            r#"{"externalId":"a","upstream":{"host":"h"},"users":[{"name":"u","password":"p"}]}"#;
        std::fs::write(dir.join("c.json"), dup).expect("write");
        std::fs::write(dir.join("d.txt"), "ignored").expect("write");
        std::fs::write(dir.join(".e.yaml"), "ignored").expect("write");
        let source = DirectorySource::new(dir.clone());
        let (docs, problems) = source.load().expect("load");
        assert_eq!(docs.len(), 1);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].path.ends_with("b.yaml"));
        assert!(
            problems[1].reason.contains("already used"),
            "{:?}",
            problems[1]
        );

        // A file that breaks keeps serving its last valid version; a deleted one is gone.
        std::fs::remove_file(dir.join("c.json")).expect("rm");
        std::fs::write(dir.join("a.yaml"), "externalId: [broken").expect("write");
        let (docs, problems) = source.load().expect("load");
        assert_eq!(docs.len(), 1, "a.yaml keeps its last valid version");
        assert!(
            problems
                .iter()
                .any(|p| p.path.ends_with("a.yaml") && p.reason.contains("last valid"))
        );
        std::fs::remove_file(dir.join("a.yaml")).expect("rm");
        let (docs, _) = source.load().expect("load");
        assert!(docs.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
