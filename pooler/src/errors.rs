//! The error catalogue: every error a client can get from the pooler itself.
//!
//! Each has a stable code (grep-able in logs and docs), a SQLSTATE and a message, following
//! Supavisor's catalogue so existing runbooks keep working: the message is prefixed
//! `(CODE) ` and the SQLSTATE is `XX000` unless PostgreSQL has a proper one. Errors from the
//! upstream server are forwarded as the server sent them.

use bytes::{Bytes, BytesMut};

use crate::protocol::backend::{self, Severity};

/// An error the pooler reports to a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No tenant with that external id, or no such user in it.
    #[error("tenant/user {user}.{tenant} not found")]
    NotFound {
        /// User name as the client wrote it (without the tenant).
        user: String,
        /// External id.
        tenant: String,
    },
    /// Neither `options reference=` nor `user.tenant`.
    #[error("no tenant identifier provided (external_id or sni_hostname required)")]
    NoIdentifier,
    /// User or database name empty, too long or with control characters.
    #[error("Authentication error, reason: \"Invalid format for user or db_name\"")]
    InvalidUserInfo,
    /// The startup packet could not be read.
    #[error("Invalid startup message: {0}")]
    StartupMessage(String),
    /// The startup packet exceeded 1 KiB.
    #[error("Startup packet too large: {0} bytes (max 1024 bytes)")]
    StartupPacketTooLarge(u32),
    /// The client broke the protocol.
    #[error("protocol violation: {0}")]
    ProtocolViolation(String),
    /// Unexpected message during authentication.
    #[error("protocol violation during authentication")]
    AuthProtocol,
    /// The client took too long to log in.
    #[error("timeout while waiting for message")]
    AuthTimeout,
    /// Wrong password or proof.
    #[error("password authentication failed for user \"{0}\"")]
    WrongPassword(String),
    /// The peer address is outside the tenant's allow list.
    #[error("address not in tenant allow_list: {0}")]
    AddressNotAllowed(String),
    /// The tenant requires TLS.
    #[error("SSL connection is required for user: {0}")]
    SslRequired(String),
    /// Client cap reached (per user or per tenant).
    #[error("max client connections reached, limit: {0}")]
    MaxClients(u32),
    /// Session-mode clients are capped by the pool size.
    #[error("max clients reached in session mode - max clients are limited to pool_size: {0}")]
    MaxClientsSession(u32),
    /// No server connection became free in time.
    #[error("unable to check out connection from the pool after {ms}ms in {mode} mode")]
    CheckoutTimeout {
        /// The timeout.
        ms: u128,
        /// `Transaction` or `Session`.
        mode: &'static str,
    },
    /// The upstream could not be reached or failed during login for a reason of its own.
    #[error("Failed to connect to database: {0}")]
    UpstreamUnreachable(String),
    /// The upstream refused the login or failed: forwarded verbatim.
    #[error("upstream error {sqlstate}: {message}")]
    Upstream {
        /// The upstream's SQLSTATE.
        sqlstate: String,
        /// The upstream's message.
        message: String,
        /// The ErrorResponse body as the upstream sent it.
        body: Bytes,
    },
    /// The auth query failed or returned something unusable.
    #[error("{0}")]
    AuthQuery(String),
    /// The server connection died under a client.
    #[error("server connection lost: {0}")]
    ServerLost(String),
    /// The tenant was removed while the client waited.
    #[error("tenant {0} is no longer served by this pooler")]
    TenantRemoved(String),
    /// The pooler is shutting down.
    #[error("terminating connection due to administrator command")]
    Shutdown,
    /// The client sat idle past the tenant's idle timeout.
    #[error("closing idle client after {0}ms")]
    IdleTimeout(u128),
}

