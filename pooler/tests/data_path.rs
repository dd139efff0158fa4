//! The data path through the pooler against a real PostgreSQL: extended protocol, COPY in both
//! directions, large results and large queries, notices and notifications, clients that vanish
//! mid-transaction, queueing, pool sizes and the startup settings that pass through.
// Tests run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions fail loudly on purpose, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt, pin_mut};
use testkit::{SCRAM_PASSWORD, SCRAM_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

/// Upper bound for any single wait on the pooler in these tests.
const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A client whose connection task forwards notices and notifications to `messages`; the task
/// handle lets a test kill the connection abruptly (no Terminate message).
struct Observed {
    client: Client,
    messages: mpsc::UnboundedReceiver<AsyncMessage>,
    task: JoinHandle<()>,
}

/// Connects to the pooler with extra settings applied to the tokio-postgres config.
async fn connect_observed(
    port: u16,
    user: &str,
    database: &str,
    tweak: impl FnOnce(&mut tokio_postgres::Config),
) -> Result<Observed, tokio_postgres::Error> {
    let mut config = client_config(port, user, SCRAM_PASSWORD, database);
    tweak(&mut config);
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, messages) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            let _ = tx.send(message);
        }
    });
    Ok(Observed {
        client,
        messages,
        task,
    })
}

/// Connects with extra settings, panicking on failure.
async fn connect_with(
    port: u16,
    user: &str,
    database: &str,
    tweak: impl FnOnce(&mut tokio_postgres::Config),
) -> Client {
    connect_observed(port, user, database, tweak)
        .await
        .expect("connect")
        .client
}

/// The first column of the first row of a simple query, as text.
async fn scalar(client: &Client, sql: &str) -> Option<String> {
    let messages = tokio::time::timeout(STEP, client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("timed out: {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {} ({:?})", message(&e), sqlstate(&e)));
    messages.into_iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
        _ => None,
    })?
}

/// Like [`scalar`], for queries that must return a non-NULL value.
async fn text(client: &Client, sql: &str) -> String {
    scalar(client, sql)
        .await
        .unwrap_or_else(|| panic!("{sql}: no value"))
}

/// One tenant over a fresh database owned by the SCRAM user, with a pooler serving it.
async fn single_tenant(extra: &str) -> (TestPooler, String, String) {
    let db = fresh_database(SCRAM_USER);
    let doc = tenant_doc("dp", &db, &[(SCRAM_USER, SCRAM_PASSWORD)], extra);
    let t = TestPooler::start(&[("dp.yaml", doc)]).await;
    (t, db, format!("{SCRAM_USER}.dp"))
}

/// Runs setup SQL as the superuser in `db`.
fn setup(db: &str, sql: &str) {
    PgServer::shared().psql_db(db, sql);
}

/// The rows the COPY tests send, in COPY text format.
fn copy_rows(from: u32, to: u32) -> String {
    let mut s = String::new();
    for i in from..=to {
        s.push_str(&format!("{i}\tvalue number {i}\n"));
    }
    s
}

/// Streams `data` into table `t` with COPY FROM STDIN (extended protocol), in chunks.
async fn copy_in_all(client: &Client, data: &str) -> u64 {
    let sink = client
        .copy_in::<_, Bytes>("COPY t (id, v) FROM STDIN")
        .await
        .expect("copy_in starts");
    pin_mut!(sink);
    let bytes = data.as_bytes();
    for chunk in bytes.chunks(64 * 1024) {
        sink.send(Bytes::copy_from_slice(chunk))
            .await
            .expect("copy data");
    }
    tokio::time::timeout(STEP, sink.finish())
        .await
        .expect("copy finishes in time")
        .expect("copy finish")
}

/// Reads table `t` back with COPY TO STDOUT.
async fn copy_out_all(client: &Client) -> Vec<u8> {
    let stream = client
        .copy_out("COPY t (id, v) TO STDOUT")
        .await
        .expect("copy_out starts");
    pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(STEP, stream.next())
        .await
        .expect("copy_out chunk in time")
    {
        out.extend_from_slice(&chunk.expect("copy_out chunk"));
    }
    out
}

// --- A raw protocol client, for what tokio-postgres cannot send (simple-protocol COPY) or to
// --- vanish at an exact point.

/// One backend message.
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    /// A field (`C` SQLSTATE, `M` message, ...) of an ErrorResponse or NoticeResponse.
    fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    /// The first column of a DataRow, as text.
    fn first_column(&self) -> Option<String> {
        let b = &self.body;
        if self.tag != b'D' || b.len() < 6 {
            return None;
        }
        let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
        if len < 0 {
            return None;
        }
        Some(String::from_utf8_lossy(&b[6..6 + len as usize]).into_owned())
    }
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn query_frame(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frame(b'Q', &body)
}

struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and logs in with SCRAM-SHA-256, up to the first ReadyForQuery.
    async fn connect(port: u16, user: &str, password: &str, database: &str) -> Raw {
        use pgfleet_pooler::auth::scram::{SCRAM_SHA_256, ScramClient, derive_keys};
        let stream = TcpStream::connect(local(port)).await.expect("tcp connect");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", database)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        raw.send(&startup).await;
        let mut scram = ScramClient::new();
        loop {
            let m = raw.recv().await;
            match m.tag {
                b'R' => {
                    let code = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                    let data = &m.body[4..];
                    match code {
                        0 => {}
                        10 => {
                            let first = scram.client_first();
                            let mut p = SCRAM_SHA_256.as_bytes().to_vec();
                            p.push(0);
                            p.extend_from_slice(&(first.len() as i32).to_be_bytes());
                            p.extend_from_slice(&first);
                            raw.send(&frame(b'p', &p)).await;
                        }
                        11 => {
                            let sf = scram.server_first(data).expect("server-first");
                            let keys = derive_keys(password, &sf.salt, sf.iterations);
                            let fin = scram.client_final(&keys);
                            raw.send(&frame(b'p', &fin)).await;
                        }
                        12 => scram.server_final(data).expect("server signature"),
                        other => panic!("unexpected auth request {other}"),
                    }
                }
                b'E' => panic!("login failed: {:?}", m.field(b'M')),
                b'Z' => return raw,
                _ => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(STEP, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    async fn recv(&mut self) -> Msg {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    let body = self.buf[5..1 + len].to_vec();
                    self.buf.drain(..1 + len);
                    return Msg { tag, body };
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(STEP, self.stream.read(&mut chunk))
                .await
                .expect("pooler answered in time")
                .expect("read");
            assert!(n > 0, "the pooler closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await;
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Runs a simple query and returns its first column of its first row.
    async fn scalar(&mut self, sql: &str) -> Option<String> {
        self.send(&query_frame(sql)).await;
        let messages = self.until_ready().await;
        if let Some(e) = messages.iter().find(|m| m.tag == b'E') {
            panic!("{sql}: {:?}", e.field(b'M'));
        }
        messages.iter().find_map(Msg::first_column)
    }
}

// ---------------------------------------------------------------------------------------------
// Extended protocol
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_parameters_round_trip() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\n").await;
    let c = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("connect");
    let bytes: Vec<u8> = (0..=255u8).collect();
    let text_value = "héllo, wörld ✓ 'quoted' \"double\" \\ back";
    let none: Option<i32> = None;
    for round in 0..3 {
        let n = 42 + round;
        let f = -1.5e-300_f64 * f64::from(round + 1);
        let rows = c
            .query_typed(
                "SELECT $1::int4, $2::text, $3::bytea, $4::float8, $5::bool, $6::int4, $7::text",
                &[
                    (&n, Type::INT4),
                    (&text_value, Type::TEXT),
                    (&bytes, Type::BYTEA),
                    (&f, Type::FLOAT8),
                    (&(round % 2 == 0), Type::BOOL),
                    (&none, Type::INT4),
                    (&"", Type::TEXT),
                ],
            )
            .await
            .expect("query_typed");
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.get::<_, i32>(0), n);
        assert_eq!(row.get::<_, String>(1), text_value);
        assert_eq!(row.get::<_, Vec<u8>>(2), bytes);
        assert_eq!(row.get::<_, f64>(3).to_bits(), f.to_bits());
        assert_eq!(row.get::<_, bool>(4), round % 2 == 0);
        assert_eq!(row.get::<_, Option<i32>>(5), None);
        assert_eq!(row.get::<_, String>(6), "");
    }
    // Several rows through the extended protocol.
    let rows = c
        .query_typed(
            "SELECT g, repeat('z', g) FROM generate_series(1, $1::int4) g",
            &[(&500i32, Type::INT4)],
        )
        .await
        .expect("series");
    assert_eq!(rows.len(), 500);
    for (i, row) in rows.iter().enumerate() {
        let g: i32 = row.get(0);
        assert_eq!(g as usize, i + 1);
        assert_eq!(row.get::<_, String>(1).len(), i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_error_keeps_the_connection_usable() {
    let (t, db, user) = single_tenant("defaultPoolSize: 1\n").await;
    let c = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("connect");
    for _ in 0..3 {
        let err = c
            .query_typed("SELECT 1 / $1::int4", &[(&0i32, Type::INT4)])
            .await
            .expect_err("division by zero");
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some("22012"),
            "{}",
            message(&err)
        );
        let rows = c
            .query_typed("SELECT 10 / $1::int4", &[(&5i32, Type::INT4)])
            .await
            .expect("the connection keeps working");
        assert_eq!(rows[0].get::<_, i32>(0), 2);
    }
    // Inside an explicit transaction the error fails the transaction, which stays this
    // client's until it rolls back.
    c.batch_execute("BEGIN").await.expect("begin");
    let err = c
        .query_typed("SELECT 1 / $1::int4", &[(&0i32, Type::INT4)])
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    let err = c
        .query_typed("SELECT 1", &[])
        .await
        .expect_err("failed transaction");
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("25P02"),
        "{}",
        message(&err)
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");
    // The error did not leave a transaction open on the (only) server.
    assert_eq!(
        text(&c, "SELECT txid_current_if_assigned() IS NULL").await,
        "t"
    );
    let other = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("second client");
    let rows = other
        .query_typed("SELECT 7::int4", &[])
        .await
        .expect("another client gets the server");
    assert_eq!(rows[0].get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prepared_statements_inside_one_transaction() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\n").await;
    setup(
        &db,
        &format!("CREATE TABLE t (id int, v text); ALTER TABLE t OWNER TO {SCRAM_USER}"),
    );
    let c = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("connect");
    for round in 0..2 {
        c.batch_execute("BEGIN").await.expect("begin");
        let insert = c
            .prepare("INSERT INTO t VALUES ($1, $2)")
            .await
            .expect("prepare insert");
        let select = c
            .prepare("SELECT $1::int4 + 1, pg_backend_pid()")
            .await
            .expect("prepare select");
        let mut pids = std::collections::HashSet::new();
        for i in 0..5i32 {
            let row = c.query_one(&select, &[&i]).await.expect("execute select");
            assert_eq!(row.get::<_, i32>(0), i + 1);
            pids.insert(row.get::<_, i32>(1));
            c.execute(&insert, &[&(round * 10 + i), &format!("r{round}")])
                .await
                .expect("execute insert");
        }
        assert_eq!(pids.len(), 1, "one transaction, one server");
        c.batch_execute("COMMIT").await.expect("commit");
    }
    assert_eq!(text(&c, "SELECT count(*) FROM t").await, "10");
    assert_eq!(text(&c, "SELECT sum(id) FROM t").await, "70");
}

// ---------------------------------------------------------------------------------------------
// COPY
// ---------------------------------------------------------------------------------------------

const COPY_ROWS: u32 = 100_000;
const COPY_SUM: &str = "5000050000";

async fn check_copy_round_trip(c: &Client, in_transaction: bool) {
    let data = copy_rows(1, COPY_ROWS);
    if in_transaction {
        c.batch_execute("BEGIN").await.expect("begin");
    }
    assert_eq!(copy_in_all(c, &data).await, u64::from(COPY_ROWS));
    if in_transaction {
        c.batch_execute("COMMIT").await.expect("commit");
    }
    assert_eq!(
        text(c, "SELECT count(*) FROM t").await,
        COPY_ROWS.to_string()
    );
    assert_eq!(text(c, "SELECT sum(id) FROM t").await, COPY_SUM);
    assert_eq!(
        text(c, "SELECT sum(length(v)) FROM t").await,
        data.lines()
            .map(|l| l.split('\t').nth(1).map_or(0, str::len))
            .sum::<usize>()
            .to_string()
    );
    if in_transaction {
        c.batch_execute("BEGIN").await.expect("begin");
    }
    let back = copy_out_all(c).await;
    if in_transaction {
        c.batch_execute("COMMIT").await.expect("commit");
    }
    assert_eq!(back.len(), data.len());
    assert!(back == data.as_bytes(), "COPY TO returned different bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_both_directions_in_transaction_mode() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\n").await;
    setup(
        &db,
        &format!("CREATE TABLE t (id int, v text); ALTER TABLE t OWNER TO {SCRAM_USER}"),
    );
    let c = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("connect");
    // tokio-postgres runs COPY through a named statement: keep it inside one transaction.
    check_copy_round_trip(&c, true).await;
    // The data really was committed: a session client sees it.
    let s = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("session");
    assert_eq!(
        text(&s, "SELECT count(*) FROM t").await,
        COPY_ROWS.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_both_directions_in_session_mode() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\n").await;
    setup(
        &db,
        &format!("CREATE TABLE t (id int, v text); ALTER TABLE t OWNER TO {SCRAM_USER}"),
    );
    let c = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("connect");
    check_copy_round_trip(&c, false).await;
}

/// After an extended-protocol COPY FROM STDIN (tokio-postgres sends Bind/Execute/Sync, the
/// data, then CopyDone/Sync; the server ignores the first Sync while in copy-in mode and sends
/// one ReadyForQuery), the server must go back to the pool in transaction mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_releases_the_server_in_transaction_mode() {
    let (t, db, user) = single_tenant("defaultPoolSize: 1\ncheckoutTimeout: 2s\n").await;
    setup(
        &db,
        &format!("CREATE TABLE t (id int, v text); ALTER TABLE t OWNER TO {SCRAM_USER}"),
    );
    let a = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("a");
    let b = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("b");
    a.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(copy_in_all(&a, &copy_rows(1, 10)).await, 10);
    a.batch_execute("COMMIT").await.expect("commit");
    // Pool size 1: B can only run if A's transaction gave the server back.
    let rows = b
        .simple_query("SELECT count(*) FROM t")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the server was not released after COPY FROM STDIN: {} ({:?})",
                message(&e),
                sqlstate(&e)
            )
        });
    let count = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("10"));
}

/// COPY FROM STDIN over the simple protocol with a malformed row in the middle: the error comes
/// back, the COPY is rolled back, and the same connection keeps working.
async fn check_simple_copy_error(port: u16, user: &str, db: &str) {
    let mut raw = Raw::connect(port, user, SCRAM_PASSWORD, db).await;
    raw.send(&query_frame("COPY t (id, v) FROM STDIN")).await;
    let m = raw.recv().await;
    assert_eq!(
        m.tag, b'G',
        "CopyInResponse expected, got {:?}",
        m.tag as char
    );
    let mut data = Vec::new();
    data.extend(frame(b'd', copy_rows(1, 1000).as_bytes()));
    data.extend(frame(b'd', b"not-a-number\tbroken\n"));
    data.extend(frame(b'd', copy_rows(1001, 2000).as_bytes()));
    data.extend(frame(b'c', b""));
    raw.send(&data).await;
    let messages = raw.until_ready().await;
    let error = messages
        .iter()
        .find(|m| m.tag == b'E')
        .expect("an ErrorResponse for the malformed row");
    let code = error.field(b'C').unwrap_or_default();
    assert!(
        code == "22P02" || code == "22P04",
        "SQLSTATE {code}: {:?}",
        error.field(b'M')
    );
    assert_eq!(messages.last().map(|m| m.body.clone()), Some(b"I".to_vec()));
    // Same connection, still usable; the COPY left nothing behind.
    for _ in 0..3 {
        assert_eq!(
            raw.scalar("SELECT count(*) FROM t").await.as_deref(),
            Some("0")
        );
    }
    // And a good simple-protocol COPY works afterwards on the same connection.
    raw.send(&query_frame("COPY t (id, v) FROM STDIN")).await;
    assert_eq!(raw.recv().await.tag, b'G');
    let mut data = frame(b'd', copy_rows(1, 50).as_bytes());
    data.extend(frame(b'c', b""));
    raw.send(&data).await;
    let messages = raw.until_ready().await;
    assert!(messages.iter().all(|m| m.tag != b'E'), "good COPY failed");
    assert_eq!(
        raw.scalar("SELECT count(*) FROM t").await.as_deref(),
        Some("50")
    );
    assert_eq!(raw.scalar("DELETE FROM t").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_protocol_copy_error_midway() {
    let (t, db, user) = single_tenant("defaultPoolSize: 1\ncheckoutTimeout: 3s\n").await;
    setup(
        &db,
        &format!("CREATE TABLE t (id int, v text); ALTER TABLE t OWNER TO {SCRAM_USER}"),
    );
    check_simple_copy_error(t.pooled(), &user, &db).await;
    check_simple_copy_error(t.session(), &user, &db).await;
    // Pool size 1 in transaction mode: the server came back after both COPYs.
    let c = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("connect");
    assert_eq!(text(&c, "SELECT count(*) FROM t").await, "0");
}

// ---------------------------------------------------------------------------------------------
// Large results and large queries
// ---------------------------------------------------------------------------------------------

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabyte_result_arrives_whole() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\n").await;
    let c = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("connect");
    let messages = tokio::time::timeout(
        Duration::from_secs(60),
        c.simple_query("SELECT g, repeat('x', 1024 * 1024) FROM generate_series(1, 50) g"),
    )
    .await
    .expect("50 MB in time")
    .expect("50 MB query");
    let mut rows = 0;
    let mut total = 0;
    for m in &messages {
        if let SimpleQueryMessage::Row(row) = m {
            rows += 1;
            assert_eq!(row.get(0), Some(rows.to_string().as_str()), "row order");
            let v = row.get(1).expect("value");
            assert!(v.bytes().all(|b| b == b'x'));
            total += v.len();
        }
    }
    assert_eq!((rows, total), (50, 50 * MIB));
    // The connection and its pool are fine afterwards.
    assert_eq!(text(&c, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clients_run_while_a_large_result_streams() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\ncheckoutTimeout: 5s\n").await;
    let a = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("a");
    let b = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("b");
    a.batch_execute("BEGIN").await.expect("begin");
    let stream = a
        .copy_out("COPY (SELECT repeat('x', 1024 * 1024) FROM generate_series(1, 50)) TO STDOUT")
        .await
        .expect("copy_out");
    pin_mut!(stream);
    let mut total = 0usize;
    let mut xs = 0usize;
    let first = tokio::time::timeout(STEP, stream.next())
        .await
        .expect("first chunk in time")
        .expect("a first chunk")
        .expect("chunk");
    total += first.len();
    xs += first.iter().filter(|&&b| b == b'x').count();
    // A has read only part of the 50 MB and holds one server; B gets the other.
    let started = Instant::now();
    for i in 0..20i32 {
        let rows = b
            .query_typed("SELECT $1::int4 * 2", &[(&i, Type::INT4)])
            .await
            .expect("B runs while A streams");
        assert_eq!(rows[0].get::<_, i32>(0), i * 2);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    while let Some(chunk) = tokio::time::timeout(STEP, stream.next())
        .await
        .expect("chunk in time")
    {
        let chunk = chunk.expect("chunk");
        total += chunk.len();
        xs += chunk.iter().filter(|&&b| b == b'x').count();
    }
    assert_eq!(total, 50 * (MIB + 1), "50 rows of 1 MiB plus newlines");
    assert_eq!(xs, 50 * MIB);
    a.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(text(&a, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_megabyte_query_text() {
    let (t, db, user) = single_tenant("defaultPoolSize: 1\n").await;
    let c = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("connect");
    let literal = "y".repeat(2 * MIB);
    let sql = format!("SELECT length('{literal}')");
    assert_eq!(text(&c, &sql).await, (2 * MIB).to_string());
    // The same through the extended protocol, as query text and as a parameter.
    let rows = c.query_typed(&sql, &[]).await.expect("2 MB query text");
    assert_eq!(rows[0].get::<_, i32>(0) as usize, 2 * MIB);
    let rows = c
        .query_typed("SELECT length($1::text)", &[(&literal, Type::TEXT)])
        .await
        .expect("2 MB parameter");
    assert_eq!(rows[0].get::<_, i32>(0) as usize, 2 * MIB);
    let s = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("session");
    assert_eq!(text(&s, &sql).await, (2 * MIB).to_string());
}

// ---------------------------------------------------------------------------------------------
// NOTICE and NOTIFY
// ---------------------------------------------------------------------------------------------

async fn next_message(rx: &mut mpsc::UnboundedReceiver<AsyncMessage>) -> AsyncMessage {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .expect("message in time")
        .expect("connection alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_the_client() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\n").await;
    for port in [t.pooled(), t.session()] {
        let mut c = connect_observed(port, &user, &db, |_| {})
            .await
            .expect("connect");
        c.client
            .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
            .await
            .expect("do block");
        match next_message(&mut c.messages).await {
            AsyncMessage::Notice(n) => {
                assert_eq!(n.message(), "hello 42");
                assert_eq!(n.severity(), "NOTICE");
            }
            other => panic!("expected a notice, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_between_clients() {
    let (t, db, user) = single_tenant("defaultPoolSize: 3\n").await;
    let mut listener = connect_observed(t.session(), &user, &db, |_| {})
        .await
        .expect("listener");
    listener
        .client
        .batch_execute("LISTEN chan")
        .await
        .expect("listen");
    // From another session client.
    let notifier = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("notifier");
    notifier
        .batch_execute("NOTIFY chan, 'from session'")
        .await
        .expect("notify");
    match next_message(&mut listener.messages).await {
        AsyncMessage::Notification(n) => {
            assert_eq!((n.channel(), n.payload()), ("chan", "from session"));
        }
        other => panic!("expected a notification, got {other:?}"),
    }
    // From a transaction-mode client.
    let pooled = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("pooled");
    pooled
        .batch_execute("SELECT pg_notify('chan', 'from pooled')")
        .await
        .expect("pg_notify");
    match next_message(&mut listener.messages).await {
        AsyncMessage::Notification(n) => {
            assert_eq!((n.channel(), n.payload()), ("chan", "from pooled"));
        }
        other => panic!("expected a notification, got {other:?}"),
    }
    // The listener's connection still works normally.
    assert_eq!(text(&listener.client, "SELECT 3").await, "3");
}

// ---------------------------------------------------------------------------------------------
// Clients that leave mid-transaction; session reset
// ---------------------------------------------------------------------------------------------

async fn check_after_abandoned_transaction(b: &Client, db: &str, id: i32) {
    assert_eq!(
        text(b, &format!("SELECT count(*) FROM t WHERE id = {id}")).await,
        "0",
        "the abandoned transaction's row is invisible"
    );
    // A server the pooler closed may show "idle in transaction" for the instant between
    // finishing the last statement and reading the pooler's Terminate; none may stay so.
    let idle_in_transaction = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' \
         AND datname = '{db}'"
    );
    let mut last = String::new();
    for _ in 0..40 {
        last = text(b, &idle_in_transaction).await;
        if last == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, "0", "a server stayed idle in transaction");
    // B's own work goes through and commits.
    b.batch_execute(&format!("INSERT INTO t VALUES ({})", id + 1000))
        .await
        .expect("B inserts");
    assert_eq!(
        text(
            b,
            &format!("SELECT count(*) FROM t WHERE id = {}", id + 1000)
        )
        .await,
        "1"
    );
    assert_eq!(
        text(b, "SELECT txid_current_if_assigned() IS NULL").await,
        "t"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_is_rolled_back() {
    let (t, db, user) = single_tenant("defaultPoolSize: 1\ncheckoutTimeout: 3s\n").await;
    setup(
        &db,
        &format!("CREATE TABLE t (id int); ALTER TABLE t OWNER TO {SCRAM_USER}"),
    );

    // 1. The connection task is killed: the socket closes without a Terminate message.
    let a = connect_observed(t.pooled(), &user, &db, |_| {})
        .await
        .expect("a");
    a.client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .expect("begin + insert");
    a.task.abort();
    let _ = a.task.await;
    drop(a.client);
    let b = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("b");
    check_after_abandoned_transaction(&b, &db, 1).await;

    // 2. A raw client that vanishes right after its INSERT, without reading the answer.
    let mut raw = Raw::connect(t.pooled(), &user, SCRAM_PASSWORD, &db).await;
    raw.send(&query_frame("BEGIN; INSERT INTO t VALUES (2)"))
        .await;
    drop(raw);
    check_after_abandoned_transaction(&b, &db, 2).await;

    // 3. A raw client that vanishes while its transaction is busy on the server.
    let mut raw = Raw::connect(t.pooled(), &user, SCRAM_PASSWORD, &db).await;
    raw.send(&query_frame(
        "BEGIN; INSERT INTO t VALUES (3); SELECT pg_sleep(0.3)",
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(raw);
    check_after_abandoned_transaction(&b, &db, 3).await;
    // The busy server (closed by the pooler) finishes its sleep and goes away; pool size 1
    // keeps one server. Its transaction never commits.
    wait_backends(SCRAM_USER, &db, |n| n <= 1).await;
    assert_eq!(text(&b, "SELECT count(*) FROM t WHERE id = 3").await, "0");

    // 4. A client that sends Terminate mid-transaction.
    let a = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("a again");
    a.batch_execute("BEGIN; INSERT INTO t VALUES (4)")
        .await
        .expect("begin + insert");
    drop(a);
    check_after_abandoned_transaction(&b, &db, 4).await;
    assert_eq!(text(&b, "SELECT count(*) FROM t").await, "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_is_discarded_between_session_clients() {
    let (t, db, user) = single_tenant("defaultPoolSize: 1\n").await;
    let a = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("a");
    let default_path = text(&a, "SHOW search_path").await;
    assert_eq!(default_path, "\"$user\", public");
    a.batch_execute(
        "SET search_path = nothing; PREPARE p AS SELECT 1; CREATE TEMP TABLE tmp (x int)",
    )
    .await
    .expect("session state");
    assert_eq!(text(&a, "SHOW search_path").await, "nothing");
    let a_pid = text(&a, "SELECT pg_backend_pid()").await;
    drop(a);
    // Pool size 1: the next session may have to wait until the first one's server is back.
    let mut next = None;
    for _ in 0..100 {
        match t.connect(t.session(), &user, SCRAM_PASSWORD, &db).await {
            Ok(c) => {
                next = Some(c);
                break;
            }
            Err(e) if sqlstate(&e).as_deref() == Some("53300") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("second session: {} ({:?})", message(&e), sqlstate(&e)),
        }
    }
    let b = next.expect("the second session got in within 5 s");
    assert_eq!(
        text(&b, "SELECT pg_backend_pid()").await,
        a_pid,
        "same server reused"
    );
    assert_eq!(text(&b, "SHOW search_path").await, default_path);
    assert_eq!(
        text(&b, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
    assert_eq!(
        text(
            &b,
            "SELECT count(*) FROM pg_class WHERE relname = 'tmp' AND relpersistence = 't'"
        )
        .await,
        "0"
    );
}

// ---------------------------------------------------------------------------------------------
// Queueing and pool sizes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_queue_on_a_pool_of_one() {
    let (t, db, user) = single_tenant("defaultPoolSize: 1\n").await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            t.connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
                .await
                .expect("connect"),
        );
    }
    // Watch the backend count while the transactions run.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (done, db) = (std::sync::Arc::clone(&done), db.clone());
        tokio::task::spawn_blocking(move || {
            let mut max = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                max = max.max(PgServer::shared().backend_count(SCRAM_USER, &db));
                std::thread::sleep(Duration::from_millis(5));
            }
            max
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        tasks.push(tokio::spawn(async move {
            c.batch_execute("BEGIN; SELECT pg_sleep(0.05); COMMIT")
                .await
                .map(|()| c)
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("task").expect("transaction succeeds"));
    }
    let elapsed = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Release);
    let max = watcher.await.expect("watcher");
    assert!(
        elapsed >= Duration::from_millis(400),
        "8 x 50 ms on one server must be serialised, took {elapsed:?}"
    );
    assert!(max <= 1, "{max} backends seen for pool size 1");
    assert!(PgServer::shared().backend_count(SCRAM_USER, &db) <= 1);
    let mut pids = std::collections::HashSet::new();
    for c in &clients {
        pids.insert(text(c, "SELECT pg_backend_pid()").await);
    }
    assert_eq!(pids.len(), 1, "{pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_pool_size_is_honoured() {
    let (t, db, user) = single_tenant("defaultPoolSize: 3\n").await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(
            t.connect(t.session(), &user, SCRAM_PASSWORD, &db)
                .await
                .expect("session"),
        );
    }
    let mut pids = std::collections::HashSet::new();
    for s in &sessions {
        pids.insert(text(s, "SELECT pg_backend_pid()").await);
    }
    assert_eq!(pids.len(), 3, "each session holds its own server");
    assert_eq!(wait_backends(SCRAM_USER, &db, |n| n == 3).await, 3);
    // A fourth session is refused while the three hold every server.
    let err = t
        .connect(t.session(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect_err("fourth session");
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("53300"),
        "{}",
        message(&err)
    );
    assert_eq!(PgServer::shared().backend_count(SCRAM_USER, &db), 3);
}

// ---------------------------------------------------------------------------------------------
// Startup settings: options and application_name
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_from_options_and_other_options_dropped() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\n").await;
    setup(
        &db,
        &format!(
            "CREATE SCHEMA myschema AUTHORIZATION {SCRAM_USER};\n\
             CREATE TABLE myschema.marker (v text); INSERT INTO myschema.marker VALUES ('mine');\n\
             CREATE TABLE public.marker (v text); INSERT INTO public.marker VALUES ('public');\n\
             ALTER TABLE myschema.marker OWNER TO {SCRAM_USER};\n\
             ALTER TABLE public.marker OWNER TO {SCRAM_USER};"
        ),
    );
    let with_path = connect_with(t.pooled(), &user, &db, |c| {
        c.options("-c search_path=myschema,public");
    })
    .await;
    let plain = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("plain");
    for _ in 0..5 {
        assert_eq!(
            text(&with_path, "SHOW search_path").await.replace(' ', ""),
            "myschema,public"
        );
        assert_eq!(text(&with_path, "SELECT v FROM marker").await, "mine");
        assert_eq!(text(&plain, "SHOW search_path").await, "\"$user\", public");
        assert_eq!(text(&plain, "SELECT v FROM marker").await, "public");
    }
    // Other settings in options are not applied.
    let with_work_mem = connect_with(t.pooled(), &user, &db, |c| {
        c.options("-c work_mem=1GB");
    })
    .await;
    assert_eq!(text(&with_work_mem, "SHOW work_mem").await, "4MB");
    let both = connect_with(t.session(), &user, &db, |c| {
        c.options("-c work_mem=1GB -c search_path=myschema,public");
    })
    .await;
    assert_eq!(text(&both, "SHOW work_mem").await, "4MB");
    assert_eq!(
        text(&both, "SHOW search_path").await.replace(' ', ""),
        "myschema,public"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_in_session_mode() {
    let (t, db, user) = single_tenant("defaultPoolSize: 2\n").await;
    let c = connect_with(t.session(), &user, &db, |c| {
        c.application_name("myapp");
    })
    .await;
    assert_eq!(text(&c, "SHOW application_name").await, "myapp");
    assert_eq!(
        text(
            &c,
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        .await,
        "myapp"
    );
    let other = connect_with(t.session(), &user, &db, |c| {
        c.application_name("otherapp");
    })
    .await;
    assert_eq!(text(&other, "SHOW application_name").await, "otherapp");
    assert_eq!(text(&c, "SHOW application_name").await, "myapp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_client_killed_mid_transaction_is_rolled_back_and_reset() {
    let (t, db, user) = single_tenant("defaultPoolSize: 1\n").await;
    setup(
        &db,
        &format!("CREATE TABLE t (id int); ALTER TABLE t OWNER TO {SCRAM_USER}"),
    );
    let a = connect_observed(t.session(), &user, &db, |_| {})
        .await
        .expect("a");
    a.client
        .batch_execute("SET search_path = nothing; BEGIN; INSERT INTO public.t VALUES (1)")
        .await
        .expect("session state and an open transaction");
    a.task.abort();
    let _ = a.task.await;
    drop(a.client);
    let mut next = None;
    for _ in 0..100 {
        match t.connect(t.session(), &user, SCRAM_PASSWORD, &db).await {
            Ok(c) => {
                next = Some(c);
                break;
            }
            Err(e) if sqlstate(&e).as_deref() == Some("53300") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("second session: {} ({:?})", message(&e), sqlstate(&e)),
        }
    }
    let b = next.expect("the second session got in within 5 s");
    assert_eq!(text(&b, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(text(&b, "SELECT count(*) FROM t").await, "0");
    assert_eq!(
        text(&b, "SELECT txid_current_if_assigned() IS NULL").await,
        "t"
    );
    assert_eq!(wait_backends(SCRAM_USER, &db, |n| n == 1).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_after_the_idle_timeout_but_not_mid_transaction() {
    let (t, db, user) = single_tenant("clientIdleTimeout: 700ms\ndefaultPoolSize: 2\n").await;
    for port in [t.pooled(), t.session()] {
        let idle = connect_to(port, &user, SCRAM_PASSWORD, &db)
            .await
            .expect("connect");
        // A client inside a transaction is never cut off, however long it takes.
        let busy = connect_to(port, &user, SCRAM_PASSWORD, &db)
            .await
            .expect("connect");
        busy.batch_execute("BEGIN").await.expect("begin");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(text(&busy, "SELECT 'still here'").await, "still here");
        busy.batch_execute("COMMIT").await.expect("commit");
        let err = idle
            .simple_query("SELECT 1")
            .await
            .expect_err("the idle client was closed");
        assert!(idle.is_closed(), "port {port}: {err}");
        // The busy client, active all along, still works.
        assert_eq!(text(&busy, "SELECT 'ok'").await, "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_tells_idle_transaction_clients_at_once() {
    // Between transactions a client waits for its socket alone; starting a drain must still
    // wake it and tell it 57P01 right away, not at its next query or at the grace deadline.
    let (t, db, login) = single_tenant("").await;
    let (client, mut connection) = client_config(t.pooled(), &login, SCRAM_PASSWORD, &db)
        .connect(NoTls)
        .await
        .expect("connect");
    let ended = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return sqlstate(&e),
                None => return None,
            }
        }
    });
    assert_eq!(text(&client, "SELECT 1").await, "1");
    let busy = connect_with(t.pooled(), &login, &db, |_| {}).await;
    busy.batch_execute("BEGIN").await.expect("begin");

    let TestPooler { pooler, dir, .. } = t;
    let drain = tokio::spawn(pooler.drain(Duration::ZERO, Duration::from_secs(20)));
    let code = tokio::time::timeout(Duration::from_secs(3), ended)
        .await
        .expect("the idle client is told within 3 s, long before the 20 s grace")
        .expect("connection task");
    assert_eq!(code.as_deref(), Some("57P01"));
    // A client in a transaction finishes it first.
    assert_eq!(text(&busy, "SELECT 2").await, "2");
    busy.batch_execute("COMMIT").await.expect("commit");
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("drain ends once its clients are gone")
        .expect("drain task");
    let _ = std::fs::remove_dir_all(dir);
}
