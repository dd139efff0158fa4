//! Throwaway PostgreSQL servers for pgfleet's integration tests.
//!
//! The pooler has to be tested against a real PostgreSQL (authentication
//! methods, backend accounting, protocol corner cases), so this crate starts
//! one from the binaries installed on the machine instead of mocking it.
//!
//! * [`PgServer::start`] / [`PgServer::start_with`] give a test its own server,
//!   stopped (`pg_ctl stop -m immediate`) and deleted when the value is dropped.
//! * [`PgServer::shared`] gives every test in a test binary the same server,
//!   started on first use and torn down by a watchdog process when the test
//!   process exits (statics are never dropped).
//!
//! Every server comes with the same roles ([`SUPERUSER`], [`SCRAM_USER`],
//! [`MD5_USER`], [`PLAIN_USER`], [`AUTH_USER`]) and the `auth_query` function
//! behind [`AUTH_QUERY`], so tests can exercise each authentication path.
//!
//! # Speed
//!
//! Many test binaries start servers, so the expensive parts are done once per
//! process: the first server of a process runs `initdb` into a *template* data
//! directory, configures it, creates the roles and functions, and stops it
//! cleanly. Every server of that process (including the first) is then a
//! `cp -a` of the template plus a small per-server config file, followed by
//! `pg_ctl start`. Consequently all servers of one process share the same
//! `system_identifier`.
//!
//! # Layout and cleanup
//!
//! Everything lives in one directory per process,
//! `$TMPDIR/pgfleet-testkit-<pid>-<nanos>/`, holding `template/` and one
//! `srv-<n>/` per server (`srv-<n>/data` is the data directory,
//! `srv-<n>/sock` the unix socket directory, the server log is
//! `srv-<n>/data/server.log`). A watchdog (`sh`, in its own process group,
//! blocked reading a pipe whose only writer is this process) wakes up when the
//! process exits for any reason, stops every server still running in that
//! directory and removes it.
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When the effective uid is 0
//! the server tools (`initdb`, `pg_ctl`) are run as the `postgres` OS user via
//! `setpriv --reuid=<uid> --regid=<gid> --init-groups` (or
//! `runuser -u postgres --` when `setpriv` is unavailable), and the server
//! directories are chowned to that user. Client tools (`psql`, `pg_isready`)
//! keep running as root; they connect through the socket or TCP like any
//! client.

// This is test support: failing loudly with a clear message *is* the intended
// behaviour of a test helper that cannot do its job.
#![allow(clippy::expect_used, clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod helm;
pub mod kube;

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The bootstrap superuser created by `initdb`; trusted over the unix socket,
/// SCRAM over TCP. Tests use it for setup and inspection.
pub const SUPERUSER: &str = "postgres";
/// Password of [`SUPERUSER`] (for TCP logins), set through `initdb --pwfile`.
pub const SUPERUSER_PASSWORD: &str = "postgres-secret";
/// Role whose password is stored as a SCRAM-SHA-256 verifier and which logs
/// in with `scram-sha-256` over TCP, the default modern path.
pub const SCRAM_USER: &str = "app_scram";
/// Password of [`SCRAM_USER`].
pub const SCRAM_PASSWORD: &str = "scram-secret";
/// Role whose password is stored as an MD5 hash (`md5...`) and which logs in
/// with the `md5` method over TCP, for testing legacy MD5 authentication.
pub const MD5_USER: &str = "app_md5";
/// Password of [`MD5_USER`].
pub const MD5_PASSWORD: &str = "md5-secret";
/// Role with a SCRAM-stored password whose `pg_hba.conf` entry uses the
/// `password` (cleartext) method, for testing cleartext authentication.
pub const PLAIN_USER: &str = "app_plain";
/// Password of [`PLAIN_USER`].
pub const PLAIN_PASSWORD: &str = "plain-secret";
/// Unprivileged role allowed to execute the `SECURITY DEFINER` function used
/// by [`AUTH_QUERY`], like the dedicated lookup user of a real deployment.
pub const AUTH_USER: &str = "pgfleet_auth";
/// Password of [`AUTH_USER`] (SCRAM-stored, SCRAM over TCP).
pub const AUTH_PASSWORD: &str = "auth-secret";
/// Query the pooler can run as [`AUTH_USER`] to fetch a role's stored
/// password (`$1` = role name); the function exists in `postgres`,
/// `template1` and therefore every database created afterwards.
pub const AUTH_QUERY: &str = "SELECT rolname, rolpassword FROM public.pgfleet_get_auth($1)";

