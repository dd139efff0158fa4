//! Hot reload of tenant documents against a real PostgreSQL: reload is a diff. Unchanged pools
//! keep their server connections, a resized pool grows at once and shrinks as connections are
//! released, a changed upstream or password closes the old server connections as they are
//! released, and a removed tenant refuses new clients and closes when its clients leave.
// Tests run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]
// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgfleet_crds::PoolMode;
use pgfleet_pooler::pool::Pool;
use testkit::{SCRAM_PASSWORD, SCRAM_USER};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The first column of the first row `sql` returns, run with the simple protocol (safe on the
/// transaction-mode port, where named prepared statements do not outlive a transaction).
async fn scalar(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", message(&e)));
    for m in messages {
        if let SimpleQueryMessage::Row(row) = m {
            return row.get(0).expect("first column is not NULL").to_string();
        }
    }
    panic!("{sql}: returned no row");
}

/// `pg_backend_pid()` of the server this statement ran on.
async fn backend_pid(client: &Client) -> i32 {
    scalar(client, "SELECT pg_backend_pid()")
        .await
        .parse()
        .expect("pid")
}

/// Begins a transaction and returns the pid of the server it holds.
async fn begin(client: &Client) -> i32 {
    scalar(client, "BEGIN; SELECT pg_backend_pid()")
        .await
        .parse()
        .expect("pid")
}

/// Client backend pids of `user` in `database`, straight from `pg_stat_activity`.
fn backend_pids(pg: &PgServer, user: &str, database: &str) -> Vec<i32> {
    let out = pg.psql(&format!(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
         AND usename = '{user}' AND datname = '{database}' AND pid <> pg_backend_pid() ORDER BY pid"
    ));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().expect("pid"))
        .collect()
}

/// Polls until `pid` is no longer a backend of the shared server (up to 5 s).
async fn wait_pid_gone(pid: i32) {
    let pg = PgServer::shared();
    for _ in 0..100 {
        let alive = pg.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
        ));
        if alive == "0" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server backend {pid} is still open 5 s after its connection was released");
}

/// Writes a tenant file atomically without waiting for the pooler (for documents the harness
/// cannot parse, such as invalid ones).
fn write_raw(t: &TestPooler, file: &str, text: &str) {
    let tmp = t.dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write tenant");
    std::fs::rename(&tmp, t.dir.join(file)).expect("rename tenant");
}

/// The pools of `tenant` in `mode`.
fn pools_of(t: &TestPooler, tenant: &str, mode: PoolMode) -> Vec<Arc<Pool>> {
    t.pooler
        .shared
        .pools
        .of_tenant(tenant)
        .into_iter()
        .filter(|p| p.key.mode == mode)
        .collect()
}

/// Clients waiting for a server in `tenant`'s transaction-mode pools.
fn waiting(p: &pgfleet_pooler::app::RunningPooler, tenant: &str) -> usize {
    p.shared
        .pools
        .of_tenant(tenant)
        .iter()
        .filter(|pool| pool.key.mode == PoolMode::Transaction)
        .map(|pool| pool.counts().2)
        .sum()
}

/// Connects as `user.tenant` with the tenant's default database (libpq convention: the
/// database equals the user name).
async fn connect_default(port: u16, tenant: &str, user: &str, password: &str) -> Client {
    let login = format!("{user}.{tenant}");
    connect_to(port, &login, password, &login)
        .await
        .unwrap_or_else(|e| panic!("login {login}: {}", message(&e)))
}

