//! Wire-protocol edge cases over raw TCP: encryption requests, malformed and oversized
//! startup packets, protocol negotiation, HTTP probes, deadlines, protocol violations after
//! login, pipelining, cancellation and garbage.
// Tests run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::*;
use pgfleet_pooler::auth::scram::{ScramClient, derive_keys};
use pgfleet_pooler::protocol::backend::error_field;
use pgfleet_pooler::protocol::read::{Message, read_message};
use pgfleet_pooler::protocol::{
    CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE, frontend,
};
use testkit::{SCRAM_PASSWORD, SCRAM_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

/// Bound for any single read or write in these tests.
const IO: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// A small raw client.
// ---------------------------------------------------------------------------------------------

/// A StartupMessage (or any packet of the startup phase) with `code` as its version.
fn startup_packet(code: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    raw_packet(code, &body)
}

/// `len | code | body` with a correct length.
fn raw_packet(code: u32, body: &[u8]) -> Vec<u8> {
    let mut p = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// A tagged frontend message with a correct length.
fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn query_msg(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    tagged(b'Q', &body)
}

fn cancel_packet(pid: u32, secret: u32) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&secret.to_be_bytes());
    raw_packet(CANCEL_REQUEST_CODE, &body)
}

/// (severity, SQLSTATE, message) of an ErrorResponse body.
fn error_parts(body: &[u8]) -> (String, String, String) {
    (
        error_field(body, b'S').unwrap_or_default(),
        error_field(body, b'C').unwrap_or_default(),
        error_field(body, b'M').unwrap_or_default(),
    )
}

/// The first column of a DataRow, as text.
fn data_row_first(body: &[u8]) -> String {
    assert!(body.len() >= 6, "short DataRow");
    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
    assert!(len >= 0, "NULL in DataRow");
    String::from_utf8(body[6..6 + len as usize].to_vec())
        .unwrap_or_else(|e| panic!("DataRow text: {e}"))
}

fn auth_code(m: &Message) -> i32 {
    assert_eq!(
        m.tag,
        b'R',
        "expected an Authentication message, got {}",
        describe(m)
    );
    i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]])
}

fn describe(m: &Message) -> String {
    if m.tag == b'E' || m.tag == b'N' {
        format!("{:?} {:?}", m.tag as char, error_parts(&m.body))
    } else {
        format!("{:?} ({} bytes)", m.tag as char, m.body.len())
    }
}

/// One raw connection with a read buffer.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

/// A logged-in raw connection and the BackendKeyData it was given.
struct RawSession {
    raw: Raw,
    pid: u32,
    secret: u32,
}

