//! Authentication: clients log in to the pooler with SCRAM-SHA-256; the pooler logs in upstream
//! with whatever the server asks (SCRAM, MD5, cleartext) for `users[]`, or by SCRAM passthrough
//! for `authQuery` tenants, where it never learns the password.
// Tests run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions fail loudly on purpose, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use testkit::{
    AUTH_PASSWORD, AUTH_QUERY, AUTH_USER, MD5_PASSWORD, MD5_USER, PLAIN_PASSWORD, PLAIN_USER,
    SCRAM_PASSWORD, SCRAM_USER,
};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Upper bound for any single login or query in these tests.
const STEP: Duration = Duration::from_secs(10);

/// The first column of the first row of a simple query, as text.
async fn text(client: &Client, sql: &str) -> String {
    let messages = tokio::time::timeout(STEP, client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("timed out: {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {} ({:?})", message(&e), sqlstate(&e)));
    messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no value"))
}

/// Logs in, bounded in time.
async fn login(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> Result<Client, tokio_postgres::Error> {
    tokio::time::timeout(STEP, connect_to(port, user, password, database))
        .await
        .unwrap_or_else(|_| panic!("login of {user} did not finish within {STEP:?}"))
}

/// Logs in and checks the upstream role on both ports.
async fn check_current_user(t: &TestPooler, tenant: &str, role: &str, password: &str, db: &str) {
    for port in [t.pooled(), t.session()] {
        let c = login(port, &format!("{role}.{tenant}"), password, db)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{role} on port {port}: {} ({:?})",
                    message(&e),
                    sqlstate(&e)
                )
            });
        for _ in 0..3 {
            assert_eq!(text(&c, "SELECT current_user").await, role);
        }
        assert_eq!(text(&c, "SELECT current_database()").await, db);
    }
}

/// The error of a login that must fail.
async fn login_error(port: u16, user: &str, password: &str, database: &str) -> (String, String) {
    let err = login(port, user, password, database)
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} logged in with {password:?}"));
    (sqlstate(&err).unwrap_or_default(), message(&err))
}

fn auth_query_yaml(password: &str) -> String {
    format!("authQuery: {{user: {AUTH_USER}, password: {password}, query: \"{AUTH_QUERY}\"}}\n")
}