async fn connect_ok(port: u16, tenant: &str, user: &str, password: &str, db: &str) -> Client {
    let login = format!("{user}.{tenant}");
    connect_to(port, &login, password, db)
        .await
        .unwrap_or_else(|e| panic!("login {login} to {db}: {}", message(&e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_tenant_keeps_its_connections_across_reloads() {
    let (db_a, db_b) = (fresh_database(SCRAM_USER), fresh_database(SCRAM_USER));
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[
        ("a.yaml", tenant_doc("keep_a", &db_a, &users, "")),
        (
            "b.yaml",
            tenant_doc("keep_b", &db_b, &users, "defaultPoolSize: 2\n"),
        ),
    ])
    .await;
    let session = connect_ok(t.session(), "keep_a", SCRAM_USER, SCRAM_PASSWORD, &db_a).await;
    let pooled = connect_ok(t.pooled(), "keep_a", SCRAM_USER, SCRAM_PASSWORD, &db_a).await;
    let session_pid = backend_pid(&session).await;
    let mut pooled_pid = 0;
    for _ in 0..3 {
        pooled_pid = backend_pid(&pooled).await;
    }
    // The transaction-mode client is alone in its pool, so it always gets the same server.
    assert_eq!(backend_pid(&pooled).await, pooled_pid);
    let b = connect_ok(t.pooled(), "keep_b", SCRAM_USER, SCRAM_PASSWORD, &db_b).await;
    backend_pid(&b).await;
    let a_backends = PgServer::shared().backend_count(SCRAM_USER, &db_a);
    assert_eq!(
        a_backends, 2,
        "one session server and one pooled server for keep_a"
    );

    for size in [3, 4, 5] {
        t.write_tenant(
            "b.yaml",
            &tenant_doc(
                "keep_b",
                &db_b,
                &users,
                &format!("defaultPoolSize: {size}\n"),
            ),
        )
        .await;
        assert_eq!(
            backend_pid(&session).await,
            session_pid,
            "the session client of an unchanged tenant kept its server (reload to size {size})"
        );
        let rows = pooled
            .simple_query("SELECT 1; SELECT 2")
            .await
            .unwrap_or_else(|e| panic!("pooled client after reload: {}", message(&e)));
        assert_eq!(
            rows.iter()
                .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                .count(),
            2
        );
        assert_eq!(
            backend_pid(&pooled).await,
            pooled_pid,
            "the unchanged pool kept its server connection (reload to size {size})"
        );
        // The changed tenant took the new size.
        let pool = &pools_of(&t, "keep_b", PoolMode::Transaction)[0];
        assert_eq!(pool.config().size, size);
        backend_pid(&b).await;
    }
    assert_eq!(
        backend_pids(PgServer::shared(), SCRAM_USER, &db_a).len(),
        2,
        "no server of the unchanged tenant was opened or closed by the reloads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_size_grows_in_place() {
    let db = fresh_database(SCRAM_USER);
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[(
        "g.yaml",
        tenant_doc("grow", &db, &users, "defaultPoolSize: 1\n"),
    )])
    .await;
    let x = connect_ok(t.pooled(), "grow", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    let y = Arc::new(connect_ok(t.pooled(), "grow", SCRAM_USER, SCRAM_PASSWORD, &db).await);
    let z = connect_ok(t.pooled(), "grow", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    let w = Arc::new(connect_ok(t.pooled(), "grow", SCRAM_USER, SCRAM_PASSWORD, &db).await);

    // X holds the only server in an open transaction; Y queues behind it.
    let x_pid = begin(&x).await;
    let queued = {
        let y = Arc::clone(&y);
        tokio::spawn(async move { scalar(&y, "SELECT 'y ran'").await })
    };
    t.wait_until(|p| waiting(p, "grow") == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !queued.is_finished(),
        "Y ran although the only server is held by X"
    );

    t.write_tenant(
        "g.yaml",
        &tenant_doc("grow", &db, &users, "defaultPoolSize: 3\n"),
    )
    .await;
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(1), queued)
        .await
        .expect("the queued client got a server within 1 s of the pool growing")
        .expect("task");
    assert_eq!(out, "y ran");
    // X still has its transaction on the same server, unaware of the reload.
    assert_eq!(backend_pid(&x).await, x_pid);

    // Y holds a second server; Z's query takes the third at once.
    let y_pid = begin(&y).await;
    let z_pid = tokio::time::timeout(Duration::from_secs(1), backend_pid(&z))
        .await
        .expect("Z ran at once on the third server");
    assert_eq!(
        std::collections::HashSet::from([x_pid, y_pid, z_pid]).len(),
        3,
        "three distinct servers"
    );
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");

    // Size 3, not unlimited: with X, Y and Z each in a transaction, W waits.
    let z_again = begin(&z).await;
    assert_eq!(z_again, z_pid);
    let w_task = {
        let w = Arc::clone(&w);
        tokio::spawn(async move { scalar(&w, "SELECT 'w ran'").await })
    };
    t.wait_until(|p| waiting(p, "grow") == 1).await;
    assert!(
        !w_task.is_finished(),
        "W ran although all 3 servers are in transactions"
    );
    x.batch_execute("COMMIT").await.expect("X commits");
    let out = tokio::time::timeout(Duration::from_secs(2), w_task)
        .await
        .expect("W ran once X released its server")
        .expect("task");
    assert_eq!(out, "w ran");
    y.batch_execute("COMMIT").await.expect("Y commits");
    z.batch_execute("COMMIT").await.expect("Z commits");
    assert_eq!(PgServer::shared().backend_count(SCRAM_USER, &db), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_size_shrinks_as_connections_are_released() {
    let db = fresh_database(SCRAM_USER);
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[(
        "s.yaml",
        tenant_doc("shrink", &db, &users, "defaultPoolSize: 3\n"),
    )])
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect_ok(t.pooled(), "shrink", SCRAM_USER, SCRAM_PASSWORD, &db).await);
    }
    let mut pids = Vec::new();
    for c in &clients {
        pids.push(begin(c).await);
    }
    assert_eq!(
        std::collections::HashSet::<i32>::from_iter(pids.iter().copied()).len(),
        3
    );
    wait_backends(SCRAM_USER, &db, |n| n == 3).await;

    t.write_tenant(
        "s.yaml",
        &tenant_doc("shrink", &db, &users, "defaultPoolSize: 1\n"),
    )
    .await;
    // Busy servers are not taken away from their transactions.
    for (c, pid) in clients.iter().zip(&pids) {
        assert_eq!(backend_pid(c).await, *pid, "transaction kept its server");
    }
    assert_eq!(PgServer::shared().backend_count(SCRAM_USER, &db), 3);

    for c in &clients {
        c.batch_execute("COMMIT").await.expect("commit");
    }
    wait_backends(SCRAM_USER, &db, |n| n == 1).await;
    let pool = &pools_of(&t, "shrink", PoolMode::Transaction)[0];
    assert_eq!(pool.counts().0, 1, "the pool counts one server");

    // The clients never reconnected and still work, now sharing the one server.
    let mut after = std::collections::HashSet::new();
    for c in &clients {
        after.insert(backend_pid(c).await);
        assert_eq!(scalar(c, "SELECT 40 + 2").await, "42");
    }
    assert_eq!(after.len(), 1, "one server left: {after:?}");
    assert_eq!(PgServer::shared().backend_count(SCRAM_USER, &db), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_rotation_closes_old_servers_as_released() {
    let pg = PgServer::shared();
    let role = unique("rot");
    pg.psql(&format!("CREATE ROLE {role} LOGIN PASSWORD 'one'"));
    let db = fresh_database(&role);
    let t =
        TestPooler::start(&[("r.yaml", tenant_doc("rotate", &db, &[(&role, "one")], ""))]).await;
    let login = format!("{role}.rotate");
    let pooled = connect_to(t.pooled(), &login, "one", &db)
        .await
        .expect("pooled login");
    let session = connect_to(t.session(), &login, "one", &db)
        .await
        .expect("session login");
    let session_pid = backend_pid(&session).await;
    backend_pid(&pooled).await;
    // The pooled client is inside a transaction when the rotation happens.
    let txn_pid = begin(&pooled).await;
    pooled
        .batch_execute("CREATE TABLE rotated (v int)")
        .await
        .expect("create table");

    pg.psql(&format!("ALTER ROLE {role} PASSWORD 'two'"));
    t.write_tenant("r.yaml", &tenant_doc("rotate", &db, &[(&role, "two")], ""))
        .await;

    // The open transaction carries on, on its server.
    assert_eq!(backend_pid(&pooled).await, txn_pid);
    pooled
        .batch_execute("INSERT INTO rotated VALUES (1); COMMIT")
        .await
        .expect("the transaction open across the rotation commits");
    // Released after the rotation: closed, not reused.
    wait_pid_gone(txn_pid).await;
    let mut new_pids = std::collections::HashSet::new();
    for _ in 0..3 {
        new_pids.insert(backend_pid(&pooled).await);
    }
    assert!(!new_pids.contains(&txn_pid), "{new_pids:?}");
    assert_eq!(scalar(&pooled, "SELECT count(*) FROM rotated").await, "1");

    // The session client keeps its server until it leaves; then that server closes.
    assert_eq!(backend_pid(&session).await, session_pid);
    drop(session);
    wait_pid_gone(session_pid).await;
    let stale: Vec<i32> = backend_pids(pg, &role, &db)
        .into_iter()
        .filter(|p| *p == txn_pid || *p == session_pid)
        .collect();
    assert!(
        stale.is_empty(),
        "servers logged in with the old password remain: {stale:?}"
    );

    // New logins: the new password works on both ports, the old one is refused.
    for port in [t.pooled(), t.session()] {
        let c = connect_to(port, &login, "two", &db)
            .await
            .expect("new password");
        assert_eq!(scalar(&c, "SELECT current_user").await, role);
        match connect_to(port, &login, "one", &db).await {
            Ok(_) => panic!("the old password still logs in"),
            Err(e) => assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{}", message(&e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_port_change_moves_servers_as_released() {
    let pg = PgServer::shared();
    let pg2 = tokio::task::spawn_blocking(PgServer::start)
        .await
        .expect("second server");
    let db = fresh_database(SCRAM_USER);
    pg2.create_database(&db, SCRAM_USER);
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let doc = tenant_doc("moving", &db, &users, "");
    let t = TestPooler::start(&[("m.yaml", doc.clone())]).await;
    let c = connect_ok(t.pooled(), "moving", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    assert_eq!(
        scalar(&c, "SELECT inet_server_port()").await,
        pg.port().to_string()
    );
    let in_txn = scalar(&c, "BEGIN; SELECT inet_server_port()").await;
    assert_eq!(in_txn, pg.port().to_string());

    let moved = doc.replace(
        &format!("port: {}", pg.port()),
        &format!("port: {}", pg2.port()),
    );
    assert_ne!(moved, doc);
    t.write_tenant("m.yaml", &moved).await;

    // The open transaction finishes where it started.
    assert_eq!(
        scalar(&c, "SELECT inet_server_port()").await,
        pg.port().to_string()
    );
    c.batch_execute("COMMIT").await.expect("commit");
    // Released after the change: the old server's connection closes.
    wait_backends(SCRAM_USER, &db, |n| n == 0).await;
    // The same client, without reconnecting, now runs on the new upstream.
    assert_eq!(
        scalar(&c, "SELECT inet_server_port()").await,
        pg2.port().to_string()
    );
    let fresh = connect_ok(t.pooled(), "moving", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    assert_eq!(
        scalar(&fresh, "SELECT inet_server_port()").await,
        pg2.port().to_string()
    );
    let s = connect_ok(t.session(), "moving", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    assert_eq!(
        scalar(&s, "SELECT inet_server_port()").await,
        pg2.port().to_string()
    );
    assert_eq!(pg.backend_count(SCRAM_USER, &db), 0);
    assert!(pg2.backend_count(SCRAM_USER, &db) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_database_change_routes_new_clients_and_releases_the_old_database() {
    let (d1, d2) = (fresh_database(SCRAM_USER), fresh_database(SCRAM_USER));
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[("d.yaml", tenant_doc("movedb", &d1, &users, ""))]).await;
    let old = connect_default(t.pooled(), "movedb", SCRAM_USER, SCRAM_PASSWORD).await;
    assert_eq!(scalar(&old, "SELECT current_database()").await, d1);
    wait_backends(SCRAM_USER, &d1, |n| n == 1).await;

    t.write_tenant("d.yaml", &tenant_doc("movedb", &d2, &users, ""))
        .await;
    let new = connect_default(t.pooled(), "movedb", SCRAM_USER, SCRAM_PASSWORD).await;
    assert_eq!(scalar(&new, "SELECT current_database()").await, d2);
    let new_session = connect_default(t.session(), "movedb", SCRAM_USER, SCRAM_PASSWORD).await;
    assert_eq!(scalar(&new_session, "SELECT current_database()").await, d2);
    // The client from before the change keeps working.
    for _ in 0..3 {
        assert_eq!(scalar(&old, "SELECT 1").await, "1");
    }
    // Once it is gone nothing needs the old default database any more: its server
    // connections must close (otherwise, e.g., DROP DATABASE of the old one is blocked).
    drop(old);
    wait_backends(SCRAM_USER, &d1, |n| n == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_tenant_refuses_new_clients_and_closes_when_clients_leave() {
    let (db_t, db_u) = (fresh_database(SCRAM_USER), fresh_database(SCRAM_USER));
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[
        ("t.yaml", tenant_doc("gone", &db_t, &users, "")),
        ("u.yaml", tenant_doc("stays", &db_u, &users, "")),
    ])
    .await;
    let c = connect_ok(t.pooled(), "gone", SCRAM_USER, SCRAM_PASSWORD, &db_t).await;
    let d = connect_ok(t.pooled(), "gone", SCRAM_USER, SCRAM_PASSWORD, &db_t).await;
    let u = connect_ok(t.pooled(), "stays", SCRAM_USER, SCRAM_PASSWORD, &db_u).await;
    let u_session = connect_ok(t.session(), "stays", SCRAM_USER, SCRAM_PASSWORD, &db_u).await;
    let u_session_pid = backend_pid(&u_session).await;
    backend_pid(&d).await;
    backend_pid(&u).await;
    // C is mid-transaction when its tenant disappears.
    let c_pid = begin(&c).await;

    t.remove_tenant("t.yaml", "gone").await;
    assert_not_found(t.pooled(), "gone", &db_t).await;
    assert_not_found(t.session(), "gone", &db_t).await;

    // Live clients finish: C's transaction, then more transactions; D too.
    assert_eq!(backend_pid(&c).await, c_pid);
    c.batch_execute("COMMIT")
        .await
        .expect("commit after removal");
    for _ in 0..3 {
        assert_eq!(scalar(&c, "SELECT 1").await, "1");
        assert_eq!(scalar(&d, "SELECT 2").await, "2");
    }
    // The other tenant noticed nothing.
    assert_eq!(backend_pid(&u_session).await, u_session_pid);
    assert_eq!(scalar(&u, "SELECT 3").await, "3");
    let u2 = connect_ok(t.pooled(), "stays", SCRAM_USER, SCRAM_PASSWORD, &db_u).await;
    assert_eq!(scalar(&u2, "SELECT 4").await, "4");

    assert!(PgServer::shared().backend_count(SCRAM_USER, &db_t) >= 1);
    drop(c);
    drop(d);
    wait_backends(SCRAM_USER, &db_t, |n| n == 0).await;
    assert_eq!(backend_pid(&u_session).await, u_session_pid);
    assert_eq!(scalar(&u, "SELECT 5").await, "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_document_keeps_the_last_valid_version() {
    // An edit that breaks a file must not take its tenant offline: the pooler logs the
    // problem and keeps serving the file's last valid version. Deleting the file removes it.
    let (db_t, db_u) = (fresh_database(SCRAM_USER), fresh_database(SCRAM_USER));
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let good = tenant_doc("flaky", &db_t, &users, "");
    let t = TestPooler::start(&[
        ("t.yaml", good.clone()),
        ("u.yaml", tenant_doc("steady", &db_u, &users, "")),
    ])
    .await;
    let revision = t
        .pooler
        .shared
        .tenants
        .get("flaky")
        .expect("loaded")
        .revision;
    let c = connect_ok(t.pooled(), "flaky", SCRAM_USER, SCRAM_PASSWORD, &db_t).await;
    let u_session = connect_ok(t.session(), "steady", SCRAM_USER, SCRAM_PASSWORD, &db_u).await;
    let u_pid = backend_pid(&u_session).await;
    backend_pid(&c).await;

    let broken = [
        // Not YAML.
        "externalId: [\n".to_string(),
        // YAML, but fails validation.
        good.replace("externalId: flaky", "externalId: flaky\ndefaultPoolSize: 0"),
    ];
    for bad in &broken {
        assert!(pgfleet_crds::TenantDocument::parse(bad).is_err());
        let before = t.pooler.shared.tenants.reloads();
        write_raw(&t, "t.yaml", bad);
        t.wait_until(|p| p.shared.tenants.reloads() > before).await;
        let kept = t.pooler.shared.tenants.get("flaky").expect("tenant kept");
        assert_eq!(kept.revision, revision, "the last valid version is served");
        let again = connect_ok(t.pooled(), "flaky", SCRAM_USER, SCRAM_PASSWORD, &db_t).await;
        assert_eq!(scalar(&again, "SELECT current_database()").await, db_t);
        assert_eq!(scalar(&c, "SELECT 1").await, "1");
        // The other tenant is unaffected.
        assert_eq!(backend_pid(&u_session).await, u_pid);
    }
    // A valid edit applies again, and deleting the file removes the tenant.
    t.write_tenant(
        "t.yaml",
        &good.replace("externalId: flaky", "externalId: flaky\ndefaultPoolSize: 3"),
    )
    .await;
    t.remove_tenant("t.yaml", "flaky").await;
    assert_not_found(t.pooled(), "flaky", &db_t).await;
    assert_eq!(scalar(&c, "SELECT 2").await, "2");
    assert_eq!(backend_pid(&u_session).await, u_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_mode_change_to_session_applies_to_new_clients() {
    let db = fresh_database(SCRAM_USER);
    let user_entry = |mode: &str| {
        format!("users:\n  - {{name: {SCRAM_USER}, password: {SCRAM_PASSWORD}{mode}}}\n")
    };
    let t = TestPooler::start(&[("m.yaml", tenant_doc("modes", &db, &[], &user_entry("")))]).await;
    let old = connect_ok(t.pooled(), "modes", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    // Transaction mode: a second client shares the first's server between transactions.
    let other = connect_ok(t.pooled(), "modes", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    let p1 = backend_pid(&old).await;
    let p2 = backend_pid(&other).await;
    assert_eq!(p1, p2, "transaction mode shares the idle server");
    drop(other);

    t.write_tenant(
        "m.yaml",
        &tenant_doc("modes", &db, &[], &user_entry(", mode: session")),
    )
    .await;
    let a = connect_ok(t.pooled(), "modes", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    let b = connect_ok(t.pooled(), "modes", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    let a1 = begin(&a).await;
    a.batch_execute("COMMIT; SET work_mem = '7MB'")
        .await
        .expect("set");
    let a2 = begin(&a).await;
    a.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(a1, a2, "session mode keeps one server across transactions");
    assert_eq!(scalar(&a, "SHOW work_mem").await, "7MB", "SET persists");
    let b1 = backend_pid(&b).await;
    assert_ne!(a1, b1, "two session-mode clients never share a server");
    assert_eq!(scalar(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(
        pools_of(&t, "modes", PoolMode::Session).len(),
        1,
        "the new clients are in a session-mode pool"
    );

    // The client from before the change keeps working.
    for _ in 0..3 {
        assert_eq!(scalar(&old, "SELECT 1").await, "1");
    }
    old.batch_execute("BEGIN; SELECT 1; COMMIT")
        .await
        .expect("old client transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_tenant_makes_it_reachable_without_disturbing_others() {
    let (db_a, db_b) = (fresh_database(SCRAM_USER), fresh_database(SCRAM_USER));
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[("a.yaml", tenant_doc("first", &db_a, &users, ""))]).await;
    let session = connect_ok(t.session(), "first", SCRAM_USER, SCRAM_PASSWORD, &db_a).await;
    let pooled = connect_ok(t.pooled(), "first", SCRAM_USER, SCRAM_PASSWORD, &db_a).await;
    let session_pid = backend_pid(&session).await;
    let pooled_pid = backend_pid(&pooled).await;
    assert_not_found(t.pooled(), "second", &db_b).await;

    t.write_tenant("b.yaml", &tenant_doc("second", &db_b, &users, ""))
        .await;
    for port in [t.pooled(), t.session()] {
        let c = connect_default(port, "second", SCRAM_USER, SCRAM_PASSWORD).await;
        assert_eq!(scalar(&c, "SELECT current_database()").await, db_b);
    }
    assert_eq!(backend_pid(&session).await, session_pid);
    assert_eq!(backend_pid(&pooled).await, pooled_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_tenant_files_does_not_reload() {
    // A reload reads every file, and opening a file is an inotify event too: if the watcher
    // counted it, each reload would set off the next, forever (20 reloads and log lines a
    // second on an idle pooler). Only changes reload.
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("quiet", &db, &[(SCRAM_USER, SCRAM_PASSWORD)], "");
    let t = TestPooler::start(&[("q.yaml", doc.clone())]).await;
    // Let any event from the harness's own writes settle (the watcher waits 50 ms per burst).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = t.pooler.shared.tenants.reloads();
    for _ in 0..3 {
        let text = std::fs::read_to_string(t.dir.join("q.yaml")).expect("read tenant");
        assert_eq!(text, doc);
        let _ = std::fs::read_dir(&t.dir).expect("list").count();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        t.pooler.shared.tenants.reloads(),
        before,
        "nothing changed, so nothing may reload"
    );
    // A change still reloads.
    t.write_tenant(
        "q.yaml",
        &doc.replace("externalId: quiet", "externalId: quiet\ndefaultPoolSize: 4"),
    )
    .await;
    assert!(t.pooler.shared.tenants.reloads() > before);
}
