//! The `pgfleet-operator` binary against a real kube-apiserver (testkit's control plane), run
//! as processes the way a Deployment runs them: two replicas elect one leader, which alone
//! reconciles; the standby takes over when the leader is killed (after the Lease expires) or
//! stops (at once: the Lease is released); a leader that loses the Lease or the API exits
//! non-zero before anyone else takes over; `--no-leader-election` runs the controllers at
//! once; `/readyz` waits for the API server; a missing Lease namespace is a clear error;
//! `--help` documents every flag.
//!
//! Every process runs inside a guard that kills it on drop (and prints its log when the test
//! failed), and every wait is bounded.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    TcpProxy, apiserver_addr, cp, create_fleet, deployment_exists, fresh_namespace, http_get,
    kubeconfig_via, lease_holder, lease_transitions, sample, tail, unique, wait_until,
};

const BIN: &str = env!("CARGO_BIN_EXE_pgfleet-operator");
const LEASE: &str = "pgfleet-operator";
/// The longest a reconcile or a start may take here.
const WAIT: Duration = Duration::from_secs(30);
/// Short Lease timings for the failover tests: duration, renew deadline, retry period.
const FAST: [&str; 3] = ["3s", "2s", "500ms"];
const LEADER: &str = "pgfleet_operator_leader";
const LEADER_TRANSITIONS: &str = "pgfleet_operator_leader_transitions_total";
const FLEET_RECONCILES: &str =
    "pgfleet_operator_reconciles_total{controller=\"fleet\",result=\"success\"}";

/// A running `pgfleet-operator`, killed (SIGKILL) and reaped on drop.
struct Operator {
    child: Child,
    identity: String,
    log: PathBuf,
    admin: SocketAddr,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "--- log of {} ({}) ---\n{}",
                self.identity,
                self.log.display(),
                tail(&self.log, 60)
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Where and how a test's operators run.
#[derive(Clone)]
struct Setup {
    kubeconfig: PathBuf,
    lease_namespace: Option<String>,
    watch_namespace: String,
    timings: [&'static str; 3],
}

impl Setup {
    fn new(timings: [&'static str; 3]) -> Setup {
        Setup {
            kubeconfig: cp().kubeconfig().to_path_buf(),
            lease_namespace: Some(fresh_namespace("pgf-op-lease")),
            watch_namespace: fresh_namespace("pgf-op-watch"),
            timings,
        }
    }

    fn lease_namespace(&self) -> &str {
        self.lease_namespace.as_deref().expect("a lease namespace")
    }

    fn holder(&self) -> Option<String> {
        lease_holder(self.lease_namespace(), LEASE)
    }

    /// Starts an operator with identity `identity` and waits until its admin server listens.
    fn start(&self, identity: &str, extra: &[&str]) -> Operator {
        let mut command = self.command(identity, extra);
        let log = std::env::temp_dir().join(format!("{}.log", unique(identity)));
        let file = std::fs::File::create(&log).expect("log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let child = command.spawn().expect("spawn pgfleet-operator");
        let mut operator = Operator {
            child,
            identity: identity.to_string(),
            log,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        operator.admin = wait_until(
            &format!("{identity} to log its admin address"),
            WAIT,
            || tail(&operator.log, 40),
            || {
                if let Ok(Some(status)) = operator.child.try_wait() {
                    panic!(
                        "{identity} exited ({status}) before listening:\n{}",
                        tail(&operator.log, 40)
                    );
                }
                admin_addr(&operator.log)
            },
        );
        operator
    }

    fn command(&self, identity: &str, extra: &[&str]) -> Command {
        let [lease, renew, retry] = self.timings;
        let mut command = Command::new(BIN);
        command
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(["--namespace", &self.watch_namespace])
            .args(["--pooler-image", "registry.invalid/pgfleet-pooler:test"])
            .args(["--identity", identity])
            .args(["--lease-duration", lease])
            .args(["--renew-deadline", renew])
            .args(["--retry-period", retry])
            .args(["--log-format", "json", "--log", "info"])
            .args(extra)
            .env("KUBECONFIG", &self.kubeconfig);
        for var in [
            "POD_NAMESPACE",
            "POD_NAME",
            "PGFLEET_OPERATOR_ADMIN_ADDR",
            "PGFLEET_POOLER_IMAGE",
            "PGFLEET_WATCH_NAMESPACE",
            "PGFLEET_LEADER_ELECTION",
            "PGFLEET_LOG_FORMAT",
            "PGFLEET_LOG",
        ] {
            command.env_remove(var);
        }
        if let Some(ns) = &self.lease_namespace {
            command.args(["--lease-namespace", ns]);
        }
        command
    }
}

/// The address in the "admin server listening" line of a JSON log.
fn admin_addr(log: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(log).ok()?.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"] == "admin server listening")
            .then(|| v["addr"].as_str()?.parse().ok())
            .flatten()
    })
}

impl Operator {
    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).unwrap_or_else(|e| {
            panic!(
                "GET {path} on {}: {e}\n{}",
                self.identity,
                tail(&self.log, 40)
            )
        })
    }

    fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.get("/metrics").1, series)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn context(&self) -> String {
        format!("--- {} ---\n{}", self.identity, tail(&self.log, 40))
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let identity = self.identity.clone();
        let log = self.log.clone();
        wait_until(
            &format!("{identity} to exit"),
            timeout,
            || tail(&log, 40),
            || self.child.try_wait().expect("try_wait"),
        )
    }

    fn assert_healthy(&self) {
        assert_eq!(self.get("/healthz").0, 200, "{}", self.context());
    }

    /// Waits until `/readyz` is 200 and says `role`.
    fn wait_ready_as(&self, role: &str) {
        let want = format!("ready: {role}");
        wait_until(
            &format!("{} to be ready as {role}", self.identity),
            WAIT,
            || self.context(),
            || {
                let (status, body) = http_get(self.admin, "/readyz").ok()?;
                (status == 200 && body.contains(&want)).then_some(())
            },
        );
    }

    /// Waits until the `leader` gauge is `value`.
    fn wait_leader_gauge(&self, value: f64) {
        wait_until(
            &format!("{} to report {LEADER} {value}", self.identity),
            WAIT,
            || self.context(),
            || (self.metric(LEADER) == Some(value)).then_some(()),
        );
    }
}

/// Waits until a fleet created now in `setup`'s watch namespace gets its Deployment.
fn assert_reconciled(setup: &Setup, fleet: &str, context: impl Fn() -> String) {
    create_fleet(&setup.watch_namespace, fleet);
    wait_until(
        &format!(
            "Deployment {}/{fleet} (the leader reconciles the fleet)",
            setup.watch_namespace
        ),
        WAIT,
        context,
        || deployment_exists(&setup.watch_namespace, fleet).then_some(()),
    );
}

#[test]
fn two_replicas_elect_one_leader_and_the_standby_takes_over_after_a_sigkill() {
    let setup = Setup::new(FAST);
    let a = setup.start("op-a", &[]);
    let b = setup.start("op-b", &[]);
    let both = || format!("{}\n{}", a.context(), b.context());

    let holder = wait_until("a Lease holder", WAIT, both, || {
        setup.holder().filter(|h| !h.is_empty())
    });
    let (leader, standby) = match holder.as_str() {
        "op-a" => (a, b),
        "op-b" => (b, a),
        other => panic!("the Lease is held by {other:?}, neither replica"),
    };
    leader.wait_leader_gauge(1.0);
    leader.wait_ready_as("leader");
    standby.wait_ready_as("standby");
    // Exactly one leader, steadily: the Lease and both gauges agree over several renewals.
    for _ in 0..8 {
        assert_eq!(setup.holder().as_deref(), Some(leader.identity.as_str()));
        assert_eq!(leader.metric(LEADER), Some(1.0), "{}", leader.context());
        assert_eq!(standby.metric(LEADER), Some(0.0), "{}", standby.context());
        thread::sleep(Duration::from_millis(250));
    }
    leader.assert_healthy();
    standby.assert_healthy();
    assert_eq!(leader.metric(LEADER_TRANSITIONS), Some(1.0));
    assert_eq!(standby.metric(LEADER_TRANSITIONS), Some(0.0));

    // The leader reconciles, and counts it; the standby runs no controller.
    assert_reconciled(&setup, "first", || leader.context());
    wait_until(
        "a successful fleet reconcile in the leader's /metrics",
        WAIT,
        || leader.get("/metrics").1,
        || leader.metric(FLEET_RECONCILES).filter(|n| *n > 0.0),
    );
    assert_eq!(
        standby.metric(FLEET_RECONCILES).unwrap_or(0.0),
        0.0,
        "the standby must not reconcile"
    );
    let transitions_before = lease_transitions(setup.lease_namespace(), LEASE);

    // SIGKILL: no release; the standby waits for the Lease to expire (3 s unrenewed).
    let mut leader = leader;
    leader.child.kill().expect("SIGKILL the leader");
    let killed = Instant::now();
    leader.wait_exit(Duration::from_secs(5));
    wait_until(
        "the standby to take the Lease over",
        WAIT,
        || standby.context(),
        || (setup.holder().as_deref() == Some(standby.identity.as_str())).then_some(()),
    );
    let took = killed.elapsed();
    // The last renewal was at most one retry period (500 ms) before the kill.
    assert!(
        took >= Duration::from_millis(2_400),
        "the standby took over {took:?} after the kill, before the 3 s Lease could expire"
    );
    assert_eq!(
        lease_transitions(setup.lease_namespace(), LEASE),
        transitions_before + 1
    );
    standby.wait_leader_gauge(1.0);
    standby.wait_ready_as("leader");
    assert_eq!(standby.metric(LEADER_TRANSITIONS), Some(1.0));
    standby.assert_healthy();
    assert_reconciled(&setup, "second", || standby.context());
}