/// Loopback address every server listens on (TCP).
const HOST: &str = "127.0.0.1";
/// How long a server may take to accept connections before start fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports are tried before giving up on starting a server.
const START_ATTEMPTS: u32 = 3;
/// Per-server settings file, included at the end of `postgresql.conf`.
const SERVER_CONF: &str = "testkit_server.conf";
/// Server log file name, inside the data directory.
const LOG_FILE: &str = "server.log";
/// Longest unix socket path Linux accepts (`sun_path` is 108 bytes with NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Settings for a dedicated server ([`PgServer::start_with`]); exists so a
/// test can resize or tune its server without touching the shared one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// `max_connections` of the server (default 200, enough for pool tests
    /// that open many backends).
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines, e.g. `"log_connections = on"`; written
    /// after the testkit's own settings, so they win.
    pub extra_conf: Vec<String>,
}

impl Default for PgOptions {
    /// 200 connections and no extra configuration: what [`PgServer::start`]
    /// and [`PgServer::shared`] use.
    fn default() -> Self {
        PgOptions {
            max_connections: 200,
            extra_conf: Vec::new(),
        }
    }
}

/// A running throwaway PostgreSQL server listening on `127.0.0.1` and on a
/// private unix socket directory.
///
/// Dropping it stops the server with `pg_ctl stop -m immediate` and removes
/// its directory (errors are reported on stderr, never panicked on).
#[derive(Debug)]
pub struct PgServer {
    ctx: &'static Context,
    /// `srv-<n>` directory holding `data/` and `sock/`; removed on drop.
    dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
}

impl PgServer {
    /// Start a dedicated server with [`PgOptions::default`]; stopped
    /// (`pg_ctl stop -m immediate`) and its directory removed on Drop.
    ///
    /// Panics with the server log's tail if it cannot be started.
    pub fn start() -> PgServer {
        PgServer::start_with(PgOptions::default())
    }

    /// Start a dedicated server with the given options; stopped
    /// (`pg_ctl stop -m immediate`) and its directory removed on Drop.
    ///
    /// Panics with the server log's tail if it cannot be started (after
    /// trying three different ports).
    pub fn start_with(opts: PgOptions) -> PgServer {
        let ctx = context();
        match PgServer::launch(ctx, &opts) {
            Ok(server) => server,
            Err(err) => panic!("pgfleet-testkit: could not start PostgreSQL:\n{err}"),
        }
    }

