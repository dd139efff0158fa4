//! Multi-tenant routing, transaction and session pooling, pool sizes, queueing.
// Tests run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use testkit::{SCRAM_PASSWORD, SCRAM_USER};
use tokio_postgres::types::Type;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_each_see_their_own_data() {
    let (db_a, db_b) = (fresh_database(SCRAM_USER), fresh_database(SCRAM_USER));
    let pg = PgServer::shared();
    for (db, name) in [(&db_a, "tenant a"), (&db_b, "tenant b")] {
        pg.psql_db(db, &format!("CREATE TABLE who (name text); INSERT INTO who VALUES ('{name}'); ALTER TABLE who OWNER TO {SCRAM_USER}"));
    }
    let users = [(SCRAM_USER, SCRAM_PASSWORD)];
    let t = TestPooler::start(&[
        ("a.yaml", tenant_doc("alpha", &db_a, &users, "")),
        ("b.yaml", tenant_doc("beta", &db_b, &users, "")),
    ])
    .await;
    let a = t
        .connect(
            t.pooled(),
            &format!("{SCRAM_USER}.alpha"),
            SCRAM_PASSWORD,
            &db_a,
        )
        .await
        .expect("alpha");
    let b = t
        .connect(
            t.pooled(),
            &format!("{SCRAM_USER}.beta"),
            SCRAM_PASSWORD,
            &db_b,
        )
        .await
        .expect("beta");
    for _ in 0..20 {
        let ra: String = a.query_typed("SELECT name FROM who", &[]).await.expect("a")[0].get(0);
        let rb: String = b.query_typed("SELECT name FROM who", &[]).await.expect("b")[0].get(0);
        assert_eq!((ra.as_str(), rb.as_str()), ("tenant a", "tenant b"));
    }
    // The tenant's default database is used when the client names none of its own.
    let c = t
        .connect(
            t.pooled(),
            &format!("{SCRAM_USER}.alpha"),
            SCRAM_PASSWORD,
            &format!("{SCRAM_USER}.alpha"),
        )
        .await
        .expect("default db");
    let db: String = c
        .query_typed("SELECT current_database()", &[])
        .await
        .expect("q")[0]
        .get(0);
    assert_eq!(db, db_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_shares_servers_and_honours_pool_size() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc(
        "shared",
        &db,
        &[(SCRAM_USER, SCRAM_PASSWORD)],
        "defaultPoolSize: 2\n",
    );
    let t = TestPooler::start(&[("t.yaml", doc)]).await;
    let user = format!("{SCRAM_USER}.shared");
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(
            t.connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
                .await
                .expect("connect"),
        );
    }
    let mut tasks = Vec::new();
    for c in clients {
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                // Unnamed statements: named ones do not outlive a transaction-mode transaction.
                let rows = c
                    .query_typed("SELECT pg_sleep(0.001), 1::int", &[])
                    .await
                    .expect("query");
                assert_eq!(rows[0].get::<_, i32>(1), 1);
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("task"));
    }
    // Ten clients, never more than two server backends.
    let backends = PgServer::shared().backend_count(SCRAM_USER, &db);
    assert!(
        (1..=2).contains(&backends),
        "{backends} backends for pool size 2"
    );
    let pids: std::collections::HashSet<i32> = {
        let mut s = std::collections::HashSet::new();
        for c in &clients {
            s.insert(
                c.query_typed("SELECT pg_backend_pid()", &[])
                    .await
                    .expect("pid")[0]
                    .get(0),
            );
        }
        s
    };
    assert!(pids.len() <= 2, "{pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_holds_one_server_per_client_and_resets_it() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc(
        "sess",
        &db,
        &[(SCRAM_USER, SCRAM_PASSWORD)],
        "defaultPoolSize: 3\n",
    );
    let t = TestPooler::start(&[("t.yaml", doc)]).await;
    let user = format!("{SCRAM_USER}.sess");
    let a = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("a");
    let b = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("b");
    let pa1: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("q")
        .get(0);
    let pb: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("q")
        .get(0);
    a.batch_execute("SET work_mem = '7MB'").await.expect("set");
    let pa2: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(pa1, pa2, "session mode keeps the same server");
    assert_ne!(pa1, pb, "two sessions never share a server");
    drop(a);
    wait_backends(SCRAM_USER, &db, |n| n == 2).await;
    // The next session gets a server whose session state was discarded.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("c");
    let wm: String = c
        .query_one("SHOW work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(
        wm, "4MB",
        "DISCARD ALL reset the previous session's settings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_while_idle_is_replaced_without_the_client_noticing() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc(
        "phoenix",
        &db,
        &[(SCRAM_USER, SCRAM_PASSWORD)],
        "defaultPoolSize: 1\n",
    );
    let t = TestPooler::start(&[("t.yaml", doc)]).await;
    let c = t
        .connect(
            t.pooled(),
            &format!("{SCRAM_USER}.phoenix"),
            SCRAM_PASSWORD,
            &db,
        )
        .await
        .expect("connect");
    let first: i32 = c
        .query_typed("SELECT pg_backend_pid()", &[])
        .await
        .expect("q")[0]
        .get(0);
    // The pool's only server dies while idle (an administrator, a failover, an idle timeout).
    let pg = PgServer::shared();
    assert_eq!(
        pg.psql(&format!("SELECT pg_terminate_backend({first})")),
        "t"
    );
    wait_backends(SCRAM_USER, &db, |n| n == 0).await;
    let second: i32 = c
        .query_typed("SELECT pg_backend_pid()", &[])
        .await
        .expect("next transaction works")[0]
        .get(0);
    assert_ne!(first, second);
}

