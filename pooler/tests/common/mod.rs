//! Shared harness for the pooler's integration tests: a real PostgreSQL (testkit), a tenants
//! directory, and the pooler running in-process on free loopback ports.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgfleet_pooler::Settings;
use pgfleet_pooler::app::{PoolerConfig, RunningPooler, TenantSourceConfig, Workers};
pub use pgfleet_testkit::{self as testkit, PgServer};
use tokio_postgres::{Client, NoTls};

/// One pooler over the process's shared PostgreSQL, with its own tenants directory.
pub struct TestPooler {
    /// The PostgreSQL behind every tenant.
    pub pg: &'static PgServer,
    /// The tenants directory the pooler watches.
    pub dir: PathBuf,
    /// The running pooler.
    pub pooler: RunningPooler,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name unique in this test process, for databases and directories.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a fresh database owned by `owner` on the shared server.
pub fn fresh_database(owner: &str) -> String {
    let name = unique("db");
    PgServer::shared().create_database(&name, owner);
    name
}

/// Settings that keep tests fast: short failure delay and login deadline.
pub fn test_settings() -> Settings {
    Settings {
        login_timeout: Duration::from_secs(3),
        auth_failure_delay: Duration::from_millis(20),
    }
}

impl TestPooler {
    /// Starts a pooler with `tenants` as `(file name, document)` pairs.
    pub async fn start(tenants: &[(&str, String)]) -> TestPooler {
        Self::start_with(tenants, test_settings()).await
    }

    /// Same, with explicit settings.
    pub async fn start_with(tenants: &[(&str, String)], settings: Settings) -> TestPooler {
        let pg = PgServer::shared();
        let dir = std::env::temp_dir().join(unique("pgfleet-tenants"));
        std::fs::create_dir_all(&dir).expect("create tenants dir");
        for (name, doc) in tenants {
            std::fs::write(dir.join(name), doc).expect("write tenant");
        }
        let pooler = RunningPooler::start(PoolerConfig {
            tenant_source: TenantSourceConfig::Directory(dir.clone()),
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            session_port: 0,
            pooled_port: 0,
            max_connections: 10_000,
            settings,
            workers: Workers::Ambient,
            admin_port: Some(0),
        })
        .await
        .expect("pooler starts");
        TestPooler { pg, dir, pooler }
    }

    /// The pooled (transaction by default) port.
    pub fn pooled(&self) -> u16 {
        self.pooler.pooled_addr.port()
    }

    /// The session port.
    pub fn session(&self) -> u16 {
        self.pooler.session_addr.port()
    }

    /// Writes (or replaces, atomically) a tenant file and waits until the pooler has loaded
    /// a tenant with that document's external id and content.
    pub async fn write_tenant(&self, file: &str, doc: &str) {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, doc).expect("write tenant");
        std::fs::rename(&tmp, self.dir.join(file)).expect("rename tenant");
        let parsed = pgfleet_crds::TenantDocument::parse(doc).expect("test documents are valid");
        let want = pgfleet_pooler::tenants::tenant::revision_of(&parsed);
        self.wait_until(|p| {
            p.shared
                .tenants
                .get(&parsed.external_id)
                .is_some_and(|t| t.revision == want)
        })
        .await;
    }

    /// Removes a tenant file and waits until the pooler dropped the tenant.
    pub async fn remove_tenant(&self, file: &str, external_id: &str) {
        std::fs::remove_file(self.dir.join(file)).expect("remove tenant");
        self.wait_until(|p| p.shared.tenants.get(external_id).is_none())
            .await;
    }

    /// Polls `cond` on the pooler for up to 5 s, panicking if it never holds.
    pub async fn wait_until(&self, cond: impl Fn(&RunningPooler) -> bool) {
        for _ in 0..500 {
            if cond(&self.pooler) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached within 5 s");
    }

    /// Connects with tokio-postgres; the connection task runs in the background.
    pub async fn connect(
        &self,
        port: u16,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        connect_to(port, user, password, database).await
    }
}

/// A tokio-postgres config for 127.0.0.1:`port`, for tests that add settings of their own.
pub fn client_config(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(database)
        .connect_timeout(Duration::from_secs(5));
    config
}

/// Connects with `config`; the connection task runs in the background.
pub async fn connect_config(
    config: &tokio_postgres::Config,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects with tokio-postgres to 127.0.0.1:`port`.
pub async fn connect_to(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> Result<Client, tokio_postgres::Error> {
    connect_config(&client_config(port, user, password, database)).await
}

/// A tenant document over the shared server with `users` as `(name, password, extra yaml)`.
pub fn tenant_doc(id: &str, database: &str, users: &[(&str, &str)], extra: &str) -> String {
    let pg = PgServer::shared();
    let mut doc = format!(
        "externalId: {id}\nupstream: {{host: 127.0.0.1, port: {}, database: {database}}}\n",
        pg.port()
    );
    if !users.is_empty() {
        doc.push_str("users:\n");
        for (name, password) in users {
            doc.push_str(&format!("  - {{name: {name}, password: {password}}}\n"));
        }
    }
    doc.push_str(extra);
    doc
}

/// The SQLSTATE of a tokio-postgres error, if the server (pooler) sent one.
pub fn sqlstate(err: &tokio_postgres::Error) -> Option<String> {
    err.as_db_error().map(|e| e.code().code().to_string())
}

/// The message of a tokio-postgres error, if the server (pooler) sent one.
pub fn message(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| err.to_string())
}

/// Polls `pg_stat_activity` until `f(count)` holds for (user, database), up to 5 s.
pub async fn wait_backends(user: &str, database: &str, f: impl Fn(i64) -> bool) -> i64 {
    let pg = PgServer::shared();
    let mut last = -1;
    for _ in 0..100 {
        last = pg.backend_count(user, database);
        if f(last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("backend count for {user}/{database} never satisfied the condition (last {last})");
}

/// A loopback address for raw-socket tests.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// `GET path` over plain HTTP/1.1 (the admin port): (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin port accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: pooler\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("admin answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Asserts that a new login of the SCRAM test user to `tenant` is refused as unknown.
pub async fn assert_not_found(port: u16, tenant: &str, db: &str) {
    let login = format!("{}.{tenant}", testkit::SCRAM_USER);
    match connect_to(port, &login, testkit::SCRAM_PASSWORD, db).await {
        Ok(_) => panic!("login to tenant {tenant} succeeded; it should not exist"),
        Err(e) => assert!(
            message(&e).contains("(ENOTFOUND)"),
            "expected ENOTFOUND for {login}, got {:?} {}",
            sqlstate(&e),
            message(&e)
        ),
    }
}