    /// One server per test process, started on first use and shared by every
    /// test in the binary, so cheap tests need not pay for a server each.
    ///
    /// Tests sharing it must not assume an empty server: use unique database
    /// or role names. It is never dropped (it is a static); the per-process
    /// watchdog (see the crate docs) stops it and removes its directory when
    /// the test process exits, however it exits.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();
        let result = SHARED.get_or_init(|| PgServer::launch(context(), &PgOptions::default()));
        match result {
            Ok(server) => server,
            Err(err) => panic!("pgfleet-testkit: could not start the shared PostgreSQL:\n{err}"),
        }
    }

    /// TCP host the server listens on (always `"127.0.0.1"`), for building
    /// connection strings.
    pub fn host(&self) -> &str {
        HOST
    }

    /// TCP port the server listens on (a free loopback port picked at start).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Unix socket directory of the server (use as `host=` in libpq terms);
    /// connections through it are trusted for every role.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Data directory of the server, e.g. to read `server.log` in it or to
    /// check that it is gone after drop.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Directory of the PostgreSQL binaries in use (`psql`, `pgbench`, ...),
    /// so tests run the client tools matching the server.
    pub fn bin_dir(&self) -> &Path {
        &self.ctx.bin_dir
    }

    /// Run SQL as the superuser in database `postgres` through psql over the
    /// unix socket (`ON_ERROR_STOP`, `-X`, `-q`, `-At`); returns stdout
    /// trimmed; panics with psql's stderr on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    /// Like [`PgServer::psql`], in the given database.
    pub fn psql_db(&self, database: &str, sql: &str) -> String {
        match self.try_psql_db(database, sql) {
            Ok(out) => out,
            Err(err) => panic!("psql failed in database {database:?}: {err}\nSQL:\n{sql}"),
        }
    }

    /// Like [`PgServer::psql_db`] but returns `Err(stderr)` instead of
    /// panicking, for tests that expect SQL to fail.
    ///
    /// The SQL is fed to psql on stdin, so it may hold several statements,
    /// each run in its own transaction (e.g. `CREATE DATABASE` works).
    pub fn try_psql_db(&self, database: &str, sql: &str) -> Result<String, String> {
        run_psql(
            &self.ctx.bin_dir,
            &self.socket_dir,
            self.port,
            database,
            sql,
        )
    }

    /// Create a database owned by `owner` (idempotent if it exists: an
    /// existing database is left as it is, whatever its owner).
    ///
    /// Safe to call concurrently from several tests on the shared server.
    pub fn create_database(&self, name: &str, owner: &str) {
        let exists_sql = format!(
            "SELECT count(*) FROM pg_catalog.pg_database WHERE datname = {}",
            quote_literal(name)
        );
        let create_sql = format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(name),
            quote_ident(owner)
        );
        let mut attempt = 0;
        loop {
            if self.psql(&exists_sql) == "1" {
                return;
            }
            attempt += 1;
            match self.try_psql_db("postgres", &create_sql) {
                Ok(_) => return,
                // Lost a race with another test creating it: it exists now.
                Err(_) if self.psql(&exists_sql) == "1" => return,
                // Someone is briefly connected to template1; try again.
                Err(err) if err.contains("being accessed by other users") && attempt < 20 => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("create_database({name:?}, owner {owner:?}) failed: {err}"),
            }
        }
    }

    /// Count rows of `pg_stat_activity` with `backend_type = 'client backend'`
    /// for a given `usename` and `datname`, so pool tests can check how many
    /// server connections really exist.
    ///
    /// The psql session running the query is not counted. A backend whose
    /// client just disconnected may still be listed for a moment, so tests
    /// waiting for a count to drop should poll.
    pub fn backend_count(&self, user: &str, database: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity \
             WHERE backend_type = 'client backend' AND usename = {} AND datname = {} \
             AND pid <> pg_catalog.pg_backend_pid()",
            quote_literal(user),
            quote_literal(database)
        );
        let out = self.psql(&sql);
        out.parse()
            .unwrap_or_else(|_| panic!("backend_count: unexpected psql output {out:?}"))
    }

    /// Copy the template into a fresh `srv-<n>` directory and start it on a
    /// free port, retrying with other ports. On error the partially created
    /// server is dropped, which cleans it up.
    fn launch(ctx: &'static Context, opts: &PgOptions) -> Result<PgServer, String> {
        static NEXT_SERVER: AtomicU64 = AtomicU64::new(0);
        let n = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        let dir = ctx.process_dir.join(format!("srv-{n}"));
        create_private_dir(&dir)?;
        let server = PgServer {
            ctx,
            data_dir: dir.join("data"),
            socket_dir: dir.join("sock"),
            dir,
            port: 0,
        };
        server.launch_in_place(opts)
    }

    fn launch_in_place(mut self, opts: &PgOptions) -> Result<PgServer, String> {
        let ctx = self.ctx;
        ctx.give_to_server_user(&self.dir)?;
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&ctx.template_data).arg(&self.data_dir);
        run(&mut cp, "cp -a template")?;
        create_private_dir(&self.socket_dir)?;
        ctx.give_to_server_user(&self.socket_dir)?;
        check_socket_path(&self.socket_dir)?;

        let mut errors = String::new();
        for attempt in 1..=START_ATTEMPTS {
            self.port = free_port()?;
            let mut conf = format!(
                "# Written by pgfleet-testkit for this server.\n\
                 listen_addresses = '{HOST}'\n\
                 port = {}\n\
                 unix_socket_directories = {}\n\
                 max_connections = {}\n",
                self.port,
                quote_literal(&self.socket_dir.to_string_lossy()),
                opts.max_connections
            );
            for line in &opts.extra_conf {
                let _ = writeln!(conf, "{line}");
            }
            ctx.write_file(&self.data_dir.join(SERVER_CONF), &conf)?;
            match ctx.start_cluster(&self.dir, &self.data_dir, HOST, self.port) {
                Ok(()) => return Ok(self),
                Err(err) => {
                    let _ = writeln!(errors, "attempt {attempt} (port {}): {err}", self.port);
                    // In case it came up after all (e.g. pg_isready timed out).
                    if self.data_dir.join("postmaster.pid").exists() {
                        let _ = ctx.stop_cluster(&self.dir, &self.data_dir, "immediate");
                    }
                }
            }
        }
        Err(errors)
    }
}

