//! Real clients and the real binary: psql and pgbench through the pooler, and the
//! `pgfleet-pooler` executable's flags, logs, signals and exit codes.
// Tests run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]
// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::{SCRAM_PASSWORD, SCRAM_USER};
use tokio_postgres::SimpleQueryMessage;

/// A PostgreSQL client tool matching the test server, or a loud failure saying what to install.
fn pg_tool(name: &str) -> PathBuf {
    let path = PgServer::shared().bin_dir().join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: install the PostgreSQL client tools (Debian/Ubuntu: \
         `apt-get install postgresql-client postgresql-contrib`, or the package that ships \
         {name} for your PostgreSQL version) or set PG_BIN to a directory holding it",
        path.display()
    );
    path
}

/// Runs `cmd` off the async workers (the in-process pooler must keep serving it).
async fn run(mut cmd: tokio::process::Command) -> Output {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let program = format!("{:?}", cmd.as_std());
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `psql` against the pooler with `PGPASSWORD` and optional `PGOPTIONS`.
async fn psql(port: u16, user: &str, db: &str, options: Option<&str>, sql: &str) -> Output {
    let mut cmd = tokio::process::Command::new(pg_tool("psql"));
    cmd.arg(format!(
        "host=127.0.0.1 port={port} user={user} dbname={db}"
    ))
    .args(["-X", "-v", "ON_ERROR_STOP=1", "-Atc", sql])
    .env("PGPASSWORD", SCRAM_PASSWORD)
    .env("PGCONNECT_TIMEOUT", "10")
    .env_remove("PGOPTIONS")
    .env_remove("PGSERVICE");
    if let Some(options) = options {
        cmd.env("PGOPTIONS", options);
    }
    run(cmd).await
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_works_through_both_ports() {
    let db = fresh_database(SCRAM_USER);
    PgServer::shared().psql_db(
        &db,
        &format!(
            "CREATE SCHEMA x AUTHORIZATION {SCRAM_USER}; CREATE TABLE x.marker (v int); \
             INSERT INTO x.marker VALUES (7); ALTER TABLE x.marker OWNER TO {SCRAM_USER}"
        ),
    );
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[("p.yaml", tenant_doc("psqlt", &db, &users, ""))]).await;
    let user = format!("{SCRAM_USER}.psqlt");
    for port in [t.pooled(), t.session()] {
        let out = psql(port, &user, &db, None, "select 40+2").await;
        assert_success("psql select 40+2", &out);
        assert_eq!(text(&out.stdout), "42\n", "port {port}");

        // Without PGOPTIONS the table in schema x is not visible unqualified.
        let out = psql(port, &user, &db, None, "select v from marker").await;
        assert!(!out.status.success(), "marker visible without search_path");
        assert!(
            text(&out.stderr).contains("does not exist"),
            "{}",
            text(&out.stderr)
        );

        let options = Some("-c search_path=x,public");
        let out = psql(
            port,
            &user,
            &db,
            options,
            "select v from marker; show search_path",
        )
        .await;
        assert_success("psql with PGOPTIONS search_path", &out);
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        assert_eq!(lines[0], "7", "port {port}");
        assert_eq!(lines[1].replace(' ', ""), "x,public", "port {port}");
    }
}

/// The `tps = ...` figure of a pgbench run.
fn tps(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .unwrap_or_else(|| panic!("no tps line in pgbench output:\n{stdout}"));
    line["tps = ".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

fn pgbench(port: u16, user: &str, db: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(pg_tool("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(args)
        .arg(db)
        .env("PGPASSWORD", SCRAM_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGOPTIONS");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_through_the_pooler() {
    let db = fresh_database(SCRAM_USER);
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[(
        "b.yaml",
        tenant_doc("bench", &db, &users, "defaultPoolSize: 4\n"),
    )])
    .await;
    let user = format!("{SCRAM_USER}.bench");

    let init = run(pgbench(t.session(), &user, &db, &["-i", "-s", "1", "-q"])).await;
    assert_success("pgbench -i -s 1 (session port)", &init);
    assert_eq!(
        PgServer::shared().psql_db(&db, "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );

    for protocol in ["simple", "extended"] {
        let out = run(pgbench(
            t.pooled(),
            &user,
            &db,
            &["-S", "-T", "3", "-c", "8", "-j", "2", "-n", "-M", protocol],
        ))
        .await;
        assert_success(&format!("pgbench -M {protocol}"), &out);
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "-M {protocol}:\n{stdout}\n{}",
            text(&out.stderr)
        );
        let tps = tps(&stdout);
        assert!(tps > 0.0, "-M {protocol}: tps {tps}\n{stdout}");
    }
    // Eight clients, never more than the transaction pool's four servers. (The session
    // port's pool from `pgbench -i` keeps its own idle server.)
    let pools = t.pooler.shared.pools.of_tenant("bench");
    let pooled_servers: u32 = pools
        .iter()
        .filter(|p| p.key.mode == pgfleet_crds::PoolMode::Transaction)
        .map(|p| p.counts().0)
        .sum();
    assert!(
        (1..=4).contains(&pooled_servers),
        "{pooled_servers} servers for pool size 4"
    );
    let all_servers: u32 = pools.iter().map(|p| p.counts().0).sum();
    let backends = PgServer::shared().backend_count(SCRAM_USER, &db);
    assert_eq!(
        backends,
        i64::from(all_servers),
        "PostgreSQL sees exactly the servers the pools count"
    );
}

// ---------------------------------------------------------------------------------------------
// The real binary.

const BIN: &str = env!("CARGO_BIN_EXE_pgfleet-pooler");

/// Kills and reaps the child on drop, so a failing test leaks no process.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `limit` for the process to exit.
    async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill(1) (procps)");
    assert!(status.success(), "kill {sig} {pid}: {status}");
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The complete log lines, each parsed as JSON; panics on a line that is not a JSON object.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "log line is not a JSON object: {l}");
            v
        })
        .collect()
}

fn message_of(v: &serde_json::Value) -> Option<&str> {
    v.get("message")
        .or_else(|| v.get("fields").and_then(|f| f.get("message")))
        .and_then(|m| m.as_str())
}

/// Polls the log until `pred` holds on its parsed lines (up to 10 s).
async fn wait_log(path: &Path, what: &str, pred: impl Fn(&[serde_json::Value]) -> bool) {
    for _ in 0..200 {
        if pred(&json_lines(&read_log(path))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("log never showed {what}; log:\n{}", read_log(path));
}

fn count_messages(lines: &[serde_json::Value], msg: &str) -> usize {
    lines.iter().filter(|v| message_of(v) == Some(msg)).count()
}

#[test]
fn binary_help_documents_the_flags() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "--help exited {}", out.status);
    let help = text(&out.stdout);
    for flag in [
        "--tenants-dir",
        "--listen",
        "--session-port",
        "--pooled-port",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_refuses_a_missing_tenants_dir() {
    let missing = std::env::temp_dir().join(unique("pgfleet-no-such-dir"));
    assert!(!missing.exists());
    let mut child = ChildGuard(
        Command::new(BIN)
            .arg("--tenants-dir")
            .arg(&missing)
            .args(["--listen", "127.0.0.1"])
            .args(["--session-port", &free_port().to_string()])
            .args(["--pooled-port", &free_port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn pgfleet-pooler"),
    );
    let status = child
        .exit_within(Duration::from_secs(10))
        .await
        .expect("pgfleet-pooler exits when its tenants dir is missing");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "exited {status}");
    assert!(
        stderr.contains(&missing.display().to_string()) && stderr.contains("not a directory"),
        "the error names the directory and the problem:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_reloads_logs_json_and_stops_on_sigterm() {
    let db = fresh_database(SCRAM_USER);
    let db2 = fresh_database(SCRAM_USER);
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let dir = std::env::temp_dir().join(unique("pgfleet-bin-tenants"));
    std::fs::create_dir_all(&dir).expect("tenants dir");
    std::fs::write(dir.join("one.yaml"), tenant_doc("binone", &db, &users, "")).expect("write");
    let log_path = dir.with_extension("log");
    let (session_port, pooled_port) = (free_port(), free_port());
    let mut child = ChildGuard(
        Command::new(BIN)
            .arg("--tenants-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1"])
            .args(["--session-port", &session_port.to_string()])
            .args(["--pooled-port", &pooled_port.to_string()])
            .args([
                "--admin-port",
                &free_port().to_string(),
                "--drain-delay",
                "200ms",
            ])
            .args(["--log-format", "json", "--log", "info"])
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).expect("log file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn pgfleet-pooler"),
    );

    // Up within 10 s: both ports accept.
    let start = Instant::now();
    for port in [pooled_port, session_port] {
        loop {
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                panic!(
                    "pgfleet-pooler exited early ({status}):\n{}",
                    read_log(&log_path)
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "port {port} not accepting after 10 s:\n{}",
                read_log(&log_path)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let login = format!("{SCRAM_USER}.binone");
    let pooled = connect_to(pooled_port, &login, SCRAM_PASSWORD, &db)
        .await
        .unwrap_or_else(|e| panic!("pooled login: {}\n{}", message(&e), read_log(&log_path)));
    let session = connect_to(session_port, &login, SCRAM_PASSWORD, &db)
        .await
        .unwrap_or_else(|e| panic!("session login: {}", message(&e)));
    for c in [&pooled, &session] {
        let rows = c
            .simple_query("SELECT current_database()")
            .await
            .expect("query");
        let got = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(got.as_deref(), Some(db.as_str()));
    }

    // Change the directory: a new tenant and a broken file.
    std::fs::write(dir.join("two.yaml"), tenant_doc("bintwo", &db2, &users, "")).expect("write");
    std::fs::write(dir.join("bad.yaml"), "externalId: [\n").expect("write");
    // The broken file is logged with its name and the reason.
    wait_log(&log_path, "the invalid document", |lines| {
        lines.iter().any(|v| {
            message_of(v) == Some("tenant document not loaded")
                && v.get("file")
                    .and_then(|f| f.as_str())
                    .is_some_and(|f| f.ends_with("bad.yaml"))
                && v.get("reason")
                    .and_then(|r| r.as_str())
                    .is_some_and(|r| !r.trim().is_empty())
        })
    })
    .await;
    let login2 = format!("{SCRAM_USER}.bintwo");
    let mut reached = None;
    for _ in 0..100 {
        if let Ok(c) = connect_to(pooled_port, &login2, SCRAM_PASSWORD, &db2).await {
            reached = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let two = reached.unwrap_or_else(|| {
        panic!(
            "tenant bintwo never became reachable:\n{}",
            read_log(&log_path)
        )
    });
    two.simple_query("SELECT 1").await.expect("bintwo query");

    // SIGHUP re-reads the directory: logged, then another load.
    let loads_before = count_messages(&json_lines(&read_log(&log_path)), "tenants loaded");
    signal(child.pid(), "-HUP");
    wait_log(&log_path, "SIGHUP followed by a reload", |lines| {
        let hup = lines
            .iter()
            .position(|v| message_of(v) == Some("SIGHUP: reloading tenants"));
        hup.is_some_and(|i| count_messages(&lines[i..], "tenants loaded") >= 1)
            && count_messages(lines, "tenants loaded") > loads_before
    })
    .await;
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "SIGHUP must not stop the pooler"
    );
    pooled
        .simple_query("SELECT 1")
        .await
        .expect("a client connected before SIGHUP keeps working");

    // The JSON shape: every line an object with a timestamp, a level and a message.
    let lines = json_lines(&read_log(&log_path));
    assert!(lines.len() >= 4, "{lines:?}");
    for v in &lines {
        assert!(v.get("timestamp").is_some_and(|t| t.is_string()), "{v}");
        assert!(v.get("level").is_some_and(|l| l.is_string()), "{v}");
        assert!(message_of(v).is_some(), "no message: {v}");
    }
    let sighup = lines
        .iter()
        .find(|v| message_of(v) == Some("SIGHUP: reloading tenants"))
        .expect("SIGHUP line");
    assert_eq!(sighup["level"], "INFO");

    // SIGTERM: exit 0 within a few seconds, even with clients connected.
    signal(child.pid(), "-TERM");
    let status = child
        .exit_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", read_log(&log_path)));
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        read_log(&log_path)
    );
    let lines = json_lines(&read_log(&log_path));
    assert!(count_messages(&lines, "shutting down") == 1, "{lines:?}");
    drop((pooled, session, two));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log_path);
}

async fn first_value(c: &tokio_postgres::Client, sql: &str) -> String {
    c.simple_query(sql)
        .await
        .expect("query")
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_admin_endpoints_and_sigterm_drain() {
    let db = fresh_database(SCRAM_USER);
    PgServer::shared().psql_db(
        &db,
        &format!("CREATE TABLE drained (v int); ALTER TABLE drained OWNER TO {SCRAM_USER}"),
    );
    let dir = std::env::temp_dir().join(unique("pgfleet-admin-tenants"));
    std::fs::create_dir_all(&dir).expect("tenants dir");
    let doc = tenant_doc(
        "adm",
        &db,
        &[(SCRAM_USER, SCRAM_PASSWORD)],
        "defaultPoolSize: 2\n",
    );
    std::fs::write(dir.join("adm.yaml"), doc).expect("write");
    let log_path = dir.with_extension("log");
    let (session_port, pooled_port, admin_port) = (free_port(), free_port(), free_port());
    let mut child = ChildGuard(
        Command::new(BIN)
            .arg("--tenants-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1"])
            .args(["--session-port", &session_port.to_string()])
            .args(["--pooled-port", &pooled_port.to_string()])
            .args(["--admin-port", &admin_port.to_string()])
            .args(["--drain-delay", "1s", "--shutdown-timeout", "8s"])
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).expect("log file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn pgfleet-pooler"),
    );
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", admin_port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "admin port never came up:\n{}",
            read_log(&log_path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(http_get(local(admin_port), "/healthz").await.0, 200);
    let (code, body) = http_get(local(admin_port), "/readyz").await;
    assert_eq!(code, 200, "{body}");

    let login = format!("{SCRAM_USER}.adm");
    let busy = connect_to(pooled_port, &login, SCRAM_PASSWORD, &db)
        .await
        .expect("login");
    let idle = connect_to(session_port, &login, SCRAM_PASSWORD, &db)
        .await
        .expect("login");
    assert_eq!(first_value(&busy, "SELECT 1").await, "1");
    assert_eq!(first_value(&idle, "SELECT 2").await, "2");

    let (code, status) = http_get(local(admin_port), "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(status["ready"], true);
    assert_eq!(status["tenants"][0]["externalId"], "adm");
    assert_eq!(status["tenants"][0]["clients"], 2);
    let pools = status["pools"].as_array().expect("pools");
    assert!(
        pools
            .iter()
            .any(|p| p["mode"] == "transaction" && p["checkouts"].as_u64() >= Some(1)),
        "{status}"
    );

    let (code, metrics) = http_get(local(admin_port), "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "pgfleet_clients{tenant=\"adm\"} 2",
        "pgfleet_transactions_total{tenant=\"adm\"}",
        "pgfleet_client_bytes_sent_total{tenant=\"adm\"}",
        "pgfleet_servers_idle{tenant=\"adm\"}",
        "pgfleet_tenants 1",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    // A refused login is counted by tenant and code.
    let wrong = connect_to(pooled_port, &login, "wrong", &db)
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    let (_, metrics) = http_get(local(admin_port), "/metrics").await;
    assert!(
        metrics.contains("pgfleet_errors_total{tenant=\"adm\",code=\"EWRONGPASSWORD\"} 1"),
        "{metrics}"
    );

    // SIGTERM with a transaction in flight and an idle session.
    busy.batch_execute("BEGIN; INSERT INTO drained VALUES (1)")
        .await
        .expect("begin");
    signal(child.pid(), "-TERM");
    let signalled = Instant::now();
    loop {
        let (code, body) = http_get(local(admin_port), "/readyz").await;
        if code == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(500),
            "readiness still {code} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the drain delay the transaction is still allowed to finish and commit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    busy.batch_execute("INSERT INTO drained VALUES (2); COMMIT")
        .await
        .expect("the transaction in flight commits");
    // Then both clients are closed at their transaction boundary.
    let after = busy.simple_query("SELECT 1").await;
    assert!(
        after.is_err() && closed_soon(&busy).await,
        "the busy client is closed after its transaction: {after:?}"
    );
    let after = idle.simple_query("SELECT 1").await;
    assert!(
        after.is_err() && closed_soon(&idle).await,
        "the idle session is closed: {after:?}"
    );
    let status = child
        .exit_within(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running after the drain:\n{}", read_log(&log_path)));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        read_log(&log_path)
    );
    assert_eq!(
        PgServer::shared().psql_db(
            &db,
            "SELECT string_agg(v::text, ',' ORDER BY v) FROM drained"
        ),
        "1,2"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log_path);
}

/// True once `client`'s connection has ended, waiting up to 3 s: a FATAL reaches the query
/// before the connection task sees the socket close.
async fn closed_soon(client: &tokio_postgres::Client) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !client.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.is_closed()
}