#[test]
fn sigterm_releases_the_lease_and_the_standby_takes_over_at_once() {
    // A long Lease: waiting for it to expire would take 10 s.
    let setup = Setup::new(["10s", "6s", "500ms"]);
    let mut leader = setup.start("op-first", &[]);
    wait_until(
        "op-first to hold the Lease",
        WAIT,
        || leader.context(),
        || (setup.holder().as_deref() == Some("op-first")).then_some(()),
    );
    leader.wait_ready_as("leader");
    let standby = setup.start("op-second", &[]);
    standby.wait_ready_as("standby");
    assert_reconciled(&setup, "before", || leader.context());

    leader.signal("-TERM");
    let signalled = Instant::now();
    let status = leader.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", leader.context());
    assert!(
        leader.log_text().contains("released the Lease"),
        "{}",
        leader.context()
    );
    wait_until(
        "the standby to take the released Lease",
        WAIT,
        || standby.context(),
        || (setup.holder().as_deref() == Some("op-second")).then_some(()),
    );
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "takeover took {took:?} after SIGTERM; a released Lease needs no expiry (10 s)"
    );
    standby.wait_leader_gauge(1.0);
    assert_reconciled(&setup, "after", || standby.context());
}

#[test]
fn a_leader_that_loses_the_lease_exits_non_zero() {
    let setup = Setup::new(["30s", "20s", "500ms"]);
    let mut leader = setup.start("op-robbed", &[]);
    wait_until(
        "op-robbed to hold the Lease",
        WAIT,
        || leader.context(),
        || (setup.holder().as_deref() == Some("op-robbed")).then_some(()),
    );
    leader.wait_ready_as("leader");
    cp().kubectl(&[
        "patch",
        "lease",
        LEASE,
        "-n",
        setup.lease_namespace(),
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"intruder"}}"#,
    ]);
    let status = leader.wait_exit(Duration::from_secs(10));
    assert!(
        !status.success(),
        "must exit non-zero:\n{}",
        leader.context()
    );
    let log = leader.log_text();
    assert!(log.contains("lost leadership"), "{}", leader.context());
    assert!(log.contains("intruder"), "{}", leader.context());
    // It left the Lease alone.
    assert_eq!(setup.holder().as_deref(), Some("intruder"));
}

#[test]
fn a_leader_cut_off_from_the_api_exits_before_the_standby_takes_over() {
    let mut proxy = TcpProxy::start(apiserver_addr());
    let setup = Setup::new(FAST);
    let via_proxy = Setup {
        kubeconfig: kubeconfig_via(proxy.addr()),
        ..setup.clone()
    };
    let mut leader = via_proxy.start("op-isolated", &[]);
    wait_until(
        "op-isolated to hold the Lease",
        WAIT,
        || leader.context(),
        || (setup.holder().as_deref() == Some("op-isolated")).then_some(()),
    );
    leader.wait_ready_as("leader");
    let standby = setup.start("op-connected", &[]);
    standby.wait_ready_as("standby");

    proxy.cut();
    let cut = Instant::now();
    // Watch both at once: the old leader must be gone before the new one holds the Lease.
    let mut exited: Option<(Duration, ExitStatus)> = None;
    let logs = (leader.log.clone(), standby.log.clone());
    let took_over = wait_until(
        "the isolated leader to exit and the standby to take over",
        WAIT,
        || format!("{}\n---\n{}", tail(&logs.0, 40), tail(&logs.1, 40)),
        || {
            if exited.is_none()
                && let Some(status) = leader.child.try_wait().expect("try_wait")
            {
                exited = Some((cut.elapsed(), status));
            }
            let holder = setup.holder();
            if holder.as_deref() == Some("op-connected") {
                assert!(
                    exited.is_some(),
                    "the standby took over while the isolated leader still ran:\n{}",
                    tail(&logs.0, 40)
                );
            }
            exited
                .filter(|_| holder.as_deref() == Some("op-connected"))
                .map(|(exit_after, status)| (exit_after, status, cut.elapsed()))
        },
    );
    let (exit_after, status, takeover_after) = took_over;
    assert!(
        !status.success(),
        "must exit non-zero:\n{}",
        leader.context()
    );
    assert!(
        leader.log_text().contains("lost leadership"),
        "{}",
        leader.context()
    );
    assert!(
        exit_after < Duration::from_secs(3),
        "the isolated leader exited {exit_after:?} after the cut; the renew deadline is 2 s"
    );
    assert!(exit_after <= takeover_after);
    standby.wait_leader_gauge(1.0);
    assert_reconciled(&setup, "after-cut", || standby.context());
}