/// A pool of one with many queued clients: every released server goes straight to a waiter
/// with the waiter's request already sent (the hand-off path). Each client must get exactly
/// its own answers, for single statements, pipelined batches and explicit transactions alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_clients_handed_a_server_get_their_own_answers() {
    let db = fresh_database(SCRAM_USER);
    PgServer::shared().psql_db(
        &db,
        &format!(
            "CREATE TABLE handed (client int, n int); ALTER TABLE handed OWNER TO {SCRAM_USER}"
        ),
    );
    let doc = tenant_doc(
        "handoff",
        &db,
        &[(SCRAM_USER, SCRAM_PASSWORD)],
        "defaultPoolSize: 1\ncheckoutTimeout: 30s\n",
    );
    let t = TestPooler::start(&[("t.yaml", doc)]).await;
    let user = format!("{SCRAM_USER}.handoff");
    const CLIENTS: i32 = 16;
    const ROUNDS: i32 = 25;
    let mut tasks = Vec::new();
    // Everyone logs in first and starts at once, so the clients really queue for the server.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(
            t.connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
                .await
                .expect("connect"),
        );
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    for (id, c) in (0..CLIENTS).zip(clients) {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for round in 0..ROUNDS {
                // Extended protocol, one statement.
                let got: i32 = c
                    .query_typed("SELECT $1::int", &[(&(id * 1000 + round), Type::INT4)])
                    .await
                    .expect("extended")[0]
                    .get(0);
                assert_eq!(got, id * 1000 + round);
                // Three statements pipelined in one batch.
                let param = [(
                    &id as &(dyn tokio_postgres::types::ToSql + Sync),
                    Type::INT4,
                )];
                let (a, b, c3) = tokio::join!(
                    c.query_typed("SELECT $1::int", &param),
                    c.query_typed("SELECT $1::int + 1", &param),
                    c.query_typed("SELECT $1::int + 2", &param),
                );
                let got: Vec<i32> = [a, b, c3]
                    .into_iter()
                    .map(|r| r.expect("pipelined")[0].get(0))
                    .collect();
                assert_eq!(got, vec![id, id + 1, id + 2]);
                // A multi-statement simple-protocol transaction.
                c.batch_execute(&format!(
                    "BEGIN; INSERT INTO handed VALUES ({id}, {round}); COMMIT"
                ))
                .await
                .expect("transaction");
            }
            let rows: i64 = c
                .query_one(
                    &format!("SELECT count(*) FROM handed WHERE client = {id}"),
                    &[],
                )
                .await
                .expect("count")
                .get(0);
            assert_eq!(rows, i64::from(ROUNDS));
        }));
    }
    for task in tasks {
        // A mixed-up hand-off shows up as a wrong answer or as a client left waiting forever.
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("clients finish within 60 s")
            .expect("client task");
    }
    let backends = PgServer::shared().backend_count(SCRAM_USER, &db);
    assert!(backends <= 1, "{backends} backends for pool size 1");
    // The queue was really used: clients waited (and so were handed servers).
    let (status, metrics) = http_get(t.pooler.admin_addr.expect("admin"), "/metrics").await;
    assert_eq!(status, 200);
    let waits: f64 = metrics
        .lines()
        .find(|l| l.starts_with("pgfleet_client_waits_total{") && l.contains("handoff"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no wait counter for the tenant in:\n{metrics}"));
    assert!(waits > 0.0, "no client ever waited: {waits}");
}