impl ClientError {
    /// The stable code written in logs and in `(CODE)` message prefixes.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::NotFound { .. } => "ENOTFOUND",
            ClientError::NoIdentifier => "ENOIDENTIFIER",
            ClientError::InvalidUserInfo => "EINVALIDUSERINFO",
            ClientError::StartupMessage(_) => "ESTARTUPMESSAGE",
            ClientError::StartupPacketTooLarge(_) => "ESTARTUPPACKETTOOLARGE",
            ClientError::ProtocolViolation(_) => "EPROTOCOL",
            ClientError::AuthProtocol => "EAUTHPROTOCOL",
            ClientError::AuthTimeout => "EAUTHTIMEOUT",
            ClientError::WrongPassword(_) => "EWRONGPASSWORD",
            ClientError::AddressNotAllowed(_) => "EADDRNOTALLOWED",
            ClientError::SslRequired(_) => "ESSLREQUIRED",
            ClientError::MaxClients(_) => "EMAXCONN",
            ClientError::MaxClientsSession(_) => "EMAXCONNSESSION",
            ClientError::CheckoutTimeout { .. } => "ECHECKOUTTIMEOUT",
            ClientError::UpstreamUnreachable(_) => "EUPSTREAMCONNECT",
            ClientError::Upstream { .. } => "EUPSTREAM",
            ClientError::AuthQuery(_) => "EAUTHQUERY",
            ClientError::ServerLost(_) => "ESERVERLOST",
            ClientError::TenantRemoved(_) => "ETENANTREMOVED",
            ClientError::Shutdown => "ESHUTDOWN",
            ClientError::IdleTimeout(_) => "EIDLETIMEOUT",
        }
    }

    /// The SQLSTATE sent to the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            ClientError::WrongPassword(_) => "28P01",
            ClientError::StartupMessage(_)
            | ClientError::StartupPacketTooLarge(_)
            | ClientError::ProtocolViolation(_)
            | ClientError::AuthProtocol => "08P01",
            ClientError::AuthTimeout
            | ClientError::UpstreamUnreachable(_)
            | ClientError::ServerLost(_) => "08006",
            ClientError::MaxClients(_) | ClientError::MaxClientsSession(_) => "53300",
            ClientError::Shutdown => "57P01",
            ClientError::IdleTimeout(_) => "57P05",
            ClientError::Upstream { sqlstate, .. } => sqlstate,
            _ => "XX000",
        }
    }

    /// The message as the client sees it.
    pub fn client_message(&self) -> String {
        match self {
            // PostgreSQL's own wording, so drivers and people recognise it.
            ClientError::WrongPassword(_) | ClientError::Shutdown => self.to_string(),
            _ => format!("({}) {}", self.code(), self),
        }
    }

    /// Appends the ErrorResponse for this error.
    pub fn encode(&self, buf: &mut BytesMut, severity: Severity) {
        match self {
            ClientError::Upstream { body, .. } if !body.is_empty() => {
                backend::raw(buf, b'E', body);
            }
            _ => backend::error_response(buf, severity, self.sqlstate(), &self.client_message()),
        }
    }

    /// True for failures that get a short delay before the answer, to slow password guessing
    /// and tenant enumeration.
    pub fn is_delayed(&self) -> bool {
        matches!(
            self,
            ClientError::WrongPassword(_) | ClientError::NotFound { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::error_field;

    #[test]
    fn catalogue_codes_and_sqlstates() {
        let cases: Vec<(ClientError, &str, &str)> = vec![
            (
                ClientError::NotFound {
                    user: "u".into(),
                    tenant: "t".into(),
                },
                "ENOTFOUND",
                "XX000",
            ),
            (ClientError::NoIdentifier, "ENOIDENTIFIER", "XX000"),
            (
                ClientError::WrongPassword("u".into()),
                "EWRONGPASSWORD",
                "28P01",
            ),
            (ClientError::MaxClients(3), "EMAXCONN", "53300"),
            (
                ClientError::MaxClientsSession(3),
                "EMAXCONNSESSION",
                "53300",
            ),
            (
                ClientError::CheckoutTimeout {
                    ms: 5,
                    mode: "Transaction",
                },
                "ECHECKOUTTIMEOUT",
                "XX000",
            ),
            (
                ClientError::UpstreamUnreachable("refused".into()),
                "EUPSTREAMCONNECT",
                "08006",
            ),
            (
                ClientError::ProtocolViolation("x".into()),
                "EPROTOCOL",
                "08P01",
            ),
            (
                ClientError::StartupPacketTooLarge(2000),
                "ESTARTUPPACKETTOOLARGE",
                "08P01",
            ),
            (ClientError::InvalidUserInfo, "EINVALIDUSERINFO", "XX000"),
        ];
        for (err, code, sqlstate) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(err.sqlstate(), sqlstate, "{code}");
        }
    }

    #[test]
    fn messages_carry_the_code_prefix_except_postgres_wording() {
        assert_eq!(
            ClientError::WrongPassword("app".into()).client_message(),
            "password authentication failed for user \"app\""
        );
        assert_eq!(
            ClientError::MaxClients(2).client_message(),
            "(EMAXCONN) max client connections reached, limit: 2"
        );
    }

    #[test]
    fn upstream_errors_are_forwarded_verbatim() {
        let mut original = BytesMut::new();
        backend::error_response(
            &mut original,
            Severity::Fatal,
            "3D000",
            "database \"x\" does not exist",
        );
        let body = Bytes::copy_from_slice(&original[5..]);
        let err = ClientError::Upstream {
            sqlstate: "3D000".into(),
            message: "m".into(),
            body,
        };
        let mut out = BytesMut::new();
        err.encode(&mut out, Severity::Fatal);
        assert_eq!(out, original);
        assert_eq!(error_field(&out[5..], b'C').as_deref(), Some("3D000"));
    }
}
