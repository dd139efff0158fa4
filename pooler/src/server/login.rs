//! Opening and logging in an upstream connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::connection::{CancelTarget, ServerConnection};
use super::credentials::{DerivedKeys, UpstreamCredentials};
use crate::auth::md5::md5_response;
use crate::auth::scram::{self, ScramClient, ScramKeys};
use crate::errors::ClientError;
use crate::protocol::backend::{
    AUTH_CLEARTEXT, AUTH_MD5, AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, error_field,
};
use crate::protocol::read::{ReadError, get_cstr, read_message};
use crate::protocol::scan::{BackendState, Walker};
use crate::protocol::{MAX_SERVER_LOGIN_MESSAGE, frontend};

/// Time allowed to open the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the whole login after connecting.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything needed to open one server connection.
pub struct ConnectTarget<'a> {
    /// Upstream host.
    pub host: &'a str,
    /// Upstream port.
    pub port: u16,
    /// Role.
    pub user: &'a str,
    /// Database.
    pub database: &'a str,
    /// `search_path` startup setting, part of the pool key.
    pub search_path: Option<&'a str>,
    /// `application_name` the server sees.
    pub application_name: &'a str,
    /// How to prove the role.
    pub credentials: &'a UpstreamCredentials,
    /// The pool generation the connection belongs to.
    pub generation: u64,
}

/// Why a server connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP or I/O failure, or timeout.
    #[error("{0}")]
    Unreachable(String),
    /// The server sent an ErrorResponse.
    #[error("{sqlstate} {message}")]
    Server {
        /// SQLSTATE.
        sqlstate: String,
        /// Message.
        message: String,
        /// The raw ErrorResponse body, forwarded to the client.
        body: Bytes,
    },
    /// The server asked for something the credentials cannot answer.
    #[error("{0}")]
    Unsupported(String),
}

impl From<ConnectError> for ClientError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Unreachable(reason) | ConnectError::Unsupported(reason) => {
                ClientError::UpstreamUnreachable(reason)
            }
            ConnectError::Server {
                sqlstate,
                message,
                body,
            } => ClientError::Upstream {
                sqlstate,
                message,
                body,
            },
        }
    }
}

impl From<ReadError> for ConnectError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Closed => {
                ConnectError::Unreachable("server closed the connection during login".into())
            }
            other => ConnectError::Unreachable(other.to_string()),
        }
    }
}

/// What a login reports besides the connection.
pub struct LoginInfo {
    /// ParameterStatus values in the order received.
    pub parameters: Vec<(String, String)>,
}

