//! Integration tests for the testkit: every test starts (or shares) a real
//! PostgreSQL server and checks it behaves as the crate documents.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgfleet_testkit::{
    AUTH_PASSWORD, AUTH_QUERY, AUTH_USER, MD5_PASSWORD, MD5_USER, PLAIN_PASSWORD, PLAIN_USER,
    PgOptions, PgServer, SCRAM_PASSWORD, SCRAM_USER, SUPERUSER, SUPERUSER_PASSWORD,
};

/// psql over TCP (not the trusted socket) with a password, as a client would.
fn tcp_command(server: &PgServer, user: &str, password: &str, database: &str) -> Command {
    let mut cmd = Command::new(server.bin_dir().join("psql"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PGPASSWORD", password)
        .env("LC_ALL", "C")
        .arg("-X")
        .arg("-q")
        .arg("-At")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-d")
        .arg(format!(
            "host={} port={} user={user} dbname={database} sslmode=disable",
            server.host(),
            server.port()
        ));
    cmd
}

fn tcp_psql(
    server: &PgServer,
    user: &str,
    password: &str,
    database: &str,
    sql: &str,
) -> Result<String, String> {
    let out = tcp_command(server, user, password, database)
        .arg("-c")
        .arg(sql)
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

#[test]
fn psql_runs_sql_as_superuser_over_the_socket() {
    let server = PgServer::shared();
    assert_eq!(server.host(), "127.0.0.1");
    assert_eq!(server.psql("SELECT current_user"), SUPERUSER);
    assert_eq!(server.psql("SELECT 1 + 1"), "2");
    // Several statements, rows in unaligned tuples-only format.
    assert_eq!(server.psql("SELECT 'a' AS x, 1; SELECT 'b', 2"), "a|1\nb|2");
    // Through the unix socket in the server's own socket directory.
    assert!(
        server
            .socket_dir()
            .join(format!(".s.PGSQL.{}", server.port()))
            .exists()
    );
    assert_eq!(
        server.psql("SHOW unix_socket_directories"),
        server.socket_dir().to_string_lossy()
    );
    assert!(server.data_dir().join("PG_VERSION").is_file());
    assert!(server.bin_dir().join("psql").is_file());
}

#[test]
fn psql_reports_errors() {
    let server = PgServer::shared();
    let err = server
        .try_psql_db(
            "postgres",
            "SELECT 1; SELECT * FROM no_such_table; SELECT 2",
        )
        .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    let err = server
        .try_psql_db("no_such_db_xyz", "SELECT 1")
        .unwrap_err();
    assert!(err.contains("no_such_db_xyz"), "{err}");
    let panic = std::panic::catch_unwind(|| server.psql("SELEC 1")).unwrap_err();
    let msg = panic.downcast_ref::<String>().expect("panic message");
    assert!(msg.contains("syntax error"), "{msg}");
}

#[test]
fn server_settings_are_applied() {
    let server = PgServer::shared();
    assert_eq!(server.psql("SHOW max_connections"), "200");
    assert_eq!(server.psql("SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(server.psql("SHOW port"), server.port().to_string());
    assert_eq!(server.psql("SHOW fsync"), "off");
    assert_eq!(server.psql("SHOW synchronous_commit"), "off");
    assert_eq!(server.psql("SHOW full_page_writes"), "off");
    assert_eq!(server.psql("SHOW shared_buffers"), "32MB");
    assert_eq!(server.psql("SHOW password_encryption"), "scram-sha-256");
    assert_eq!(server.psql("SHOW server_encoding"), "UTF8");
    assert_eq!(server.psql("SHOW lc_collate"), "C");
    let rules = server.psql(
        "SELECT type, array_to_string(user_name, ','), coalesce(address, ''), auth_method \
         FROM pg_hba_file_rules ORDER BY line_number",
    );
    assert_eq!(
        rules,
        "local|all||trust\n\
         host|app_md5|127.0.0.1|md5\n\
         host|app_plain|127.0.0.1|password\n\
         host|all|127.0.0.1|scram-sha-256\n\
         host|app_md5|::1|md5\n\
         host|app_plain|::1|password\n\
         host|all|::1|scram-sha-256"
    );
}

#[test]
fn options_are_applied_to_a_dedicated_server() {
    let server = PgServer::start_with(PgOptions {
        max_connections: 37,
        extra_conf: vec![
            "work_mem = '7MB'".into(),
            "application_name = 'testkit'".into(),
        ],
    });
    assert_eq!(server.psql("SHOW max_connections"), "37");
    assert_eq!(server.psql("SHOW work_mem"), "7MB");
}

#[test]
fn every_role_logs_in_over_tcp_with_its_password_only() {
    let server = PgServer::shared();
    for (user, password) in [
        (SUPERUSER, SUPERUSER_PASSWORD),
        (SCRAM_USER, SCRAM_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (PLAIN_USER, PLAIN_PASSWORD),
        (AUTH_USER, AUTH_PASSWORD),
    ] {
        let who = tcp_psql(
            server,
            user,
            password,
            "postgres",
            "SELECT current_user || ' ' || (SELECT client_addr FROM pg_stat_activity WHERE pid = pg_backend_pid())",
        );
        assert_eq!(who, Ok(format!("{user} 127.0.0.1/32")), "login as {user}");
        let err = tcp_psql(server, user, "wrong-password", "postgres", "SELECT 1").unwrap_err();
        assert!(
            err.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "wrong password for {user}: {err}"
        );
    }
}

#[test]
fn passwords_are_stored_as_documented() {
    let server = PgServer::shared();
    let stored = |user: &str| {
        server.psql(&format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"
        ))
    };
    let md5 = stored(MD5_USER);
    assert!(md5.starts_with("md5"), "{md5}");
    // PostgreSQL's md5 format: "md5" || md5(password || username).
    assert_eq!(
        md5,
        server.psql(&format!("SELECT 'md5' || md5('{MD5_PASSWORD}{MD5_USER}')"))
    );
    for user in [SUPERUSER, SCRAM_USER, PLAIN_USER, AUTH_USER] {
        let verifier = stored(user);
        assert!(verifier.starts_with("SCRAM-SHA-256$"), "{user}: {verifier}");
    }
    let attrs = server.psql(
        "SELECT rolname, rolcanlogin, rolcreatedb, rolsuper FROM pg_roles \
         WHERE rolname IN ('app_scram', 'app_md5', 'app_plain', 'pgfleet_auth') ORDER BY rolname",
    );
    assert_eq!(
        attrs,
        "app_md5|t|t|f\napp_plain|t|t|f\napp_scram|t|t|f\npgfleet_auth|t|f|f"
    );
}

#[test]
fn auth_function_serves_the_auth_user_only() {
    let server = PgServer::start();
    let lookup = |user: &str, password: &str, database: &str, role: &str| {
        tcp_psql(
            &server,
            user,
            password,
            database,
            &format!("PREPARE auth(text) AS {AUTH_QUERY}; EXECUTE auth('{role}')"),
        )
    };
    let md5 = server.psql(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{MD5_USER}'"
    ));
    assert_eq!(
        lookup(AUTH_USER, AUTH_PASSWORD, "postgres", MD5_USER),
        Ok(format!("{MD5_USER}|{md5}"))
    );
    let scram = lookup(AUTH_USER, AUTH_PASSWORD, "postgres", SCRAM_USER).unwrap();
    assert!(scram.starts_with("app_scram|SCRAM-SHA-256$"), "{scram}");
    assert_eq!(
        lookup(AUTH_USER, AUTH_PASSWORD, "postgres", "nobody"),
        Ok(String::new())
    );

    // The function is what grants access: the table itself is off limits...
    let err = tcp_psql(
        &server,
        AUTH_USER,
        AUTH_PASSWORD,
        "postgres",
        "SELECT rolpassword FROM pg_authid",
    )
    .unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    // ...and other roles may not call the function.
    let err = lookup(SCRAM_USER, SCRAM_PASSWORD, "postgres", MD5_USER).unwrap_err();
    assert!(
        err.contains("permission denied for function pgfleet_get_auth"),
        "{err}"
    );
    assert_eq!(
        server.psql(
            "SELECT has_function_privilege('pgfleet_auth', 'public.pgfleet_get_auth(text)', 'EXECUTE'), \
                    has_function_privilege('app_scram', 'public.pgfleet_get_auth(text)', 'EXECUTE')"
        ),
        "t|f"
    );

    // New databases inherit it from template1.
    server.create_database("tenant_db", SCRAM_USER);
    assert_eq!(
        lookup(AUTH_USER, AUTH_PASSWORD, "tenant_db", MD5_USER),
        Ok(format!("{MD5_USER}|{md5}"))
    );
}

#[test]
fn create_database_is_idempotent_and_sets_the_owner() {
    let server = PgServer::shared();
    server.create_database("testkit_owned_db", MD5_USER);
    server.create_database("testkit_owned_db", MD5_USER);
    assert_eq!(
        server.psql(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'testkit_owned_db'"
        ),
        MD5_USER
    );
    assert_eq!(
        tcp_psql(
            server,
            MD5_USER,
            MD5_PASSWORD,
            "testkit_owned_db",
            "SELECT current_database()"
        ),
        Ok("testkit_owned_db".to_string())
    );
    // Names needing quoting work too, and psql_db reaches them.
    server.create_database("Mixed Case-db", SCRAM_USER);
    assert_eq!(
        server.psql_db("Mixed Case-db", "SELECT current_database()"),
        "Mixed Case-db"
    );
    // Concurrent creation of one name (tests share the server) succeeds.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| server.create_database("testkit_raced_db", SCRAM_USER));
        }
    });
    assert_eq!(
        server.psql("SELECT count(*) FROM pg_database WHERE datname = 'testkit_raced_db'"),
        "1"
    );
}

/// An idle psql connected over TCP, kept open until its stdin is closed.
fn idle_client(server: &PgServer, database: &str) -> Child {
    let mut child = tcp_command(server, SCRAM_USER, SCRAM_PASSWORD, database)
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn psql");
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"SELECT 1;\n")
        .unwrap();
    child
}