#[test]
fn without_leader_election_the_controllers_run_at_once() {
    let setup = Setup {
        lease_namespace: None,
        ..Setup::new(FAST)
    };
    let mut operator = setup.start("op-alone", &["--no-leader-election"]);
    operator.wait_ready_as("leader");
    operator.wait_leader_gauge(1.0);
    assert_reconciled(&setup, "solo", || operator.context());
    wait_until(
        "a successful fleet reconcile in /metrics",
        WAIT,
        || operator.get("/metrics").1,
        || operator.metric(FLEET_RECONCILES).filter(|n| *n > 0.0),
    );
    let metrics = operator.get("/metrics").1;
    for series in [
        "pgfleet_operator_reconcile_duration_seconds_count{controller=\"fleet\"}",
        LEADER_TRANSITIONS,
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(
        !operator.log_text().contains("competing for leadership"),
        "{}",
        operator.context()
    );
    operator.signal("-TERM");
    let status = operator.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", operator.context());
}

#[test]
fn ready_only_once_the_api_server_answers() {
    // An API server address that refuses connections, until a proxy opens there.
    let mut proxy = TcpProxy::start(apiserver_addr());
    let api = proxy.addr();
    proxy.cut();
    let setup = Setup {
        kubeconfig: kubeconfig_via(api),
        ..Setup::new(FAST)
    };
    let mut operator = setup.start("op-early", &[]);
    wait_until(
        "/readyz to say the API has not answered",
        WAIT,
        || operator.context(),
        || {
            let (status, body) = http_get(operator.admin, "/readyz").ok()?;
            (status == 503 && body.contains("Kubernetes API")).then_some(())
        },
    );
    operator.assert_healthy();
    assert_eq!(operator.metric(LEADER), Some(0.0));

    let _proxy = TcpProxy::start_on(api, apiserver_addr());
    operator.wait_ready_as("leader");
    operator.wait_leader_gauge(1.0);

    operator.signal("-TERM");
    let status = operator.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", operator.context());
}

#[test]
fn a_missing_lease_namespace_is_a_clear_error() {
    if Path::new(pgfleet_operator::config::SERVICE_ACCOUNT_NAMESPACE_FILE).exists() {
        eprintln!("skipped: this machine has a ServiceAccount namespace file");
        return;
    }
    let setup = Setup {
        lease_namespace: None,
        kubeconfig: cp().kubeconfig().to_path_buf(),
        watch_namespace: "unused".into(),
        timings: FAST,
    };
    let mut command = setup.command("op-lost", &[]);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgfleet-operator");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running 10 s after start without a Lease namespace");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "must fail:\n{stderr}");
    for needle in ["--lease-namespace", "POD_NAMESPACE", "--no-leader-election"] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--admin-addr",
        "PGFLEET_OPERATOR_ADMIN_ADDR",
        "0.0.0.0:8080",
        "--pooler-image",
        "PGFLEET_POOLER_IMAGE",
        "ghcr.io/pgfleet/pgfleet-pooler:",
        "--namespace",
        "PGFLEET_WATCH_NAMESPACE",
        "--leader-election",
        "--no-leader-election",
        "PGFLEET_LEADER_ELECTION",
        "--lease-name",
        "--lease-namespace",
        "POD_NAMESPACE",
        "--identity",
        "POD_NAME",
        "--lease-duration",
        "--renew-deadline",
        "--retry-period",
        "--log-format",
        "PGFLEET_LOG_FORMAT",
        "--log ",
        "PGFLEET_LOG",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}
