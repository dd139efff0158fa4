//! Client authentication: SCRAM-SHA-256 against a stored verifier.
//!
//! For `users[]` the verifier was derived once at load. For auth-query tenants it is the
//! role's own `pg_authid` verifier, and the ClientKey recovered from the client's proof lets
//! the pool log in upstream without ever knowing the password.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::auth::auth_query::{AuthQueryTarget, fetch_secret};
use crate::auth::md5::is_md5_secret;
use crate::auth::scram::{SCRAM_SHA_256, ScramError, ScramSecret, ScramServer};
use crate::errors::ClientError;
use crate::protocol::MAX_LOGIN_MESSAGE;
use crate::protocol::backend::{self, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL};
use crate::protocol::read::{ReadError, get_cstr, read_message};
use crate::tenants::Tenant;
use crate::tenants::tenant::{CachedSecret, SECRET_REFRESH_MIN_INTERVAL, SECRET_TTL, SecretKind};

enum Source {
    Users(Arc<ScramSecret>),
    AuthQuery(Arc<ScramSecret>),
    /// Unknown role behind an auth query: run the exchange with a secret nobody can match, so
    /// an unknown role and a wrong password look the same from outside.
    Nobody(Arc<ScramSecret>),
}

/// Runs the SCRAM exchange. On success the SASLFinal message is in `out`, not yet sent.
pub async fn authenticate(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    tenant: &Tenant,
    user: &str,
) -> Result<(), ClientError> {
    let source = match tenant.users.get(user) {
        Some(u) => Source::Users(Arc::clone(&u.verifier)),
        None => match auth_query_secret(tenant, user, false).await? {
            Some(SecretKind::Scram(s)) => Source::AuthQuery(s),
            Some(SecretKind::Md5) => {
                return Err(ClientError::AuthQuery(
                    "MD5 secrets are not supported for auth_query: set a SCRAM-SHA-256 password for the role (password_encryption = scram-sha-256), or list the user in users[]".into(),
                ));
            }
            Some(SecretKind::Unsupported) => {
                return Err(ClientError::AuthQuery(
                    "the role's password is not stored as a SCRAM-SHA-256 secret".into(),
                ));
            }
            None => Source::Nobody(Arc::new(impossible_secret())),
        },
    };
    let secret = match &source {
        Source::Users(s) | Source::AuthQuery(s) | Source::Nobody(s) => Arc::clone(s),
    };

    backend::authentication_sasl(out, &[SCRAM_SHA_256]);
    stream
        .write_all(out)
        .await
        .map_err(|_| ClientError::AuthProtocol)?;
    out.clear();

    let mut body = read_password_message(stream, buf).await?.body;
    let mechanism = get_cstr(&mut body).ok_or(ClientError::AuthProtocol)?;
    if mechanism != SCRAM_SHA_256 || body.len() < 4 {
        return Err(ClientError::AuthProtocol);
    }
    let len = body.get_i32();
    if len < 0 || len as usize != body.len() {
        return Err(ClientError::AuthProtocol);
    }
    let mut server = ScramServer::new(Arc::clone(&secret));
    let first = server
        .client_first(&body)
        .map_err(|_| ClientError::AuthProtocol)?;
    backend::authentication(out, AUTH_SASL_CONTINUE, &first);
    stream
        .write_all(out)
        .await
        .map_err(|_| ClientError::AuthProtocol)?;
    out.clear();

    let body = read_password_message(stream, buf).await?.body;
    match server.client_final(&body) {
        Ok((final_message, client_key)) => {
            if matches!(source, Source::Nobody(_)) {
                return Err(ClientError::WrongPassword(user.to_string()));
            }
            if let Source::AuthQuery(secret) = source {
                tenant
                    .runtime
                    .passthrough_credentials(user)
                    .set_passthrough(secret, client_key);
            }
            backend::authentication(out, AUTH_SASL_FINAL, &final_message);
            Ok(())
        }
        Err(ScramError::InvalidProof) => {
            if matches!(source, Source::AuthQuery(_)) {
                // The password may have been rotated upstream: refresh for the next attempt.
                let _ = auth_query_secret(tenant, user, true).await;
            }
            Err(ClientError::WrongPassword(user.to_string()))
        }
        Err(_) => Err(ClientError::AuthProtocol),
    }
}

async fn read_password_message(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<crate::protocol::read::Message, ClientError> {
    match read_message(stream, buf, MAX_LOGIN_MESSAGE).await {
        Ok(m) if m.tag == b'p' => Ok(m),
        Ok(_) | Err(ReadError::BadLength { .. }) => Err(ClientError::AuthProtocol),
        Err(_) => Err(ClientError::AuthProtocol),
    }
}

fn impossible_secret() -> ScramSecret {
    ScramSecret {
        iterations: crate::auth::scram::DEFAULT_ITERATIONS,
        salt: rand::random::<[u8; 16]>().to_vec(),
        stored_key: rand::random(),
        server_key: rand::random(),
    }
}

/// The role's secret through the auth query, cached per tenant and role.
async fn auth_query_secret(
    tenant: &Tenant,
    user: &str,
    refresh: bool,
) -> Result<Option<SecretKind>, ClientError> {
    let Some(aq) = &tenant.auth_query else {
        return Err(ClientError::NotFound {
            user: user.to_string(),
            tenant: tenant.id.to_string(),
        });
    };
    if let Some(cached) = tenant.runtime.secrets.lock().get(user) {
        let age = cached.fetched.elapsed();
        if (!refresh && age < SECRET_TTL) || (refresh && age < SECRET_REFRESH_MIN_INTERVAL) {
            return Ok(cached.secret.clone());
        }
    }
    let target = AuthQueryTarget {
        host: &tenant.host,
        port: tenant.doc.upstream.port,
        database: &tenant.doc.upstream.database,
        user: &aq.user,
        credentials: &aq.credentials,
        query: &aq.query,
    };
    let raw = fetch_secret(&target, user).await.map_err(|e| {
        tracing::warn!(tenant = %tenant.id, error = %e, "auth query failed");
        ClientError::AuthQuery(e.to_string())
    })?;
    let secret = raw.map(|text| {
        if let Ok(s) = ScramSecret::parse(&text) {
            SecretKind::Scram(Arc::new(s))
        } else if is_md5_secret(&text) {
            SecretKind::Md5
        } else {
            SecretKind::Unsupported
        }
    });
    tenant.runtime.secrets.lock().insert(
        user.to_string(),
        CachedSecret {
            secret: secret.clone(),
            fetched: Instant::now(),
        },
    );
    Ok(secret)
}