#[test]
fn backend_count_counts_client_backends() {
    let server = PgServer::start();
    server.create_database("counted", SCRAM_USER);
    assert_eq!(server.backend_count(SCRAM_USER, "counted"), 0);
    // Its own psql session is not counted (earlier psql sessions may take a
    // moment to exit after disconnecting, hence the wait).
    wait_until("no other superuser backends", || {
        server.backend_count(SUPERUSER, "postgres") == 0
    });

    let mut clients: Vec<Child> = (0..3).map(|_| idle_client(&server, "counted")).collect();
    let other = idle_client(&server, "postgres");
    wait_until("3 backends for app_scram/counted", || {
        server.backend_count(SCRAM_USER, "counted") == 3
    });
    wait_until("1 backend for app_scram/postgres", || {
        server.backend_count(SCRAM_USER, "postgres") == 1
    });
    assert_eq!(server.backend_count(MD5_USER, "counted"), 0);

    clients.push(other);
    for mut client in clients {
        drop(client.stdin.take());
        assert!(client.wait().unwrap().success());
    }
    wait_until("no backends left", || {
        server.backend_count(SCRAM_USER, "counted") == 0
            && server.backend_count(SCRAM_USER, "postgres") == 0
    });
}

#[test]
fn shared_returns_the_same_server() {
    let first = PgServer::shared();
    let second = PgServer::shared();
    assert!(std::ptr::eq(first, second));
    assert_eq!(first.port(), second.port());
    assert!(accepts(first.port()));
}