impl Drop for PgServer {
    /// Stop the server (`-m immediate`: nothing in it is worth keeping) and
    /// remove its directory; problems go to stderr since Drop must not panic.
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists()
            && let Err(err) = self
                .ctx
                .stop_cluster(&self.dir, &self.data_dir, "immediate")
        {
            eprintln!(
                "pgfleet-testkit: stopping server in {}: {err}",
                self.data_dir.display()
            );
        }
        let mut result = std::fs::remove_dir_all(&self.dir);
        for _ in 0..5 {
            if result.is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
            result = std::fs::remove_dir_all(&self.dir);
        }
        if let Err(err) = result {
            eprintln!(
                "pgfleet-testkit: removing {}: {err} (the process watchdog will retry at exit)",
                self.dir.display()
            );
        }
    }
}

/// Per-process state: binaries, privileges, the process directory with its
/// template, and the watchdog pipe. Built once, on first use.
#[derive(Debug)]
struct Context {
    bin_dir: PathBuf,
    /// Set when running as root: how to become the server's OS user.
    server_user: Option<ServerUser>,
    process_dir: PathBuf,
    template_data: PathBuf,
    /// Write end of the watchdog's stdin. Never written to or closed by us:
    /// the kernel closes it when the process exits, which wakes the watchdog.
    _watchdog: ChildStdin,
}

/// The unprivileged OS user (normally `postgres`) server tools run as when
/// this process is root.
#[derive(Debug, Clone)]
struct ServerUser {
    uid: u32,
    gid: u32,
    /// Command prefix dropping root privileges, e.g. `setpriv --reuid=...`.
    prefix: Vec<OsString>,
}

fn context() -> &'static Context {
    static CONTEXT: OnceLock<Result<Context, String>> = OnceLock::new();
    match CONTEXT.get_or_init(Context::init) {
        Ok(ctx) => ctx,
        Err(err) => panic!("pgfleet-testkit: cannot set up PostgreSQL: {err}"),
    }
}