/// Connects and logs in, returning a connection ready for queries.
pub async fn connect(
    target: &ConnectTarget<'_>,
) -> Result<(Box<ServerConnection>, LoginInfo), ConnectError> {
    let addr = format!("{}:{}", target.host, target.port);
    let stream = crate::timer::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| ConnectError::Unreachable(format!("connection to {addr} timed out")))?
        .map_err(|e| ConnectError::Unreachable(format!("{addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map_err(|e| ConnectError::Unreachable(format!("{addr}: {e}")))?;
    crate::timer::timeout(LOGIN_TIMEOUT, login(stream, peer, target))
        .await
        .map_err(|_| ConnectError::Unreachable(format!("login to {addr} timed out")))?
}

async fn login(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    target: &ConnectTarget<'_>,
) -> Result<(Box<ServerConnection>, LoginInfo), ConnectError> {
    let mut out = BytesMut::with_capacity(256);
    let mut params = vec![
        ("user", target.user),
        ("database", target.database),
        ("application_name", target.application_name),
    ];
    if let Some(sp) = target.search_path {
        params.push(("search_path", sp));
    }
    frontend::startup_message(&mut out, &params);
    stream.write_all(&out).await.map_err(io)?;

    let mut buf = BytesMut::with_capacity(1024);
    let mut scram: Option<ScramClient> = None;
    let mut parameters = Vec::new();
    let mut key = (0u32, 0u32);
    loop {
        let msg = read_message(&mut stream, &mut buf, MAX_SERVER_LOGIN_MESSAGE).await?;
        let mut body = msg.body;
        match msg.tag {
            b'R' => {
                if body.len() < 4 {
                    return Err(ConnectError::Unreachable(
                        "malformed authentication request".into(),
                    ));
                }
                let code = body.get_i32();
                out.clear();
                match code {
                    AUTH_OK => {}
                    AUTH_CLEARTEXT => {
                        frontend::password_message(&mut out, require_password(target)?)
                    }
                    AUTH_MD5 => {
                        if body.len() < 4 {
                            return Err(ConnectError::Unreachable("malformed MD5 request".into()));
                        }
                        let salt = [body[0], body[1], body[2], body[3]];
                        let response = md5_response(target.user, require_password(target)?, salt);
                        frontend::password_message(&mut out, &response);
                    }
                    AUTH_SASL => {
                        let mut offered = false;
                        while let Some(m) = get_cstr(&mut body) {
                            if m.is_empty() {
                                break;
                            }
                            offered |= m == scram::SCRAM_SHA_256;
                        }
                        if !offered {
                            return Err(ConnectError::Unsupported(
                                "server offers no SCRAM-SHA-256".into(),
                            ));
                        }
                        let client = ScramClient::new();
                        frontend::sasl_initial_response(
                            &mut out,
                            scram::SCRAM_SHA_256,
                            &client.client_first(),
                        );
                        scram = Some(client);
                    }
                    AUTH_SASL_CONTINUE => {
                        let client = scram.as_mut().ok_or_else(|| {
                            ConnectError::Unreachable("SASL continue without SASL".into())
                        })?;
                        let first = client
                            .server_first(&body)
                            .map_err(|e| ConnectError::Unreachable(format!("SCRAM: {e}")))?;
                        let keys =
                            scram_keys(target.credentials, &first.salt, first.iterations).await?;
                        frontend::sasl_response(&mut out, &client.client_final(&keys));
                    }
                    AUTH_SASL_FINAL => {
                        let client = scram.as_ref().ok_or_else(|| {
                            ConnectError::Unreachable("SASL final without SASL".into())
                        })?;
                        client
                            .server_final(&body)
                            .map_err(|e| ConnectError::Unreachable(format!("SCRAM: {e}")))?;
                    }
                    other => {
                        return Err(ConnectError::Unsupported(format!(
                            "unsupported authentication method {other} requested by the server"
                        )));
                    }
                }
                if !out.is_empty() {
                    stream.write_all(&out).await.map_err(io)?;
                }
            }
            b'S' => {
                if let (Some(k), Some(v)) = (get_cstr(&mut body), get_cstr(&mut body)) {
                    parameters.push((k, v));
                }
            }
            b'K' => {
                if body.len() >= 8 {
                    key = (body.get_u32(), body.get_u32());
                }
            }
            b'E' => {
                return Err(ConnectError::Server {
                    sqlstate: error_field(&body, b'C').unwrap_or_else(|| "XX000".into()),
                    message: error_field(&body, b'M').unwrap_or_default(),
                    body,
                });
            }
            b'N' | b'v' => {}
            b'Z' => break,
            other => {
                return Err(ConnectError::Unreachable(format!(
                    "unexpected message {:?} from server during login",
                    other as char
                )));
            }
        }
    }
    // Boxed: a connection moves in and out of its pool on every transaction, and a pointer
    // moves for free where the whole struct would be copied each time.
    let conn = Box::new(ServerConnection {
        stream,
        buf,
        walker: Walker::default(),
        state: BackendState::default(),
        cancel: CancelTarget {
            addr: peer,
            pid: key.0,
            secret: key.1,
        },
        generation: target.generation,
        home: crate::worker::current(),
    });
    Ok((conn, LoginInfo { parameters }))
}

fn io(e: std::io::Error) -> ConnectError {
    ConnectError::Unreachable(e.to_string())
}

fn require_password<'a>(target: &'a ConnectTarget<'_>) -> Result<&'a str, ConnectError> {
    match target.credentials {
        UpstreamCredentials::Password { password, .. } => Ok(password),
        UpstreamCredentials::Passthrough { .. } => Err(ConnectError::Unsupported(
            "the upstream asks for a password, but authQuery users can only log in upstream with SCRAM-SHA-256"
                .into(),
        )),
    }
}

/// Keys for the upstream's salt: cached, derived off the async workers, or recovered from a
/// client's proof.
async fn scram_keys(
    creds: &UpstreamCredentials,
    salt: &[u8],
    iterations: u32,
) -> Result<ScramKeys, ConnectError> {
    match creds {
        UpstreamCredentials::Password { password, derived } => {
            if let Some(d) = derived.lock().as_ref()
                && d.salt == salt
                && d.iterations == iterations
            {
                return Ok(d.keys.clone());
            }
            let (pw, s) = (Arc::clone(password), salt.to_vec());
            let keys = tokio::task::spawn_blocking(move || scram::derive_keys(&pw, &s, iterations))
                .await
                .map_err(|e| ConnectError::Unreachable(format!("key derivation failed: {e}")))?;
            *derived.lock() = Some(DerivedKeys {
                salt: salt.to_vec(),
                iterations,
                keys: keys.clone(),
            });
            Ok(keys)
        }
        UpstreamCredentials::Passthrough { keys } => {
            let guard = keys.lock();
            let Some((secret, client_key)) = guard.as_ref() else {
                return Err(ConnectError::Unsupported(
                    "no client has logged in yet to recover SCRAM keys".into(),
                ));
            };
            if secret.salt != salt || secret.iterations != iterations {
                return Err(ConnectError::Unsupported(
                    "the role's SCRAM secret changed upstream; reconnect to refresh it".into(),
                ));
            }
            Ok(ScramKeys {
                client_key: *client_key,
                server_key: secret.server_key,
            })
        }
    }
}