#[test]
fn two_dedicated_servers_run_at_once() {
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(PgServer::start);
        let b = scope.spawn(PgServer::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert_ne!(a.socket_dir(), b.socket_dir());
    assert_ne!(a.port(), PgServer::shared().port());
    a.psql("CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (42)");
    assert_eq!(a.psql("SELECT x FROM only_in_a"), "42");
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"),
        "0"
    );
    assert_eq!(
        tcp_psql(&b, SCRAM_USER, SCRAM_PASSWORD, "postgres", "SELECT 1"),
        Ok("1".into())
    );
    // Both are copies of one initdb'd template (initdb runs once per process).
    let sysid = "SELECT system_identifier FROM pg_control_system()";
    assert_eq!(a.psql(sysid), b.psql(sysid));
}

#[test]
fn dropping_a_server_stops_it_and_removes_its_directory() {
    let server = PgServer::start();
    let port = server.port();
    let data_dir = server.data_dir().to_path_buf();
    let server_dir = data_dir.parent().unwrap().to_path_buf();
    let socket_dir = server.socket_dir().to_path_buf();
    let pid: u32 = server.psql("SELECT pg_backend_pid()").parse().unwrap();
    assert!(pid > 0);
    assert!(data_dir.join("postmaster.pid").exists());
    assert!(accepts(port));
    drop(server);
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(
        !socket_dir.exists(),
        "{} still exists",
        socket_dir.display()
    );
    assert!(
        !server_dir.exists(),
        "{} still exists",
        server_dir.display()
    );
    assert!(!accepts(port), "port {port} still accepts connections");
}

