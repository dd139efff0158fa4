//! Fetching a role's verifier from the upstream with the tenant's auth user.
//!
//! The role name is sent as a bound parameter ($1), never spliced into SQL.

use bytes::{Buf, BytesMut};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

use crate::protocol::MAX_SERVER_LOGIN_MESSAGE;
use crate::protocol::backend::error_field;
use crate::protocol::frontend;
use crate::protocol::read::read_message;
use crate::server::{ConnectTarget, UpstreamCredentials, connect};

/// Why a secret could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum AuthQueryError {
    /// Could not log in as the auth user.
    #[error("auth_query connection failed: {0}")]
    Connection(String),
    /// The query failed.
    #[error("authentication query failed: {0}")]
    Query(String),
    /// The query's result did not have two columns.
    #[error("authentication query returned an unexpected shape: {0}")]
    Shape(String),
}

/// Where and as whom to run the auth query.
pub struct AuthQueryTarget<'a> {
    /// Upstream host.
    pub host: &'a str,
    /// Upstream port.
    pub port: u16,
    /// Database to run it in.
    pub database: &'a str,
    /// Auth user.
    pub user: &'a str,
    /// Auth user's credentials.
    pub credentials: &'a Arc<UpstreamCredentials>,
    /// SQL with `$1` for the role name.
    pub query: &'a str,
}

/// Runs the auth query for `role`; `Ok(None)` when the role has no row or no password.
pub async fn fetch_secret(
    target: &AuthQueryTarget<'_>,
    role: &str,
) -> Result<Option<String>, AuthQueryError> {
    let (mut conn, _) = connect(&ConnectTarget {
        host: target.host,
        port: target.port,
        user: target.user,
        database: target.database,
        search_path: None,
        application_name: "pgfleet (auth_query)",
        credentials: target.credentials,
        generation: 0,
    })
    .await
    .map_err(|e| AuthQueryError::Connection(e.to_string()))?;

    let mut out = BytesMut::new();
    frontend::extended_query_one_param(&mut out, target.query, role);
    frontend::terminate(&mut out);
    let io = |e: std::io::Error| AuthQueryError::Connection(e.to_string());
    conn.stream
        .write_all(&out[..out.len() - 5])
        .await
        .map_err(io)?;

    let mut secret = None;
    let mut failure = None;
    loop {
        let msg = read_message(&mut conn.stream, &mut conn.buf, MAX_SERVER_LOGIN_MESSAGE)
            .await
            .map_err(|e| AuthQueryError::Connection(e.to_string()))?;
        let mut body = msg.body;
        match msg.tag {
            b'D' if secret.is_none() => {
                if body.len() < 2 {
                    return Err(AuthQueryError::Shape("short DataRow".into()));
                }
                let columns = body.get_i16();
                if columns != 2 {
                    return Err(AuthQueryError::Shape(format!(
                        "{columns} columns, expected 2 (rolname, rolpassword)"
                    )));
                }
                let mut values = Vec::with_capacity(2);
                for _ in 0..2 {
                    if body.len() < 4 {
                        return Err(AuthQueryError::Shape("short DataRow".into()));
                    }
                    let len = body.get_i32();
                    if len < 0 {
                        values.push(None);
                    } else if body.len() >= len as usize {
                        let v = body.split_to(len as usize);
                        values.push(Some(String::from_utf8_lossy(&v).into_owned()));
                    } else {
                        return Err(AuthQueryError::Shape("short DataRow".into()));
                    }
                }
                if values[0].as_deref() == Some(role) {
                    secret = Some(values.pop().flatten());
                }
            }
            b'E' => failure = Some(error_field(&body, b'M').unwrap_or_default()),
            b'Z' => break,
            _ => {}
        }
    }
    let _ = conn.stream.write_all(&out[out.len() - 5..]).await;
    if let Some(message) = failure {
        return Err(AuthQueryError::Query(message));
    }
    Ok(secret.flatten())
}
