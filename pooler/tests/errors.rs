//! The error catalogue as clients see it: one test per error, each against the real
//! PostgreSQL the harness starts, asserting the SQLSTATE and the message.
// Tests run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use testkit::{SCRAM_PASSWORD, SCRAM_USER};
use tokio_postgres::Client;
use tokio_postgres::error::DbError;

/// The server's ErrorResponse inside a tokio-postgres error; panics with the error otherwise.
fn db_error(err: &tokio_postgres::Error) -> &DbError {
    err.as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got: {err}"))
}

/// Connects expecting the pooler to refuse the login, and returns the refusal.
async fn refused(port: u16, user: &str, password: &str, database: &str) -> tokio_postgres::Error {
    match connect_to(port, user, password, database).await {
        Ok(_) => panic!("login of {user:?} to database {database:?} unexpectedly succeeded"),
        Err(e) => e,
    }
}

/// Asserts a FATAL pooler error with the given SQLSTATE and exact message.
fn assert_fatal(err: &tokio_postgres::Error, sqlstate: &str, msg: &str) {
    let db = db_error(err);
    assert_eq!(db.code().code(), sqlstate, "SQLSTATE of {db:?}");
    assert_eq!(db.message(), msg, "message of {db:?}");
    assert_eq!(db.severity(), "FATAL", "severity of {db:?}");
}

/// Connects with an `options` startup parameter.
async fn connect_with_options(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
    options: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = client_config(port, user, password, database);
    config.options(options);
    connect_config(&config).await
}

/// Like [`refused`], with an `options` startup parameter and the SCRAM user's password.
async fn refused_with_options(
    port: u16,
    user: &str,
    database: &str,
    options: &str,
) -> tokio_postgres::Error {
    match connect_with_options(port, user, SCRAM_PASSWORD, database, options).await {
        Ok(_) => panic!("login of {user:?} with options {options:?} unexpectedly succeeded"),
        Err(e) => e,
    }
}

/// The single value of a one-row, one-column simple query.
async fn simple_value(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no row from {sql:?}"))
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port();
    drop(listener);
    port
}