// ---------------------------------------------------------------------------------------------
// users[]
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_scram_right_and_wrong_password() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("au", &db, &[(SCRAM_USER, SCRAM_PASSWORD)], "");
    let t = TestPooler::start(&[("au.yaml", doc)]).await;
    check_current_user(&t, "au", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    for port in [t.pooled(), t.session()] {
        let (code, msg) = login_error(port, &format!("{SCRAM_USER}.au"), "wrong", &db).await;
        assert_eq!(code, "28P01", "{msg}");
        assert_eq!(
            msg,
            format!("password authentication failed for user \"{SCRAM_USER}\"")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_upstream_md5() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("md", &db, &[(MD5_USER, MD5_PASSWORD)], "");
    let t = TestPooler::start(&[("md.yaml", doc)]).await;
    // The role's secret is MD5 upstream and pg_hba asks for md5.
    assert!(
        PgServer::shared()
            .psql(&format!(
                "SELECT rolpassword FROM pg_authid WHERE rolname = '{MD5_USER}'"
            ))
            .starts_with("md5")
    );
    check_current_user(&t, "md", MD5_USER, MD5_PASSWORD, &db).await;
    let (code, _) = login_error(t.pooled(), &format!("{MD5_USER}.md"), "wrong", &db).await;
    assert_eq!(code, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_upstream_md5_with_a_wrong_configured_password_forwards_the_upstream_error() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("mw", &db, &[(MD5_USER, "not-the-password")], "");
    let t = TestPooler::start(&[("mw.yaml", doc)]).await;
    // The client proves the configured password to the pooler; the upstream refuses it.
    let (code, msg) = login_error(
        t.pooled(),
        &format!("{MD5_USER}.mw"),
        "not-the-password",
        &db,
    )
    .await;
    assert_eq!(code, "28P01", "{msg}");
    assert!(msg.contains(MD5_USER), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_upstream_cleartext() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("pl", &db, &[(PLAIN_USER, PLAIN_PASSWORD)], "");
    let t = TestPooler::start(&[("pl.yaml", doc)]).await;
    check_current_user(&t, "pl", PLAIN_USER, PLAIN_PASSWORD, &db).await;
    let (code, _) = login_error(t.session(), &format!("{PLAIN_USER}.pl"), "wrong", &db).await;
    assert_eq!(code, "28P01");
}

// ---------------------------------------------------------------------------------------------
// authQuery
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_scram_passthrough() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("aq", &db, &[], &auth_query_yaml(AUTH_PASSWORD));
    let t = TestPooler::start(&[("aq.yaml", doc)]).await;
    check_current_user(&t, "aq", SCRAM_USER, SCRAM_PASSWORD, &db).await;
    // Several clients at once share the pool logged in by passthrough.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            login(t.pooled(), &format!("{SCRAM_USER}.aq"), SCRAM_PASSWORD, &db)
                .await
                .expect("login"),
        );
    }
    for c in &clients {
        assert_eq!(text(c, "SELECT current_user").await, SCRAM_USER);
    }

    // Wrong password and unknown role look the same.
    let (code, wrong) = login_error(t.pooled(), &format!("{SCRAM_USER}.aq"), "wrong", &db).await;
    assert_eq!(code, "28P01", "{wrong}");
    assert_eq!(
        wrong,
        format!("password authentication failed for user \"{SCRAM_USER}\"")
    );
    let (code, unknown) = login_error(t.pooled(), "no_such_role.aq", "whatever", &db).await;
    assert_eq!(code, "28P01", "{unknown}");
    assert_eq!(
        unknown,
        "password authentication failed for user \"no_such_role\""
    );
    let (code, _) = login_error(t.session(), "no_such_role.aq", "whatever", &db).await;
    assert_eq!(code, "28P01");

    // An MD5 secret cannot be used for passthrough: a clear error.
    let (code, msg) = login_error(t.pooled(), &format!("{MD5_USER}.aq"), MD5_PASSWORD, &db).await;
    assert_eq!(code, "XX000", "{msg}");
    assert!(
        msg.starts_with("(EAUTHQUERY) MD5 secrets are not supported"),
        "{msg}"
    );

    // A SCRAM secret whose pg_hba entry asks for a cleartext password cannot be passed
    // through either; the client is told so rather than left hanging.
    let started = Instant::now();
    let (code, msg) =
        login_error(t.pooled(), &format!("{PLAIN_USER}.aq"), PLAIN_PASSWORD, &db).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(msg.contains("SCRAM-SHA-256"), "{code}: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_follows_password_rotation() {
    let db = fresh_database(SCRAM_USER);
    let role = unique("rot");
    let pg = PgServer::shared();
    pg.psql(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'old'; GRANT CONNECT ON DATABASE {db} TO {role}"
    ));
    assert!(
        pg.psql(&format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
        ))
        .starts_with("SCRAM-SHA-256$")
    );
    let doc = tenant_doc("rot", &db, &[], &auth_query_yaml(AUTH_PASSWORD));
    let t = TestPooler::start(&[("rot.yaml", doc)]).await;
    let user = format!("{role}.rot");
    let before = login(t.pooled(), &user, "old", &db)
        .await
        .expect("old password before rotation");
    assert_eq!(text(&before, "SELECT current_user").await, role);

    pg.psql(&format!("ALTER ROLE {role} PASSWORD 'new'"));
    // The pooler re-fetches the secret after a wrong password, at most every 2 s.
    let started = Instant::now();
    let mut attempts = 0;
    let after = loop {
        attempts += 1;
        match login(t.pooled(), &user, "new", &db).await {
            Ok(c) => break c,
            Err(e) => {
                assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{}", message(&e));
                assert!(
                    started.elapsed() < Duration::from_secs(6),
                    "the new password still fails after {attempts} attempts"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(text(&after, "SELECT current_user").await, role);
    // A new upstream login (a session needs its own server) works with the new secret.
    let session = login(t.session(), &user, "new", &db)
        .await
        .expect("session with the new password");
    assert_eq!(text(&session, "SELECT current_user").await, role);
    // The old password no longer works, on either port.
    for port in [t.pooled(), t.session()] {
        let (code, msg) = login_error(port, &user, "old", &db).await;
        assert_eq!(code, "28P01", "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_a_bad_auth_password_fails_clearly() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("bad", &db, &[], &auth_query_yaml("not-the-auth-secret"));
    let t = TestPooler::start(&[("bad.yaml", doc)]).await;
    for port in [t.pooled(), t.session()] {
        let started = Instant::now();
        let (code, msg) =
            login_error(port, &format!("{SCRAM_USER}.bad"), SCRAM_PASSWORD, &db).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(code, "XX000", "{msg}");
        assert!(
            msg.starts_with("(EAUTHQUERY) auth_query connection failed"),
            "{msg}"
        );
    }
}
