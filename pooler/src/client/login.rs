//! From the first byte to ReadyForQuery: startup packet, tenant, limits, authentication,
//! pool, and the parameters the client expects.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use pgfleet_crds::PoolMode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::auth::authenticate;
use super::identity::identify;
use super::limits::{ClientSlot, PoolAttachment};
use crate::Shared;
use crate::cancel::CancelHandle;
use crate::errors::ClientError;
use crate::pool::PoolKey;
use crate::protocol::backend;
use crate::protocol::startup::{StartupError, StartupPacket, read_startup};
use crate::server::ServerConnection;

/// Which listener a client came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// Always session mode.
    Session,
    /// The tenant's (or user's) mode.
    Pooled,
}

/// A logged-in client: only what the session needs from here on, kept small because an
/// idle client is little more than this.
pub struct Session {
    /// Process-wide state (draining, error counts).
    pub shared: Arc<Shared>,
    /// Its pool (detached when the session ends).
    pub pool: PoolAttachment,
    /// Pool mode for this client.
    pub mode: PoolMode,
    /// Its cancel key.
    pub cancel: CancelHandle,
    /// Close after this long idle outside a transaction.
    pub idle_timeout: Option<std::time::Duration>,
    /// Counts against client caps until dropped.
    pub slot: ClientSlot,
}