impl Context {
    fn init() -> Result<Context, String> {
        let bin_dir = find_bin_dir()?;
        let server_user = if effective_uid()? == 0 {
            Some(ServerUser::lookup()?)
        } else {
            None
        };
        let process_dir = create_process_dir(server_user.is_some())?;
        // Spawned before anything is started, so even a half-built template
        // server is cleaned up if this process dies.
        let watchdog = spawn_watchdog(&process_dir, &bin_dir, server_user.as_ref())?;
        let ctx = Context {
            bin_dir,
            server_user,
            template_data: process_dir.join("template").join("data"),
            process_dir,
            _watchdog: watchdog,
        };
        ctx.build_template()?;
        Ok(ctx)
    }

    /// initdb, configure, start on a socket only, create roles and auth
    /// functions, stop cleanly. The result is copied for every server.
    fn build_template(&self) -> Result<(), String> {
        let dir = self.process_dir.join("template");
        let sock = dir.join("sock");
        create_private_dir(&dir)?;
        self.give_to_server_user(&dir)?;
        if let Some(user) = &self.server_user {
            let mut probe = user.command("test");
            probe.arg("-w").arg(&dir).current_dir(&dir);
            run(&mut probe, "write-access check").map_err(|_| {
                format!(
                    "the server's OS user (uid {}) cannot write to {}; every parent of the \
                     temp directory must be traversable by others (try TMPDIR=/tmp)",
                    user.uid,
                    dir.display()
                )
            })?;
        }
        create_private_dir(&sock)?;
        self.give_to_server_user(&sock)?;
        check_socket_path(&sock)?;

        let pwfile = dir.join("pwfile");
        self.write_file(&pwfile, &format!("{SUPERUSER_PASSWORD}\n"))?;
        let mut pwfile_arg = OsString::from("--pwfile=");
        pwfile_arg.push(&pwfile);
        let mut initdb = self.server_tool("initdb", &dir);
        initdb
            .arg("-D")
            .arg(&self.template_data)
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C",
                // Safe for a throwaway cluster and much faster.
                "--no-sync",
            ])
            .arg(pwfile_arg);
        let initdb_result = run(&mut initdb, "initdb");
        let _ = std::fs::remove_file(&pwfile);
        initdb_result?;

        let hba = format!(
            "# Written by pgfleet-testkit.\n\
             # TYPE DATABASE USER ADDRESS METHOD\n\
             local all all trust\n\
             host all {MD5_USER} 127.0.0.1/32 md5\n\
             host all {PLAIN_USER} 127.0.0.1/32 password\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all {MD5_USER} ::1/128 md5\n\
             host all {PLAIN_USER} ::1/128 password\n\
             host all all ::1/128 scram-sha-256\n"
        );
        self.write_file(&self.template_data.join("pg_hba.conf"), &hba)?;

        let conf_path = self.template_data.join("postgresql.conf");
        let mut conf = std::fs::read_to_string(&conf_path)
            .map_err(|e| format!("reading {}: {e}", conf_path.display()))?;
        conf.push_str(&format!(
            "\n# pgfleet-testkit settings (later lines win)\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 32MB\n\
             logging_collector = off\n\
             include '{SERVER_CONF}'\n"
        ));
        self.write_file(&conf_path, &conf)?;
        // The template server only needs the unix socket (no TCP, no port
        // to collide on); every copy overwrites this file.
        let setup_conf = format!(
            "listen_addresses = ''\n\
             port = 5432\n\
             unix_socket_directories = {}\n\
             max_connections = 20\n",
            quote_literal(&sock.to_string_lossy())
        );
        self.write_file(&self.template_data.join(SERVER_CONF), &setup_conf)?;

        let sock_str = sock.to_string_lossy().into_owned();
        self.start_cluster(&dir, &self.template_data, &sock_str, 5432)?;
        let setup = self.run_setup_sql(&sock);
        let stop = self.stop_cluster(&dir, &self.template_data, "fast");
        setup?;
        stop?;
        let _ = std::fs::remove_file(self.template_data.join(LOG_FILE));
        Ok(())
    }

    fn run_setup_sql(&self, sock: &Path) -> Result<(), String> {
        let roles = format!(
            "CREATE ROLE {SCRAM_USER} LOGIN CREATEDB PASSWORD {};\n\
             CREATE ROLE {PLAIN_USER} LOGIN CREATEDB PASSWORD {};\n\
             CREATE ROLE {AUTH_USER} LOGIN PASSWORD {};\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE {MD5_USER} LOGIN CREATEDB PASSWORD {};\n\
             RESET password_encryption;\n",
            quote_literal(SCRAM_PASSWORD),
            quote_literal(PLAIN_PASSWORD),
            quote_literal(AUTH_PASSWORD),
            quote_literal(MD5_PASSWORD),
        );
        let auth_function = format!(
            "CREATE FUNCTION public.pgfleet_get_auth(p_usename text) \
             RETURNS TABLE(rolname text, rolpassword text) \
             LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS \
             $$ SELECT rolname::text, rolpassword::text FROM pg_catalog.pg_authid \
             WHERE rolname = p_usename $$;\n\
             REVOKE ALL ON FUNCTION public.pgfleet_get_auth(text) FROM PUBLIC;\n\
             GRANT EXECUTE ON FUNCTION public.pgfleet_get_auth(text) TO {AUTH_USER};\n"
        );
        run_psql(
            &self.bin_dir,
            sock,
            5432,
            "postgres",
            &format!("{roles}{auth_function}"),
        )
        .map_err(|e| format!("creating roles and auth function in postgres: {e}"))?;
        run_psql(&self.bin_dir, sock, 5432, "template1", &auth_function)
            .map_err(|e| format!("creating auth function in template1: {e}"))?;
        Ok(())
    }

    /// `pg_ctl start -w`, then poll `pg_isready` until the server accepts
    /// connections; at most [`START_TIMEOUT`] in total. Errors carry the
    /// server log's tail.
    fn start_cluster(&self, dir: &Path, data: &Path, host: &str, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let log = data.join(LOG_FILE);
        // A fresh log per attempt, so a failure shows only its own lines.
        let _ = std::fs::remove_file(&log);
        let mut pg_ctl = self.server_tool("pg_ctl", dir);
        pg_ctl
            .arg("start")
            .arg("-w")
            .arg("-t")
            .arg(START_TIMEOUT.as_secs().to_string())
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log);
        if let Err(err) = run(&mut pg_ctl, "pg_ctl start") {
            return Err(format!("{err}\n{}", log_tail(&log, 40)));
        }
        loop {
            let mut ready = Command::new(self.bin_dir.join("pg_isready"));
            ready
                .args(["-q", "-t", "1", "-h", host, "-p", &port.to_string()])
                .args(["-U", SUPERUSER, "-d", "postgres"]);
            clean_env(&mut ready);
            if ready.status().is_ok_and(|s| s.success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "server did not accept connections on {host}:{port} within {}s\n{}",
                    START_TIMEOUT.as_secs(),
                    log_tail(&log, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_cluster(&self, dir: &Path, data: &Path, mode: &str) -> Result<(), String> {
        let mut pg_ctl = self.server_tool("pg_ctl", dir);
        pg_ctl
            .args(["stop", "-w", "-t", "30", "-m", mode])
            .arg("-D")
            .arg(data);
        run(&mut pg_ctl, "pg_ctl stop").map(|_| ())
    }

    /// A PostgreSQL server binary, run as the server user when we are root,
    /// from a working directory that user can access.
    fn server_tool(&self, tool: &str, cwd: &Path) -> Command {
        let program = self.bin_dir.join(tool);
        let mut cmd = match &self.server_user {
            Some(user) => user.command(program),
            None => Command::new(program),
        };
        cmd.current_dir(cwd);
        clean_env(&mut cmd);
        cmd
    }

    /// chown a path to the server user when running as root (no-op
    /// otherwise), so the server can use files created by this process.
    fn give_to_server_user(&self, path: &Path) -> Result<(), String> {
        match &self.server_user {
            Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown {} to uid {}: {e}", path.display(), user.uid)),
            None => Ok(()),
        }
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<(), String> {
        std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        self.give_to_server_user(path)
    }
}

impl ServerUser {
    /// Find the `postgres` OS user and a tool to switch to it.
    fn lookup() -> Result<ServerUser, String> {
        let id = |flag: &str| -> Result<u32, String> {
            let out = Command::new("id")
                .args([flag, SUPERUSER])
                .output()
                .map_err(|e| format!("running `id`: {e}"))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| {
                    format!(
                        "running as root, but there is no `{SUPERUSER}` OS user to run the \
                         server as (PostgreSQL refuses to run as root); install PostgreSQL \
                         (`apt-get install postgresql` creates it) or `useradd --system {SUPERUSER}`"
                    )
                })
        };
        let uid = id("-u")?;
        let gid = id("-g")?;
        let prefix: Vec<OsString> = if let Some(setpriv) = find_in_path("setpriv") {
            vec![
                setpriv.into(),
                format!("--reuid={uid}").into(),
                format!("--regid={gid}").into(),
                "--init-groups".into(),
                "--".into(),
            ]
        } else if let Some(runuser) = find_in_path("runuser") {
            vec![runuser.into(), "-u".into(), SUPERUSER.into(), "--".into()]
        } else {
            return Err(
                "running as root needs `setpriv` or `runuser` (util-linux) to run PostgreSQL \
                 as the postgres user; install util-linux"
                    .to_string(),
            );
        };
        Ok(ServerUser { uid, gid, prefix })
    }

    /// `program` run as this user.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.prefix[0]);
        cmd.args(&self.prefix[1..]).arg(program);
        cmd
    }
}

/// The watchdog: `sh` in its own process group (so Ctrl-C aimed at the test
/// run does not kill it first), ignoring hang-up/interrupt/terminate signals,
/// blocked reading its stdin. Our end of that pipe is close-on-exec (no
/// other child inherits it) and never closed, so `read` sees EOF exactly
/// when this process is gone. It then stops every server still running under
/// the process directory and removes the directory.
fn spawn_watchdog(
    process_dir: &Path,
    bin_dir: &Path,
    server_user: Option<&ServerUser>,
) -> Result<ChildStdin, String> {
    const SCRIPT: &str = r#"
trap '' HUP INT QUIT TERM PIPE
cd /
dir=$1
shift
while read -r _line; do :; done
for data in "$dir"/*/data; do
    if [ -f "$data/postmaster.pid" ]; then
        "$@" stop -w -t 30 -m immediate -D "$data" >/dev/null 2>&1
    fi
done
rm -rf "$dir"
"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("pgfleet-testkit-watchdog")
        .arg(process_dir);
    if let Some(user) = server_user {
        cmd.args(&user.prefix);
    }
    cmd.arg(bin_dir.join("pg_ctl"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    clean_env(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning the cleanup watchdog (sh): {e}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| "watchdog has no stdin pipe".to_string())
}

/// Run psql as the superuser over the unix socket, SQL on stdin.
fn run_psql(
    bin_dir: &Path,
    socket_dir: &Path,
    port: u16,
    database: &str,
    sql: &str,
) -> Result<String, String> {
    // A conninfo string rather than -h/-d, so any database name is taken
    // literally.
    let conninfo = format!(
        "host={} port={port} user={} dbname={}",
        quote_conninfo(&socket_dir.to_string_lossy()),
        quote_conninfo(SUPERUSER),
        quote_conninfo(database)
    );
    let mut cmd = Command::new(bin_dir.join("psql"));
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(conninfo)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", bin_dir.join("psql").display()))?;
    let stdin = child.stdin.take();
    // Feed stdin from another thread so large outputs cannot deadlock us.
    let output = std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // psql exiting early (e.g. on error) closes the pipe; its
                // stderr says why, so a write error here carries no news.
                let _ = stdin.write_all(sql.as_bytes());
            }
        });
        child.wait_with_output()
    })
    .map_err(|e| format!("waiting for psql: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if stderr.is_empty() {
            Err(format!("psql exited with {}", output.status))
        } else {
            Err(stderr)
        }
    }
}

/// Remove the caller's libpq/PostgreSQL environment (PGHOST, PGDATA,
/// PGPASSWORD, ...) so it cannot redirect our commands, and make messages
/// English so tests can match them.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C")
        .env("PGCLIENTENCODING", "UTF8")
        .env("PGCONNECT_TIMEOUT", "10");
}

/// Run a command to completion; Err describes the failure with its output.
fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    cmd.stdin(Stdio::null());
    let output = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if output.status.success() {
        Ok(output)
    } else {
        let mut msg = format!("{what} failed ({})", output.status);
        for stream in [&output.stderr, &output.stdout] {
            let text = String::from_utf8_lossy(stream);
            if !text.trim().is_empty() {
                let _ = write!(msg, "\n{}", text.trim());
            }
        }
        Err(msg)
    }
}

/// The last `lines` lines of a server log, for start-failure messages.
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            format!(
                "--- tail of {} ---\n{}",
                log.display(),
                all[start..].join("\n")
            )
        }
        Err(e) => format!("(no log at {}: {e})", log.display()),
    }
}

/// PostgreSQL's binaries: `$PG_BIN`, else `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf, String> {
    const TOOLS: [&str; 5] = ["initdb", "pg_ctl", "postgres", "psql", "pg_isready"];
    let complete = |dir: &Path| TOOLS.iter().all(|tool| dir.join(tool).is_file());
    let install_hint = "install PostgreSQL server binaries (`apt-get install postgresql`) \
                        or set PG_BIN to the directory containing initdb, pg_ctl, postgres, \
                        psql and pg_isready";
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "PG_BIN={} lacks some of {TOOLS:?}; {install_hint}",
                dir.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if complete(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = entry.path().join("bin");
            version.filter(|_| complete(&bin)).map(|v| (v, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| format!("PostgreSQL binaries not found; {install_hint}"))
}

fn effective_uid() -> Result<u32, String> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // "Uid:\treal\teffective\tsaved\tfs"
        if let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
        {
            return Ok(euid);
        }
    }
    let out = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("running `id -u`: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| "cannot determine the current uid".to_string())
}

/// A fresh, uniquely named directory under the temp dir for this process.
/// Traversable by others when root (the server user must reach its
/// subdirectories), private otherwise.
fn create_process_dir(root: bool) -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    let pid = std::process::id();
    for attempt in 0..100u32 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("pgfleet-testkit-{pid}-{nanos:x}{attempt}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                let mode = if root { 0o755 } else { 0o700 };
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "could not create a unique directory in {}",
        base.display()
    ))
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))
}

fn check_socket_path(socket_dir: &Path) -> Result<(), String> {
    // ".s.PGSQL.65535" is the longest socket file name.
    let len = socket_dir.as_os_str().len() + "/.s.PGSQL.65535".len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "unix socket path under {} would be {len} bytes, over the {MAX_SOCKET_PATH}-byte \
             limit; set TMPDIR to a shorter directory (e.g. /tmp)",
            socket_dir.display()
        ));
    }
    Ok(())
}

/// A free loopback TCP port: bind port 0, read the port, release it. Racy
/// by nature, hence the start retries.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port on {HOST}: {e}"))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// SQL string literal (standard_conforming_strings is on).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// SQL identifier, always quoted.
fn quote_ident(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

/// libpq conninfo value.
fn quote_conninfo(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_conninfo(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn default_options() {
        let opts = PgOptions::default();
        assert_eq!(opts.max_connections, 200);
        assert!(opts.extra_conf.is_empty());
    }
}