impl Raw {
    async fn connect(port: u16) -> Raw {
        let stream = match tokio::time::timeout(IO, TcpStream::connect(local(port))).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => panic!("connect to port {port}: {e}"),
            Err(_) => panic!("connect to port {port} timed out"),
        };
        stream
            .set_nodelay(true)
            .unwrap_or_else(|e| panic!("nodelay: {e}"));
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        match tokio::time::timeout(IO, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write: {e}"),
            Err(_) => panic!("write timed out"),
        }
    }

    /// The next message, or why there is none, within `limit`.
    async fn try_recv(&mut self, limit: Duration) -> Result<Message, String> {
        match tokio::time::timeout(
            limit,
            read_message(&mut self.stream, &mut self.buf, 1 << 20),
        )
        .await
        {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no message within {limit:?}")),
        }
    }

    async fn recv(&mut self) -> Message {
        self.try_recv(IO)
            .await
            .unwrap_or_else(|e| panic!("recv: {e}"))
    }

    /// Exactly one byte (the answer to SSLRequest / GSSENCRequest).
    async fn read_byte(&mut self) -> u8 {
        assert!(
            self.buf.is_empty(),
            "unexpected buffered bytes {:?}",
            self.buf
        );
        let mut b = [0u8; 1];
        match tokio::time::timeout(IO, self.stream.read_exact(&mut b)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("read: {e}"),
            Err(_) => panic!("read timed out"),
        }
        b[0]
    }

    /// Everything until the peer closes (EOF or reset), bounded by `limit`.
    async fn read_to_close(&mut self, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let mut all = self.buf.split().to_vec();
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(all),
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(all),
            }
        }
    }

    /// Asserts the pooler closes the connection with nothing more to say.
    async fn expect_closed(&mut self) {
        match self.read_to_close(IO).await {
            Ok(rest) => assert!(rest.is_empty(), "bytes after the FATAL error: {rest:?}"),
            Err(rest) => panic!("connection still open {IO:?} later (got {rest:?})"),
        }
    }

    /// Reads the next message, which must be a FATAL ErrorResponse; returns (SQLSTATE, message).
    async fn expect_fatal(&mut self) -> (String, String) {
        let m = self.recv().await;
        assert_eq!(
            m.tag,
            b'E',
            "expected an ErrorResponse, got {}",
            describe(&m)
        );
        let (severity, code, msg) = error_parts(&m.body);
        assert_eq!(severity, "FATAL", "{code} {msg}");
        (code, msg)
    }

    /// Reads until ReadyForQuery, returning everything before it and the status byte.
    async fn until_ready(&mut self) -> (Vec<Message>, u8) {
        let mut seen = Vec::new();
        loop {
            let m = self.recv().await;
            if m.tag == b'Z' {
                return (seen, m.body[0]);
            }
            seen.push(m);
        }
    }

    /// Sends `sql` as a simple query and returns the first column of its first row.
    async fn query_value(&mut self, sql: &str) -> String {
        self.send(&query_msg(sql)).await;
        let (msgs, status) = self.until_ready().await;
        assert_eq!(status, b'I');
        for m in &msgs {
            assert_ne!(m.tag, b'E', "{sql}: {}", describe(m));
        }
        let row = msgs
            .iter()
            .find(|m| m.tag == b'D')
            .unwrap_or_else(|| panic!("no row from {sql}"));
        data_row_first(&row.body)
    }
}

/// Logs in with SCRAM-SHA-256 using the pooler's own SCRAM client.
async fn raw_login(port: u16, user: &str, password: &str, database: &str) -> RawSession {
    let mut raw = Raw::connect(port).await;
    raw.send(&startup_packet(
        PROTOCOL_3_0,
        &[("user", user), ("database", database)],
    ))
    .await;
    let m = raw.recv().await;
    assert_eq!(auth_code(&m), 10, "AuthenticationSASL expected");
    let mut client = ScramClient::new();
    let mut out = BytesMut::new();
    frontend::sasl_initial_response(&mut out, "SCRAM-SHA-256", &client.client_first());
    raw.send(&out).await;
    let m = raw.recv().await;
    assert_eq!(auth_code(&m), 11, "AuthenticationSASLContinue expected");
    let first = client
        .server_first(&m.body[4..])
        .unwrap_or_else(|e| panic!("server-first: {e}"));
    let keys = derive_keys(password, &first.salt, first.iterations);
    out.clear();
    frontend::sasl_response(&mut out, &client.client_final(&keys));
    raw.send(&out).await;
    let m = raw.recv().await;
    assert_eq!(auth_code(&m), 12, "AuthenticationSASLFinal expected");
    client
        .server_final(&m.body[4..])
        .unwrap_or_else(|e| panic!("server signature: {e}"));
    let mut key = None;
    let mut ok = false;
    loop {
        let m = raw.recv().await;
        match m.tag {
            b'R' => {
                assert_eq!(auth_code(&m), 0);
                ok = true;
            }
            b'S' => {}
            b'K' => {
                assert_eq!(m.body.len(), 8, "BackendKeyData");
                let b = &m.body;
                key = Some((
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                ));
            }
            b'Z' => break,
            _ => panic!("unexpected message during login: {}", describe(&m)),
        }
    }
    assert!(ok, "no AuthenticationOk");
    let (pid, secret) = key.unwrap_or_else(|| panic!("no BackendKeyData"));
    RawSession { raw, pid, secret }
}

/// A pooler with one tenant `proto` over a fresh database; returns it, the database and the
/// tenant-qualified user name.
async fn pooler(extra: &str) -> (TestPooler, String, String) {
    let db = fresh_database(SCRAM_USER);
    let t = TestPooler::start(&[(
        "t.yaml",
        tenant_doc("proto", &db, &[(SCRAM_USER, SCRAM_PASSWORD)], extra),
    )])
    .await;
    (t, db, format!("{SCRAM_USER}.proto"))
}

