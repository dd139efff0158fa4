//! `helm` for pgfleet's chart tests, built from its published Go module
//! (`helm.sh/helm/v4`) by `testkit/helm/build-helm.sh` and cached under
//! `${PGFLEET_CACHE:-$HOME/.cache/pgfleet}/helm/<version>/helm`.
//!
//! Tests never build it themselves and never skip without it: [`helm_binary`]
//! panics with the command that builds it. `.ci/run` builds it before the
//! tests (3 to 7 minutes the first time on two cores, module downloads
//! included; instant once cached).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The helm version the tests run, as `helm version` reports it. Kept in step
/// with `HELM_VERSION` in `testkit/helm/build-helm.sh`.
pub const HELM_VERSION: &str = "v4.3.1";

/// Path of `build-helm.sh` in this crate.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("helm")
        .join("build-helm.sh")
}

/// The cached helm binary.
///
/// Panics, naming the command to run, when it has not been built (or reports
/// another version than [`HELM_VERSION`]).
pub fn helm_binary() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(find_helm) {
        Ok(path) => path,
        Err(err) => panic!("pgfleet-testkit: {err}"),
    }
}

/// The output of one helm run.
#[derive(Debug, Clone)]
pub struct HelmOutput {
    /// Whether helm exited with status 0.
    pub success: bool,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Run the cached helm with `args`, without a kubeconfig (chart tests only
/// lint and render; they apply with kubectl), and capture its output.
pub fn run_helm(args: &[&str]) -> HelmOutput {
    let bin = helm_binary();
    let output = Command::new(bin)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HELM_KUBECONTEXT", "")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    HelmOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Like [`run_helm`], returning stdout, or panicking with the command and
/// everything helm printed when it fails.
pub fn helm(args: &[&str]) -> String {
    let out = run_helm(args);
    if !out.success {
        panic!(
            "helm {} failed:\n--- stderr ---\n{}\n--- stdout ---\n{}",
            args.join(" "),
            out.stderr.trim(),
            out.stdout.trim()
        );
    }
    out.stdout
}

fn find_helm() -> Result<PathBuf, String> {
    let script = build_script();
    let build_hint = format!(
        "build it with `{}` (needs Go 1.26+ and the Go module proxy; a few minutes the first \
         time, cached afterwards; .ci/run does this before the tests)",
        script.display()
    );
    let output = Command::new("bash")
        .arg(&script)
        .arg("--print-path")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --print-path failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !path.is_file() {
        return Err(format!(
            "helm {HELM_VERSION} is not built ({} does not exist): {build_hint}",
            path.display()
        ));
    }
    let version = Command::new(&path)
        .args(["version", "--template", "{{.Version}}"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}; {build_hint}", path.display()))?;
    let reported = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if !version.status.success() || reported != HELM_VERSION {
        return Err(format!(
            "{} reports version {reported:?}, want {HELM_VERSION}: {build_hint}",
            path.display()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_script_is_in_the_crate_and_pins_the_same_version() {
        let script = build_script();
        let text = std::fs::read_to_string(&script)
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            text.contains(&format!("\nHELM_VERSION={HELM_VERSION}\n")),
            "{} must pin HELM_VERSION={HELM_VERSION}",
            script.display()
        );
    }
}