/// Reads the startup packet and logs the client in. `Ok(None)` means the connection ended
/// without a session and without an error to report (cancel requests, probes, hang-ups).
/// A session-mode client also gets the server it holds for the whole session.
pub async fn login(
    stream: &mut TcpStream,
    peer: SocketAddr,
    port: Port,
    shared: &Arc<Shared>,
    tenant_seen: &mut Option<Arc<str>>,
) -> Result<Option<(Session, Option<Box<ServerConnection>>)>, ClientError> {
    let mut out = BytesMut::with_capacity(512);
    let mut answered_ssl = false;
    let mut answered_gss = false;
    let (minor, params) = loop {
        match read_startup(stream).await {
            Ok(StartupPacket::SslRequest) if !answered_ssl => {
                answered_ssl = true;
                stream
                    .write_all(b"N")
                    .await
                    .map_err(|_| ClientError::AuthProtocol)?;
            }
            Ok(StartupPacket::GssEncRequest) if !answered_gss => {
                answered_gss = true;
                stream
                    .write_all(b"N")
                    .await
                    .map_err(|_| ClientError::AuthProtocol)?;
            }
            Ok(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                return Err(ClientError::ProtocolViolation(
                    "encryption requested twice".into(),
                ));
            }
            Ok(StartupPacket::Cancel { pid, secret }) => {
                shared.cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            Ok(StartupPacket::HttpProbe) => {
                answer_http_probe(stream).await;
                return Ok(None);
            }
            Ok(StartupPacket::Startup { minor, params }) => break (minor, params),
            Err(StartupError::Closed) => return Ok(None),
            Err(StartupError::TooLarge(n)) => return Err(ClientError::StartupPacketTooLarge(n)),
            Err(StartupError::Malformed(reason)) => {
                // The catalogue's message adds "Invalid startup message: " itself.
                return Err(ClientError::StartupMessage(reason.to_string()));
            }
            Err(e @ StartupError::UnsupportedProtocol { .. }) => {
                return Err(ClientError::ProtocolViolation(e.to_string()));
            }
        }
    };
    let unsupported: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if minor > 0 || !unsupported.is_empty() {
        backend::negotiate_protocol_version(&mut out, 0, &unsupported);
    }

    let identity = identify(&params)?;
    let not_found = || ClientError::NotFound {
        user: identity.user.clone(),
        tenant: identity.tenant.clone(),
    };
    let tenant = shared.tenants.get(&identity.tenant).ok_or_else(not_found)?;
    *tenant_seen = Some(Arc::clone(&tenant.id));
    if !tenant.knows_user(&identity.user) {
        return Err(not_found());
    }
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(peer.ip()),
        v4 => v4,
    };
    if !tenant.doc.allow_list.iter().any(|net| net.contains(&ip)) {
        return Err(ClientError::AddressNotAllowed(ip.to_string()));
    }
    if tenant.doc.require_tls {
        // Client TLS is not served yet, so a tenant that requires it admits nobody.
        return Err(ClientError::SslRequired(identity.user.clone()));
    }
    let slot = ClientSlot::acquire(&tenant, &identity.user)?;

    let mut buf = BytesMut::new();
    authenticate(stream, &mut buf, &mut out, &tenant, &identity.user).await?;
    if !buf.is_empty() {
        return Err(ClientError::ProtocolViolation(
            "data sent before authentication completed".into(),
        ));
    }

    let mode = match port {
        Port::Session => PoolMode::Session,
        Port::Pooled => tenant.mode_for(&identity.user),
    };
    let key = PoolKey {
        tenant: Arc::clone(&tenant.id),
        user: Arc::from(identity.user.as_str()),
        database: Arc::from(
            identity
                .database
                .as_deref()
                .unwrap_or(&tenant.doc.upstream.database),
        ),
        mode,
        search_path: identity.search_path.as_deref().map(Arc::from),
    };
    let config = tenant.pool_config(&identity.user).ok_or_else(not_found)?;
    let pool = shared.pools.get_or_create(&key, || config);
    let attached = PoolAttachment::new(Arc::clone(&pool));
    let mut server = None;
    if mode == PoolMode::Session {
        let size = pool.config().size;
        if attached.count > size {
            return Err(ClientError::MaxClientsSession(size));
        }
        let mut conn = pool.checkout().await?;
        if let Some(app) = identity
            .application_name
            .as_deref()
            .filter(|a| !a.is_empty())
        {
            let sql = format!("SET application_name = '{}'", app.replace('\'', "''"));
            if let Err(e) = conn
                .run_reset(&[&sql], std::time::Duration::from_secs(5))
                .await
            {
                pool.checkin(conn, false);
                return Err(ClientError::ServerLost(format!(
                    "cannot set application_name: {e}"
                )));
            }
        }
        server = Some(conn);
    }
    let parameters = match pool.parameters() {
        Some(p) => p,
        None => {
            // First client of a pool: a server login tells us what the server reports.
            let conn = pool.checkout().await?;
            pool.checkin(conn, true);
            pool.parameters().unwrap_or_default()
        }
    };

    backend::authentication(&mut out, backend::AUTH_OK, &[]);
    let mut app_sent = false;
    for (name, value) in parameters.iter() {
        if name == "application_name" {
            app_sent = true;
            backend::parameter_status(
                &mut out,
                name,
                identity.application_name.as_deref().unwrap_or(""),
            );
        } else {
            backend::parameter_status(&mut out, name, value);
        }
    }
    if !app_sent {
        backend::parameter_status(
            &mut out,
            "application_name",
            identity.application_name.as_deref().unwrap_or(""),
        );
    }
    let cancel = shared.cancels.register();
    backend::backend_key_data(&mut out, cancel.pid, cancel.secret);
    backend::ready_for_query(&mut out, b'I');
    if let Err(e) = stream.write_all(&out).await {
        if let Some(conn) = server {
            pool.checkin(conn, false);
        }
        return Err(ClientError::ServerLost(format!("client write failed: {e}")));
    }
    let session = Session {
        shared: Arc::clone(shared),
        idle_timeout: tenant.doc.client_idle_timeout,
        pool: attached,
        mode,
        cancel,
        slot,
    };
    Ok(Some((session, server)))
}

/// Answers a load balancer's HTTP health probe with 204 and closes cleanly: the rest of the
/// request is drained (bounded) first, since closing with unread bytes makes the kernel send a
/// reset, which strict health checkers count as a failure.
async fn answer_http_probe(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let _ = stream
        .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        .await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let drain = async {
        for _ in 0..8 {
            if matches!(stream.read(&mut sink).await, Ok(0) | Err(_)) {
                break;
            }
        }
    };
    let _ = crate::timer::timeout(std::time::Duration::from_millis(200), drain).await;
}