#[test]
fn a_server_that_cannot_start_panics_with_its_log_and_is_cleaned_up() {
    let panic = std::panic::catch_unwind(|| {
        PgServer::start_with(PgOptions {
            extra_conf: vec!["no_such_setting_xyz = 1".into()],
            ..PgOptions::default()
        })
    })
    .expect_err("a server with a bad setting must not start");
    let msg = panic.downcast_ref::<String>().expect("panic message");
    assert!(msg.contains("could not start PostgreSQL"), "{msg}");
    assert!(msg.contains("no_such_setting_xyz"), "{msg}");
    assert!(msg.contains("attempt 3"), "{msg}");
    // "--- tail of <dir>/srv-<n>/data/server.log ---"
    let log = msg
        .split("--- tail of ")
        .nth(1)
        .and_then(|rest| rest.split(" ---").next())
        .unwrap_or_else(|| panic!("no log path in: {msg}"));
    let server_dir = Path::new(log).parent().unwrap().parent().unwrap();
    assert!(
        server_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("srv-")
    );
    assert!(!server_dir.exists(), "{} left behind", server_dir.display());
}

fn watchdog_child_command(mode: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testkit-watchdog-child"));
    cmd.arg(mode).stdin(Stdio::null());
    cmd
}

/// Parse the child's "CHILD-SERVER" line, then wait until the server it
/// reported is stopped and its whole process directory (template included)
/// is gone.
fn assert_child_server_cleaned_up(line: &str) {
    let (port, data_dir) = line
        .strip_prefix("port=")
        .and_then(|rest| rest.split_once(" data_dir="))
        .unwrap_or_else(|| panic!("bad child line {line:?}"));
    let port: u16 = port.parse().unwrap();
    let data_dir = PathBuf::from(data_dir);
    // .../pgfleet-testkit-<pid>-<x>/srv-<n>/data
    let process_dir: &Path = data_dir.parent().unwrap().parent().unwrap();
    assert!(
        process_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("pgfleet-testkit-")
    );
    wait_until("the child's server is stopped and removed", || {
        !process_dir.exists() && !accepts(port)
    });
}

#[test]
fn shared_server_is_torn_down_when_the_process_exits() {
    let out = watchdog_child_command("exit")
        .output()
        .expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD-SERVER "))
        .unwrap_or_else(|| panic!("no CHILD-SERVER line in: {stdout}"));
    assert_child_server_cleaned_up(line);
}

#[test]
fn shared_server_is_torn_down_when_the_process_is_killed() {
    let mut child = watchdog_child_command("hang")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-run the test binary");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = None;
    for l in stdout.lines() {
        let l = l.expect("read child stdout");
        if let Some(rest) = l.strip_prefix("CHILD-SERVER ") {
            line = Some(rest.to_string());
            break;
        }
    }
    // SIGKILL: no destructors, no atexit, nothing but the kernel closing fds.
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    assert_child_server_cleaned_up(&line.expect("child printed no CHILD-SERVER line"));
}