fn users() -> [(&'static str, &'static str); 1] {
    [(SCRAM_USER, SCRAM_PASSWORD)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tenant_is_enotfound() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[("t.yaml", tenant_doc("known", &db, &users(), ""))]).await;
    let err = refused(
        t.pooled(),
        &format!("{SCRAM_USER}.nosuch"),
        SCRAM_PASSWORD,
        &db,
    )
    .await;
    assert_fatal(
        &err,
        "XX000",
        &format!("(ENOTFOUND) tenant/user {SCRAM_USER}.nosuch not found"),
    );
    // Same on the session port.
    let err = refused(
        t.session(),
        &format!("{SCRAM_USER}.nosuch"),
        SCRAM_PASSWORD,
        &db,
    )
    .await;
    assert_eq!(sqlstate(&err).as_deref(), Some("XX000"));
    assert!(
        message(&err).starts_with("(ENOTFOUND) "),
        "{}",
        message(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_of_a_users_only_tenant_is_enotfound() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[("t.yaml", tenant_doc("usersonly", &db, &users(), ""))]).await;
    let err = refused(t.pooled(), "ghost.usersonly", SCRAM_PASSWORD, &db).await;
    assert_fatal(
        &err,
        "XX000",
        "(ENOTFOUND) tenant/user ghost.usersonly not found",
    );
    // A role that exists upstream but is not listed is just as unknown.
    let err = refused(
        t.pooled(),
        &format!("{}.usersonly", testkit::MD5_USER),
        testkit::MD5_PASSWORD,
        &db,
    )
    .await;
    assert_fatal(
        &err,
        "XX000",
        &format!(
            "(ENOTFOUND) tenant/user {}.usersonly not found",
            testkit::MD5_USER
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_without_tenant_is_enoidentifier() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[("t.yaml", tenant_doc("ident", &db, &users(), ""))]).await;
    let err = refused(t.pooled(), SCRAM_USER, SCRAM_PASSWORD, &db).await;
    assert_fatal(
        &err,
        "XX000",
        "(ENOIDENTIFIER) no tenant identifier provided (external_id or sni_hostname required)",
    );
    // An options parameter without a reference does not help.
    let err = refused_with_options(t.pooled(), SCRAM_USER, &db, "-c work_mem=1MB").await;
    assert!(
        message(&err).starts_with("(ENOIDENTIFIER) "),
        "{}",
        message(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_from_options_reference() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[("t.yaml", tenant_doc("byref", &db, &users(), ""))]).await;
    for options in ["-c reference=byref", "--reference=byref"] {
        let c = connect_with_options(t.pooled(), SCRAM_USER, SCRAM_PASSWORD, &db, options)
            .await
            .unwrap_or_else(|e| panic!("login with options {options:?}: {}", message(&e)));
        assert_eq!(
            simple_value(&c, "SELECT current_user").await,
            SCRAM_USER,
            "{options}"
        );
        assert_eq!(
            simple_value(&c, "SELECT current_database()").await,
            db,
            "{options}"
        );
    }
    // The reference wins over a dot in the user name, so `app.x` is looked up as user `app.x`.
    let user = format!("{SCRAM_USER}.other");
    let err = refused_with_options(t.pooled(), &user, &db, "-c reference=byref").await;
    assert_fatal(
        &err,
        "XX000",
        &format!("(ENOTFOUND) tenant/user {SCRAM_USER}.other.byref not found"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_28p01_in_postgres_wording() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[("t.yaml", tenant_doc("pw", &db, &users(), ""))]).await;
    for port in [t.pooled(), t.session()] {
        let err = refused(port, &format!("{SCRAM_USER}.pw"), "not-the-password", &db).await;
        assert_fatal(
            &err,
            "28P01",
            &format!("password authentication failed for user \"{SCRAM_USER}\""),
        );
    }
    // The right password still works afterwards.
    let c = t
        .connect(t.pooled(), &format!("{SCRAM_USER}.pw"), SCRAM_PASSWORD, &db)
        .await
        .expect("login");
    assert_eq!(simple_value(&c, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_max_clients_is_emaxconn() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[(
        "t.yaml",
        tenant_doc("capped", &db, &users(), "defaultMaxClients: 2\n"),
    )])
    .await;
    let user = format!("{SCRAM_USER}.capped");
    let a = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("first");
    let b = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("second");
    for port in [t.pooled(), t.session()] {
        let err = refused(port, &user, SCRAM_PASSWORD, &db).await;
        assert_fatal(
            &err,
            "53300",
            "(EMAXCONN) max client connections reached, limit: 2",
        );
    }
    // The two admitted clients are unaffected.
    assert_eq!(simple_value(&a, "SELECT 1").await, "1");
    assert_eq!(simple_value(&b, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_max_clients_is_emaxconn_and_frees_on_disconnect() {
    let db = fresh_database(SCRAM_USER);
    let extra = format!(
        "users:\n  - {{name: {SCRAM_USER}, password: {SCRAM_PASSWORD}, maxClients: 1}}\n  - {{name: {}, password: {}}}\n",
        testkit::MD5_USER,
        testkit::MD5_PASSWORD
    );
    let t = TestPooler::start(&[("t.yaml", tenant_doc("peruser", &db, &[], &extra))]).await;
    let user = format!("{SCRAM_USER}.peruser");
    let first = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("first");
    assert_eq!(simple_value(&first, "SELECT 1").await, "1");
    let err = refused(t.pooled(), &user, SCRAM_PASSWORD, &db).await;
    assert_fatal(
        &err,
        "53300",
        "(EMAXCONN) max client connections reached, limit: 1",
    );
    let err = refused(t.session(), &user, SCRAM_PASSWORD, &db).await;
    assert_fatal(
        &err,
        "53300",
        "(EMAXCONN) max client connections reached, limit: 1",
    );
    // Another user of the same tenant is not affected by this user's cap.
    let other = t
        .connect(
            t.pooled(),
            &format!("{}.peruser", testkit::MD5_USER),
            testkit::MD5_PASSWORD,
            &db,
        )
        .await
        .expect("other user");
    assert_eq!(
        simple_value(&other, "SELECT current_user").await,
        testkit::MD5_USER
    );

    drop(first);
    let started = Instant::now();
    let second = loop {
        match t.connect(t.pooled(), &user, SCRAM_PASSWORD, &db).await {
            Ok(c) => break c,
            Err(e) => {
                assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{}", message(&e));
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "slot not freed 3 s after the first client left"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(simple_value(&second, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_cap_is_emaxconnsession() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[(
        "t.yaml",
        tenant_doc("sesscap", &db, &users(), "defaultPoolSize: 1\n"),
    )])
    .await;
    let user = format!("{SCRAM_USER}.sesscap");
    let a = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("first session");
    assert_eq!(simple_value(&a, "SELECT 1").await, "1");
    let err = refused(t.session(), &user, SCRAM_PASSWORD, &db).await;
    assert_fatal(
        &err,
        "53300",
        "(EMAXCONNSESSION) max clients reached in session mode - max clients are limited to pool_size: 1",
    );
    // The session that got in keeps working.
    assert_eq!(simple_value(&a, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_timeout_is_an_error_not_fatal() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc(
        "slow",
        &db,
        &users(),
        "defaultPoolSize: 1\ncheckoutTimeout: 300ms\n",
    );
    let t = TestPooler::start(&[("t.yaml", doc)]).await;
    let user = format!("{SCRAM_USER}.slow");
    let a = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("a");
    let b = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("b");
    a.simple_query("BEGIN").await.expect("begin");
    assert_eq!(simple_value(&a, "SELECT 1").await, "1");

    let started = Instant::now();
    let err = b
        .simple_query("SELECT 1")
        .await
        .expect_err("no server for b");
    let waited = started.elapsed();
    let dbe = db_error(&err);
    assert_eq!(dbe.severity(), "ERROR", "{dbe:?}");
    assert_eq!(dbe.code().code(), "XX000", "{dbe:?}");
    assert_eq!(
        dbe.message(),
        "(ECHECKOUTTIMEOUT) unable to check out connection from the pool after 300ms in Transaction mode"
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "checkout gave up after {waited:?}"
    );
    assert!(!b.is_closed(), "an ERROR must not close the client");

    a.simple_query("COMMIT").await.expect("commit");
    assert_eq!(simple_value(&b, "SELECT 42").await, "42");
    assert_eq!(simple_value(&a, "SELECT 43").await, "43");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_eupstreamconnect() {
    let port = closed_port();
    let doc = format!(
        "externalId: gone\nupstream: {{host: 127.0.0.1, port: {port}, database: postgres}}\nusers:\n  - {{name: {SCRAM_USER}, password: {SCRAM_PASSWORD}}}\n"
    );
    let t = TestPooler::start(&[("t.yaml", doc)]).await;
    let user = format!("{SCRAM_USER}.gone");
    for listen in [t.pooled(), t.session()] {
        let err = match connect_to(listen, &user, SCRAM_PASSWORD, "postgres").await {
            Err(e) => e,
            Ok(c) => c.simple_query("SELECT 1").await.expect_err("no upstream"),
        };
        let dbe = db_error(&err);
        assert_eq!(dbe.code().code(), "08006", "{dbe:?}");
        let msg = dbe.message();
        assert!(
            msg.starts_with("(EUPSTREAMCONNECT) Failed to connect to database: "),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("127.0.0.1:{port}")) && msg.to_lowercase().contains("refused"),
            "the reason is missing: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_auth_failure_is_forwarded_verbatim() {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("badpw", &db, &[(SCRAM_USER, "not-the-real-one")], "");
    let t = TestPooler::start(&[("t.yaml", doc)]).await;
    let user = format!("{SCRAM_USER}.badpw");
    let err = match connect_to(t.pooled(), &user, "not-the-real-one", &db).await {
        Err(e) => e,
        Ok(c) => c
            .simple_query("SELECT 1")
            .await
            .expect_err("upstream refuses"),
    };
    let dbe = db_error(&err);
    assert_eq!(dbe.code().code(), "28P01", "{dbe:?}");
    assert_eq!(
        dbe.message(),
        format!("password authentication failed for user \"{SCRAM_USER}\"")
    );
    // Fields only PostgreSQL itself fills in: the error came from the server, not the pooler.
    assert!(
        dbe.routine().is_some() && dbe.file().is_some(),
        "not PostgreSQL's own ErrorResponse: {dbe:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_upstream_database_is_forwarded() {
    let doc = tenant_doc("nodb", "nosuchdb_xyz", &users(), "");
    let t = TestPooler::start(&[("t.yaml", doc)]).await;
    let user = format!("{SCRAM_USER}.nodb");
    // Database name = user name means "the tenant's database".
    let err = match connect_to(t.pooled(), &user, SCRAM_PASSWORD, &user).await {
        Err(e) => e,
        Ok(c) => c
            .simple_query("SELECT 1")
            .await
            .expect_err("no such database"),
    };
    let dbe = db_error(&err);
    assert_eq!(dbe.code().code(), "3D000", "{dbe:?}");
    assert_eq!(dbe.message(), "database \"nosuchdb_xyz\" does not exist");
    assert!(
        dbe.routine().is_some(),
        "not PostgreSQL's own ErrorResponse: {dbe:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_user_or_database_name_is_einvaliduserinfo() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[("t.yaml", tenant_doc("names", &db, &users(), ""))]).await;
    let expected =
        "(EINVALIDUSERINFO) Authentication error, reason: \"Invalid format for user or db_name\"";
    let long_user = format!("{}.names", "u".repeat(64));
    let err = refused(t.pooled(), &long_user, SCRAM_PASSWORD, &db).await;
    assert_fatal(&err, "XX000", expected);
    let err = refused(
        t.pooled(),
        &format!("{SCRAM_USER}.names"),
        SCRAM_PASSWORD,
        "bad\u{1}db",
    )
    .await;
    assert_fatal(&err, "XX000", expected);
    // 63 bytes is PostgreSQL's limit and still a valid name (here simply an unknown user).
    let err = refused(
        t.pooled(),
        &format!("{}.names", "u".repeat(63)),
        SCRAM_PASSWORD,
        &db,
    )
    .await;
    assert!(
        message(&err).starts_with("(ENOTFOUND) "),
        "{}",
        message(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_outside_allow_list_is_eaddrnotallowed() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[
        (
            "a.yaml",
            tenant_doc("fenced", &db, &users(), "allowList: [\"10.0.0.0/8\"]\n"),
        ),
        (
            "b.yaml",
            tenant_doc("open", &db, &users(), "allowList: [\"127.0.0.0/8\"]\n"),
        ),
    ])
    .await;
    let err = refused(
        t.pooled(),
        &format!("{SCRAM_USER}.fenced"),
        SCRAM_PASSWORD,
        &db,
    )
    .await;
    assert_fatal(
        &err,
        "XX000",
        "(EADDRNOTALLOWED) address not in tenant allow_list: 127.0.0.1",
    );
    let c = t
        .connect(
            t.pooled(),
            &format!("{SCRAM_USER}.open"),
            SCRAM_PASSWORD,
            &db,
        )
        .await
        .expect("allowed");
    assert_eq!(simple_value(&c, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_documents_are_not_loaded_and_valid_ones_are() {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[
        ("good.yaml", tenant_doc("good", &db, &users(), "")),
        (
            "broken.yaml",
            "externalId: broken\nupstream: [unclosed\n".to_string(),
        ),
        (
            "zero.yaml",
            tenant_doc("zeropool", &db, &users(), "defaultPoolSize: 0\n"),
        ),
        (
            "typo.yaml",
            tenant_doc("typo", &db, &users(), "defaultPoolsize: 3\n"),
        ),
    ])
    .await;
    for tenant in ["broken", "zeropool", "typo"] {
        let err = refused(
            t.pooled(),
            &format!("{SCRAM_USER}.{tenant}"),
            SCRAM_PASSWORD,
            &db,
        )
        .await;
        assert_fatal(
            &err,
            "XX000",
            &format!("(ENOTFOUND) tenant/user {SCRAM_USER}.{tenant} not found"),
        );
    }
    let c = t
        .connect(
            t.pooled(),
            &format!("{SCRAM_USER}.good"),
            SCRAM_PASSWORD,
            &db,
        )
        .await
        .expect("good tenant");
    assert_eq!(simple_value(&c, "SELECT current_database()").await, db);
}