/// A deterministic PRNG (splitmix64), so the garbage test replays exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Startup phase.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_gets_n_and_startup_continues_on_the_same_socket() {
    let (t, db, user) = pooler("").await;
    for port in [t.pooled(), t.session()] {
        let mut raw = Raw::connect(port).await;
        raw.send(&raw_packet(SSL_REQUEST_CODE, &[])).await;
        assert_eq!(raw.read_byte().await, b'N');
        raw.send(&startup_packet(
            PROTOCOL_3_0,
            &[("user", &user), ("database", &db)],
        ))
        .await;
        let m = raw.recv().await;
        assert_eq!(auth_code(&m), 10, "AuthenticationSASL");
        assert!(
            m.body
                .windows(b"SCRAM-SHA-256\0".len())
                .any(|w| w == b"SCRAM-SHA-256\0"),
            "SCRAM-SHA-256 not offered"
        );
    }
    // A second SSLRequest on the same connection is a protocol violation.
    let mut raw = Raw::connect(t.pooled()).await;
    raw.send(&raw_packet(SSL_REQUEST_CODE, &[])).await;
    assert_eq!(raw.read_byte().await, b'N');
    raw.send(&raw_packet(SSL_REQUEST_CODE, &[])).await;
    let (code, msg) = raw.expect_fatal().await;
    assert_eq!(code, "08P01");
    assert!(msg.starts_with("(EPROTOCOL) "), "{msg}");
    raw.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_gets_n_then_ssl_then_startup() {
    let (t, db, user) = pooler("").await;
    let mut raw = Raw::connect(t.pooled()).await;
    raw.send(&raw_packet(GSSENC_REQUEST_CODE, &[])).await;
    assert_eq!(raw.read_byte().await, b'N');
    // libpq falls back to SSL, then to plain: each gets its answer.
    raw.send(&raw_packet(SSL_REQUEST_CODE, &[])).await;
    assert_eq!(raw.read_byte().await, b'N');
    raw.send(&startup_packet(
        PROTOCOL_3_0,
        &[("user", &user), ("database", &db)],
    ))
    .await;
    assert_eq!(auth_code(&raw.recv().await), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_startup_packet_is_refused_and_closed() {
    let (t, _db, _user) = pooler("").await;
    let started = Instant::now();
    let mut raw = Raw::connect(t.pooled()).await;
    // Only the length field: the pooler must answer without waiting for (or allocating) 2000 bytes.
    raw.send(&2000u32.to_be_bytes()).await;
    let (code, msg) = raw.expect_fatal().await;
    assert_eq!(code, "08P01");
    assert_eq!(
        msg,
        "(ESTARTUPPACKETTOOLARGE) Startup packet too large: 2000 bytes (max 1024 bytes)"
    );
    raw.expect_closed().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    // 1024 bytes is still allowed (here: a well-formed packet padded with a long option).
    let mut raw = Raw::connect(t.pooled()).await;
    let pad = "x".repeat(1024 - 8 - "user\0nobody\0application_name\0\0\0".len());
    let packet = startup_packet(
        PROTOCOL_3_0,
        &[("user", "nobody"), ("application_name", &pad)],
    );
    assert_eq!(packet.len(), 1024);
    raw.send(&packet).await;
    let (_, msg) = raw.expect_fatal().await;
    assert!(
        msg.starts_with("(ENOIDENTIFIER) "),
        "a 1024-byte packet is read: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets_are_estartupmessage() {
    let (t, _db, user) = pooler("").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length 4", 4u32.to_be_bytes().to_vec()),
        ("length 0", 0u32.to_be_bytes().to_vec()),
        (
            "odd key/value list",
            raw_packet(
                PROTOCOL_3_0,
                format!("user\0{user}\0database\0\0").as_bytes(),
            ),
        ),
        (
            "missing terminator",
            raw_packet(PROTOCOL_3_0, format!("user\0{user}\0").as_bytes()),
        ),
        (
            "invalid utf-8",
            raw_packet(PROTOCOL_3_0, b"user\0\xff\xfe\0\0"),
        ),
        (
            "cancel request of the wrong size",
            raw_packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1]),
        ),
    ];
    for (what, bytes) in cases {
        let mut raw = Raw::connect(t.pooled()).await;
        raw.send(&bytes).await;
        let (code, msg) = raw.expect_fatal().await;
        assert_eq!(code, "08P01", "{what}: {msg}");
        assert!(
            msg.starts_with("(ESTARTUPMESSAGE) Invalid startup message: "),
            "{what}: {msg}"
        );
        raw.expect_closed().await;
    }
    // The exact wording for a too-short length, as in Supavisor.
    let mut raw = Raw::connect(t.session()).await;
    raw.send(&4u32.to_be_bytes()).await;
    let (_, msg) = raw.expect_fatal().await;
    assert_eq!(
        msg,
        "(ESTARTUPMESSAGE) Invalid startup message: :bad_startup_payload"
    );
    // A startup packet without a user.
    let mut raw = Raw::connect(t.pooled()).await;
    raw.send(&startup_packet(PROTOCOL_3_0, &[("database", "x")]))
        .await;
    let (code, msg) = raw.expect_fatal().await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        (
            "08P01",
            "(ESTARTUPMESSAGE) Invalid startup message: :missing_user"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_and_pq_options_get_negotiate_protocol_version() {
    let (t, db, user) = pooler("").await;
    for version in [0x0003_0002u32, PROTOCOL_3_0] {
        let mut raw = Raw::connect(t.pooled()).await;
        raw.send(&startup_packet(
            version,
            &[("user", &user), ("database", &db), ("_pq_.foo", "bar")],
        ))
        .await;
        let m = raw.recv().await;
        assert_eq!(
            m.tag,
            b'v',
            "NegotiateProtocolVersion expected for {version:#x}, got {}",
            describe(&m)
        );
        let b = &m.body;
        assert_eq!(
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            0,
            "newest minor version"
        );
        assert_eq!(
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            1,
            "one option not recognised"
        );
        assert_eq!(&b[8..], b"_pq_.foo\0");
        assert_eq!(auth_code(&raw.recv().await), 10, "then the auth request");
    }
    // 3.2 without options: only the version is negotiated down.
    let mut raw = Raw::connect(t.pooled()).await;
    raw.send(&startup_packet(
        0x0003_0002,
        &[("user", &user), ("database", &db)],
    ))
    .await;
    let m = raw.recv().await;
    assert_eq!(m.tag, b'v', "{}", describe(&m));
    assert_eq!(&m.body[..], &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(auth_code(&raw.recv().await), 10);
    // Plain 3.0: no negotiation at all.
    let mut raw = Raw::connect(t.pooled()).await;
    raw.send(&startup_packet(
        PROTOCOL_3_0,
        &[("user", &user), ("database", &db)],
    ))
    .await;
    assert_eq!(auth_code(&raw.recv().await), 10);
    // Protocol 2.0 is not spoken.
    let mut raw = Raw::connect(t.pooled()).await;
    raw.send(&startup_packet(0x0002_0000, &[("user", &user)]))
        .await;
    let (code, _) = raw.expect_fatal().await;
    assert_eq!(code, "08P01");
    raw.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probe_gets_204() {
    let (t, _db, _user) = pooler("").await;
    for port in [t.pooled(), t.session()] {
        let mut raw = Raw::connect(port).await;
        raw.send(b"GET / HTTP/1.1\r\nHost: pooler\r\n\r\n").await;
        let got = raw
            .read_to_close(IO)
            .await
            .expect("the probe's connection is closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 204"), "{text:?}");
    }
    // The close is clean (FIN, not a reset), which strict health checkers insist on.
    let mut probe = tokio::net::TcpStream::connect(local(t.pooled()))
        .await
        .expect("connect");
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: pooler\r\nUser-Agent: lb\r\n\r\n")
        .await
        .expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(IO, probe.read_to_end(&mut response))
        .await
        .expect("closed in time")
        .expect("a clean close, not a reset");
    assert!(response.starts_with(b"HTTP/1.1 204"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_deadline_is_eauthtimeout() {
    let (t, db, user) = pooler("").await;
    let started = Instant::now();
    // One client says nothing; another stops answering in the middle of SCRAM.
    let silent = async {
        let mut raw = Raw::connect(t.pooled()).await;
        let (code, msg) = raw.expect_fatal().await;
        let at = started.elapsed();
        raw.expect_closed().await;
        (code, msg, at)
    };
    let stalled = async {
        let mut raw = Raw::connect(t.session()).await;
        raw.send(&startup_packet(
            PROTOCOL_3_0,
            &[("user", &user), ("database", &db)],
        ))
        .await;
        assert_eq!(auth_code(&raw.recv().await), 10);
        let (code, msg) = raw.expect_fatal().await;
        let at = started.elapsed();
        raw.expect_closed().await;
        (code, msg, at)
    };
    let (a, b) = tokio::join!(silent, stalled);
    for (code, msg, at) in [a, b] {
        assert_eq!(code, "08006");
        assert_eq!(msg, "(EAUTHTIMEOUT) timeout while waiting for message");
        assert!(
            at >= Duration::from_millis(2900) && at < Duration::from_secs(5),
            "deadline of 3 s hit after {at:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_password_message_is_eauthprotocol() {
    let (t, db, user) = pooler("").await;
    let mut raw = Raw::connect(t.pooled()).await;
    raw.send(&startup_packet(
        PROTOCOL_3_0,
        &[("user", &user), ("database", &db)],
    ))
    .await;
    assert_eq!(auth_code(&raw.recv().await), 10);
    let started = Instant::now();
    let mut header = vec![b'p'];
    header.extend_from_slice(&100_000_000u32.to_be_bytes());
    raw.send(&header).await;
    let (code, msg) = raw.expect_fatal().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(code, "08P01");
    assert_eq!(
        msg,
        "(EAUTHPROTOCOL) protocol violation during authentication"
    );
    raw.expect_closed().await;

    // A message other than a password during authentication is refused the same way.
    let mut raw = Raw::connect(t.pooled()).await;
    raw.send(&startup_packet(
        PROTOCOL_3_0,
        &[("user", &user), ("database", &db)],
    ))
    .await;
    assert_eq!(auth_code(&raw.recv().await), 10);
    raw.send(&query_msg("SELECT 1")).await;
    let (code, msg) = raw.expect_fatal().await;
    assert_eq!(
        (code.as_str(), msg.as_str()),
        (
            "08P01",
            "(EAUTHPROTOCOL) protocol violation during authentication"
        )
    );
    raw.expect_closed().await;

    // The pooler is fine afterwards.
    let mut s = raw_login(t.pooled(), &user, SCRAM_PASSWORD, &db).await;
    assert_eq!(s.raw.query_value("SELECT 7").await, "7");
}

// ---------------------------------------------------------------------------------------------
// After login.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_after_login_are_fatal_08p01() {
    // Pool size 1: a server leaked by a violation would starve the final check.
    let (t, db, user) = pooler("defaultPoolSize: 1\ncheckoutTimeout: 2s\n").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown type byte", tagged(b'!', b"")),
        ("length field 2", vec![b'Q', 0, 0, 0, 2]),
        ("password message after login", tagged(b'p', b"secret\0")),
    ];
    for port in [t.pooled(), t.session()] {
        for (what, bytes) in &cases {
            let mut s = raw_login(port, &user, SCRAM_PASSWORD, &db).await;
            // The session was usable before the violation.
            assert_eq!(s.raw.query_value("SELECT 1").await, "1");
            s.raw.send(bytes).await;
            let (code, msg) = s.raw.expect_fatal().await;
            assert_eq!(code, "08P01", "{what} on port {port}: {msg}");
            assert!(
                msg.starts_with("(EPROTOCOL) protocol violation: "),
                "{what}: {msg}"
            );
            s.raw.expect_closed().await;
        }
    }
    let c = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("login after violations");
    let rows = c
        .simple_query("SELECT 1")
        .await
        .expect("a server is still available");
    assert!(!rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pipelined_simple_queries_in_one_write() {
    let (t, db, user) = pooler("defaultPoolSize: 1\ncheckoutTimeout: 2s\n").await;
    let mut s = raw_login(t.pooled(), &user, SCRAM_PASSWORD, &db).await;
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend(query_msg(&format!("SELECT {i}")));
    }
    s.raw.send(&batch).await;
    let (mut completes, mut readies) = (0, 0);
    let mut values = Vec::new();
    while readies < 50 {
        let m = s.raw.recv().await;
        match m.tag {
            b'T' => {}
            b'D' => values.push(data_row_first(&m.body)),
            b'C' => {
                assert_eq!(completes, readies, "CommandComplete out of order");
                assert_eq!(&m.body[..], b"SELECT 1\0");
                completes += 1;
            }
            b'Z' => {
                readies += 1;
                assert_eq!(
                    completes, readies,
                    "ReadyForQuery before its CommandComplete"
                );
                assert_eq!(m.body[0], b'I');
            }
            _ => panic!("unexpected {}", describe(&m)),
        }
    }
    assert_eq!((completes, readies), (50, 50));
    let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(values, want, "results in order");
    // Nothing more was sent.
    assert!(s.raw.try_recv(Duration::from_millis(200)).await.is_err());

    // The only server was released: another client gets it.
    let other = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("second client");
    other
        .simple_query("SELECT 1")
        .await
        .expect("server released after the pipeline");

    // A pipeline holding a transaction across messages, then a failing statement in it.
    let mut batch = Vec::new();
    for sql in [
        "BEGIN",
        "SELECT 1",
        "SELECT 1/0",
        "SELECT 2",
        "ROLLBACK",
        "SELECT 3",
    ] {
        batch.extend(query_msg(sql));
    }
    s.raw.send(&batch).await;
    let mut statuses = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..6 {
        let (msgs, status) = s.raw.until_ready().await;
        statuses.push(status as char);
        errors.extend(
            msgs.iter()
                .filter(|m| m.tag == b'E')
                .map(|m| error_parts(&m.body).1),
        );
    }
    assert_eq!(statuses, vec!['T', 'T', 'E', 'E', 'I', 'I']);
    assert_eq!(errors, vec!["22012".to_string(), "25P02".to_string()]);
    other
        .simple_query("SELECT 1")
        .await
        .expect("server released after the transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_protocol_batches() {
    let (t, db, user) = pooler("defaultPoolSize: 1\ncheckoutTimeout: 2s\n").await;
    let mut s = raw_login(t.pooled(), &user, SCRAM_PASSWORD, &db).await;
    let mut batch = BytesMut::new();
    for i in 0..10 {
        // Parse (unnamed), Bind, Execute, Sync.
        let mut parse = vec![0u8];
        parse.extend_from_slice(format!("SELECT {i}::int + $1::int\0").as_bytes());
        parse.extend_from_slice(&0i16.to_be_bytes());
        batch.put_slice(&tagged(b'P', &parse));
        let mut bind = BytesMut::new();
        bind.put_u8(0);
        bind.put_u8(0);
        bind.put_i16(0);
        bind.put_i16(1);
        bind.put_i32(3);
        bind.put_slice(b"100");
        bind.put_i16(0);
        batch.put_slice(&tagged(b'B', &bind));
        batch.put_slice(&tagged(b'E', &[0, 0, 0, 0, 0]));
        batch.put_slice(&tagged(b'S', b""));
    }
    s.raw.send(&batch).await;
    let mut values = Vec::new();
    for round in 0..10 {
        let (msgs, status) = s.raw.until_ready().await;
        assert_eq!(status, b'I');
        let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"12DC".to_vec(), "round {round}");
        values.push(data_row_first(&msgs[2].body));
    }
    let want: Vec<String> = (100..110).map(|i: i32| i.to_string()).collect();
    assert_eq!(values, want);
    assert!(
        s.raw.try_recv(Duration::from_millis(200)).await.is_err(),
        "exactly 10 ReadyForQuery"
    );
    let other = t
        .connect(t.pooled(), &user, SCRAM_PASSWORD, &db)
        .await
        .expect("second client");
    other
        .simple_query("SELECT 1")
        .await
        .expect("server released after the pipeline");
}

// ---------------------------------------------------------------------------------------------
// Cancellation and backend keys.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_through_the_pooler_cancels_the_query() {
    let (t, db, user) = pooler("").await;
    for port in [t.pooled(), t.session()] {
        let client = Arc::new(
            t.connect(port, &user, SCRAM_PASSWORD, &db)
                .await
                .expect("login"),
        );
        let token = client.cancel_token();
        let running = Arc::clone(&client);
        let started = Instant::now();
        let task = tokio::spawn(async move { running.simple_query("SELECT pg_sleep(10)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await.expect("cancel sent");
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("query still running 5 s after the cancel")
            .expect("task");
        let err = result.expect_err("the sleep was cancelled");
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some("57014"),
            "{}",
            message(&err)
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The session goes on.
        let rows = client
            .simple_query("SELECT 1")
            .await
            .expect("usable after cancel");
        assert!(!rows.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_wrong_secret_does_nothing() {
    let (t, db, user) = pooler("").await;
    let mut s = raw_login(t.pooled(), &user, SCRAM_PASSWORD, &db).await;
    s.raw.send(&query_msg("SELECT pg_sleep(1)")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut wrong = Raw::connect(t.pooled()).await;
    wrong
        .send(&cancel_packet(s.pid, s.secret ^ 0x5a5a_5a5a))
        .await;
    wrong
        .read_to_close(IO)
        .await
        .expect("cancel connection closed");
    let mut wrong_pid = Raw::connect(t.pooled()).await;
    wrong_pid
        .send(&cancel_packet(s.pid.wrapping_add(1), s.secret))
        .await;
    wrong_pid
        .read_to_close(IO)
        .await
        .expect("cancel connection closed");
    let (msgs, status) = s.raw.until_ready().await;
    assert_eq!(status, b'I');
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "{:?}",
        msgs.iter().map(describe).collect::<Vec<_>>()
    );
    assert!(msgs.iter().any(|m| m.tag == b'C'), "pg_sleep(1) completed");

    // Control: the right key does cancel.
    let started = Instant::now();
    s.raw.send(&query_msg("SELECT pg_sleep(10)")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut right = Raw::connect(t.session()).await;
    right.send(&cancel_packet(s.pid, s.secret)).await;
    right
        .read_to_close(IO)
        .await
        .expect("cancel connection closed");
    let (msgs, status) = s.raw.until_ready().await;
    assert_eq!(status, b'I');
    let codes: Vec<String> = msgs
        .iter()
        .filter(|m| m.tag == b'E')
        .map(|m| error_parts(&m.body).1)
        .collect();
    assert_eq!(codes, vec!["57014".to_string()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_key_data_is_synthetic() {
    let (t, db, user) = pooler("").await;
    for port in [t.pooled(), t.session()] {
        let mut s = raw_login(port, &user, SCRAM_PASSWORD, &db).await;
        let real: u32 = s
            .raw
            .query_value("SELECT pg_backend_pid()")
            .await
            .parse()
            .expect("pid");
        assert_ne!(s.pid, real, "the client was given the server's real pid");
        let other = raw_login(port, &user, SCRAM_PASSWORD, &db).await;
        assert_ne!(
            (s.pid, s.secret),
            (other.pid, other.secret),
            "two clients, one key"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage.
// ---------------------------------------------------------------------------------------------

/// One random first packet: pure noise, a plausible header with a random code, a magic code
/// with a random body, or a 3.x startup with random parameters.
fn garbage_blob(rng: &mut SplitMix) -> Vec<u8> {
    match rng.below(5) {
        0 => {
            let n = rng.below(64) as usize;
            rng.bytes(n)
        }
        1 => {
            let len = 8 + rng.below(64) as u32;
            let mut p = len.to_be_bytes().to_vec();
            p.extend(rng.bytes(len as usize - 4));
            p
        }
        2 => {
            let codes = [
                SSL_REQUEST_CODE,
                GSSENC_REQUEST_CODE,
                CANCEL_REQUEST_CODE,
                PROTOCOL_3_0,
                0x0003_0002,
                0x0002_0000,
                0x0004_0000,
            ];
            let code = codes[rng.below(codes.len() as u64) as usize];
            let n = rng.below(24) as usize;
            raw_packet(code, &rng.bytes(n))
        }
        3 => {
            let mut body = Vec::new();
            for _ in 0..rng.below(6) {
                let n = rng.below(12) as usize;
                body.extend(
                    rng.bytes(n)
                        .into_iter()
                        .map(|b| if b == 0 { b'a' } else { b }),
                );
                body.push(0);
            }
            if rng.below(2) == 0 {
                body.push(0);
            }
            raw_packet(PROTOCOL_3_0, &body)
        }
        _ => {
            // A length field anywhere in the u32 range, with a few bytes after it.
            let mut p = (rng.next() as u32).to_be_bytes().to_vec();
            let n = rng.below(16) as usize;
            p.extend(rng.bytes(n));
            p
        }
    }
}

/// Sends `bytes`, half-closes, and returns what came back before the pooler closed.
async fn throw(port: u16, bytes: Vec<u8>) -> Vec<u8> {
    let mut raw = Raw::connect(port).await;
    if !bytes.is_empty() {
        // The pooler may close before reading everything; that is its right.
        let _ = raw.stream.write_all(&bytes).await;
    }
    let _ = raw.stream.shutdown().await;
    match raw.read_to_close(IO).await {
        Ok(got) => got,
        Err(got) => panic!(
            "connection neither answered nor closed within {IO:?} after {bytes:?} (got {got:?})"
        ),
    }
}

/// Checks that what came back is a sane answer: nothing, `N`, an HTTP 204, or FATAL errors.
fn check_answer(sent: &[u8], got: &[u8]) {
    let mut rest = got;
    if rest.starts_with(b"HTTP/1.1 204") {
        return;
    }
    while let Some((&tag, tail)) = rest.split_first() {
        match tag {
            b'N' => rest = tail,
            b'E' => {
                assert!(tail.len() >= 4, "truncated error after {sent:?}: {got:?}");
                let len = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
                assert!(tail.len() >= len, "truncated error after {sent:?}: {got:?}");
                let (severity, code, msg) = error_parts(&tail[4..len]);
                assert_eq!(severity, "FATAL", "{sent:?}: {msg}");
                assert!(code.len() == 5, "{sent:?}: no SQLSTATE in {msg:?}");
                assert!(msg.starts_with('('), "{sent:?}: {msg}");
                rest = &tail[len..];
            }
            _ => panic!("unexpected answer to {sent:?}: {got:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_breaks_the_pooler() {
    let (t, db, user) = pooler("").await;
    let mut rng = SplitMix(0x5eed_1234_abcd_0001);
    let blobs: Vec<Vec<u8>> = (0..200).map(|_| garbage_blob(&mut rng)).collect();
    let started = Instant::now();
    for (round, chunk) in blobs.chunks(25).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, blob) in chunk.iter().enumerate() {
            let port = if (round + i) % 2 == 0 {
                t.pooled()
            } else {
                t.session()
            };
            let blob = blob.clone();
            tasks.spawn(async move {
                let got = throw(port, blob.clone()).await;
                check_answer(&blob, &got);
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("garbage task");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // Garbage after a successful login, too.
    for i in 0..20 {
        let port = if i % 2 == 0 { t.pooled() } else { t.session() };
        let mut s = raw_login(port, &user, SCRAM_PASSWORD, &db).await;
        let n = 1 + rng.below(48) as usize;
        let blob = rng.bytes(n);
        let _ = s.raw.stream.write_all(&blob).await;
        let _ = s.raw.stream.shutdown().await;
        if let Err(got) = s.raw.read_to_close(IO).await {
            panic!("session neither answered nor closed after {blob:?} (got {got:?})");
        }
    }

    // The pooler still serves everyone.
    for port in [t.pooled(), t.session()] {
        let c = t
            .connect(port, &user, SCRAM_PASSWORD, &db)
            .await
            .expect("login after garbage");
        let rows = c
            .simple_query("SELECT 1")
            .await
            .expect("query after garbage");
        assert!(!rows.is_empty());
        let mut s = raw_login(port, &user, SCRAM_PASSWORD, &db).await;
        assert_eq!(s.raw.query_value("SELECT 5").await, "5");
    }
}
