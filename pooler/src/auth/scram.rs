//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it.
//!
//! The pooler sits on both sides of a SCRAM exchange: it authenticates its
//! clients with [`ScramServer`] against a pg_authid-style verifier
//! ([`ScramSecret`]), and it logs in to the upstream PostgreSQL with
//! [`ScramClient`]. Because a successful server-side exchange recovers the
//! client's `ClientKey`, the pooler can reuse that key (together with the
//! verifier's `ServerKey`) to log in upstream without ever knowing the
//! plaintext password ("SCRAM passthrough").
//!
//! Everything here mirrors PostgreSQL's own behaviour (`auth-scram.c` on the
//! server side, `fe-auth-scram.c` in libpq) so that any client PostgreSQL
//! accepts is accepted here, and the pooler looks like libpq to the upstream:
//!
//! * no channel binding is offered: the gs2 header must be `n,,` or `y,,`;
//!   `p=...` is rejected, as is an authorization identity (`a=...`);
//! * the user name in client-first-message is ignored (PostgreSQL uses the
//!   one from the startup packet) and the client sends an empty `n=`;
//! * nonces are 18 random bytes, base64 encoded.
//!
//! Parsing is total: every message comes from the network, so malformed,
//! truncated or oversized input (more than `MAX_MESSAGE_LEN` bytes) yields
//! a [`ScramError`], never a panic.
//!
//! Secrets are not zeroized on drop: the allowed dependencies include no
//! zeroizing crate, and the keys live as long as the pooler's credential
//! cache anyway.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::Hmac;
use hmac::digest::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The SASL mechanism name, as advertised in AuthenticationSASL and as the
/// prefix of a pg_authid verifier; shared so both spellings stay identical.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// PBKDF2 iteration count for newly generated secrets: PostgreSQL's default
/// `scram_iterations`, so verifiers the pooler makes cost the same to attack
/// (and to compute) as the ones PostgreSQL makes.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Longest SCRAM message (or verifier) accepted. Real messages are a few
/// hundred bytes at most; the bound keeps a hostile peer from making us
/// buffer or base64-decode large inputs.
const MAX_MESSAGE_LEN: usize = 1024;

/// Largest iteration count accepted from an upstream's server-first-message.
/// The client must run PBKDF2 with whatever count the server names, so an
/// unbounded count would let a hostile upstream pin a blocking thread.
const MAX_CLIENT_ITERATIONS: u32 = 10_000_000;

/// Largest iteration count accepted in a stored verifier: PostgreSQL keeps
/// the count in a C `int`.
const MAX_VERIFIER_ITERATIONS: u32 = i32::MAX as u32;

/// Raw nonce length, as in PostgreSQL (`SCRAM_RAW_NONCE_LEN`).
const RAW_NONCE_LEN: usize = 18;

/// Salt length for generated secrets, as in PostgreSQL
/// (`SCRAM_DEFAULT_SALT_LEN`).
const DEFAULT_SALT_LEN: usize = 16;

/// Length of SHA-256 output, and so of every SCRAM key, proof and signature.
const KEY_LEN: usize = 32;

/// base64("n,,"): the channel-binding echo for a client that does not
/// support channel binding.
const CBIND_NONE: &[u8] = b"biws";

/// base64("y,,"): the channel-binding echo for a client that supports
/// channel binding but believes the server does not.
const CBIND_CLIENT_ONLY: &[u8] = b"eSws";

/// Why a SCRAM exchange or verifier was rejected.
///
/// The variants are distinct so callers can map them to the right
/// PostgreSQL error (protocol violation vs. authentication failure) and log
/// something useful, without ever echoing secrets.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// The peer sent something that is not a well-formed SCRAM message.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (`p=...`), which we never offer.
    #[error("SCRAM channel binding is not supported")]
    ChannelBindingNotSupported,
    /// The nonce in a message does not continue the exchange's nonce.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client's proof is wrong: the password is wrong.
    #[error("invalid SCRAM client proof")]
    InvalidProof,
    /// A stored verifier is not a valid PostgreSQL SCRAM-SHA-256 verifier.
    #[error("invalid SCRAM verifier: {0}")]
    InvalidVerifier(&'static str),
    /// The upstream server ended the exchange with `e=<error>`.
    #[error("error received from server in SCRAM exchange: {0}")]
    ServerError(String),
    /// The upstream server could not prove it knows the verifier: it may be
    /// an impostor.
    #[error("SCRAM server signature mismatch")]
    ServerSignatureMismatch,
    /// A method was called out of protocol order (or after an earlier step
    /// failed, which ends the exchange).
    #[error("SCRAM message out of order")]
    OutOfOrder,
}

/// A SCRAM-SHA-256 verifier, the form PostgreSQL stores in
/// `pg_authid.rolpassword`.
///
/// It is all the server side needs: it can check a client's proof and sign
/// its reply, but cannot by itself log in anywhere (that needs `ClientKey`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ScramSecret {
    /// PBKDF2 iteration count the client must use.
    pub iterations: u32,
    /// PBKDF2 salt the client must use.
    pub salt: Vec<u8>,
    /// SHA-256(ClientKey): checks the client's proof.
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key"): signs the server-final-message.
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Parse a pg_authid.rolpassword SCRAM verifier:
    /// `SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>`.
    ///
    /// Verifiers come from configuration or from an upstream's pg_authid, so
    /// every field is validated: iterations in `1..=i32::MAX`, a non-empty
    /// salt, and keys of exactly 32 bytes.
    pub fn parse(verifier: &str) -> Result<Self, ScramError> {
        if verifier.len() > MAX_MESSAGE_LEN {
            return Err(ScramError::InvalidVerifier("verifier too long"));
        }
        let rest = verifier
            .strip_prefix(SCRAM_SHA_256)
            .and_then(|r| r.strip_prefix('$'))
            .ok_or(ScramError::InvalidVerifier("not a SCRAM-SHA-256 verifier"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(ScramError::InvalidVerifier("missing keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(ScramError::InvalidVerifier("missing salt"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(ScramError::InvalidVerifier("missing server key"))?;

        let iterations = parse_iterations(iterations.as_bytes(), MAX_VERIFIER_ITERATIONS)
            .ok_or(ScramError::InvalidVerifier("invalid iteration count"))?;
        let salt = decode_base64(salt.as_bytes())
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::InvalidVerifier("invalid salt"))?;
        let stored_key = decode_key(stored_key.as_bytes())
            .ok_or(ScramError::InvalidVerifier("invalid stored key"))?;
        let server_key = decode_key(server_key.as_bytes())
            .ok_or(ScramError::InvalidVerifier("invalid server key"))?;
        Ok(Self {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derive from a password (PBKDF2: expensive, callers run it on a
    /// blocking thread).
    ///
    /// Used when the pooler is configured with plaintext passwords and must
    /// act as a SCRAM server for them. An `iterations` of 0 is treated as 1
    /// (PBKDF2 is undefined for 0, and the stored count must stay parseable);
    /// the salt should be non-empty, since [`ScramSecret::parse`] (like any
    /// sane client) rejects empty salts. See [`derive_keys`] for how
    /// non-ASCII passwords are handled.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let keys = derive_keys(password, salt, iterations);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&keys.client_key),
            server_key: keys.server_key,
        }
    }

    /// [`ScramSecret::from_password`] with a random 16-byte salt and
    /// [`DEFAULT_ITERATIONS`], matching what PostgreSQL itself generates.
    pub fn generate(password: &str) -> Self {
        let salt: [u8; DEFAULT_SALT_LEN] = rand::random();
        Self::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// The verifier string form (inverse of [`ScramSecret::parse`]), byte for
    /// byte what PostgreSQL would store for the same salt and keys.
    pub fn to_verifier(&self) -> String {
        format!(
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key),
        )
    }
}

/// ClientKey and ServerKey: what a client needs to complete SCRAM against a
/// server whose verifier has this salt and iteration count.
///
/// Kept separate from the password so it can be cached (PBKDF2 is slow) or
/// recovered from a client's proof (passthrough) and reused upstream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ScramKeys {
    /// HMAC(SaltedPassword, "Client Key"): proves knowledge of the password.
    pub client_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key"): checks the server's signature.
    pub server_key: [u8; 32],
}

/// PBKDF2 + HMACs (expensive): the client-side keys for `password` under a
/// server's salt and iteration count.
///
/// `iterations` of 0 is treated as 1. The password goes through
/// `prepare_password`, see there for the SASLprep limitation.
pub fn derive_keys(password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
    let salted: [u8; KEY_LEN] = pbkdf2::pbkdf2_hmac_array::<Sha256, KEY_LEN>(
        prepare_password(password),
        salt,
        iterations.max(1),
    );
    ScramKeys {
        client_key: hmac_sha256(&salted, &[b"Client Key"]),
        server_key: hmac_sha256(&salted, &[b"Server Key"]),
    }
}

/// The bytes PBKDF2 runs over: PostgreSQL's `pg_saslprep` result, as far as
/// we can reproduce it without Unicode tables.
///
/// PostgreSQL applies SASLprep (RFC 4013) to the password and, when that
/// fails (invalid UTF-8, prohibited characters, bidi violations, ...), uses
/// the raw bytes instead. For pure-ASCII passwords SASLprep is the identity
/// (PostgreSQL short-circuits them, control characters included), so those
/// are exact.
///
/// Limitation: for non-ASCII passwords we always use the raw UTF-8 bytes.
/// That agrees with PostgreSQL for the common case of NFKC-stable text (e.g.
/// precomposed accented letters) and for passwords SASLprep rejects, but
/// differs for passwords SASLprep would change: ones containing non-ASCII
/// spaces (U+00A0, ...), characters "mapped to nothing" (soft hyphen,
/// zero-width joiners, ...), or compatibility/decomposed forms that NFKC
/// rewrites. Such passwords will fail SCRAM against PostgreSQL-made
/// verifiers or PostgreSQL clients; full SASLprep needs Unicode
/// normalization tables that the allowed dependencies do not provide.
fn prepare_password(password: &str) -> &[u8] {
    // ASCII: exact. Non-ASCII: raw bytes, the documented approximation.
    password.as_bytes()
}

/// Where a [`ScramServer`] is in the exchange.
enum ServerState {
    /// Waiting for client-first-message.
    Initial,
    /// server-first-message sent; waiting for client-final-message.
    SentServerFirst {
        /// The channel-binding echo the client must send back.
        cbind: &'static [u8],
        /// client nonce + server nonce.
        nonce: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
    },
    /// Done, successfully or not: any further message is out of order.
    Finished,
}

/// Server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL does it: no
/// channel binding offered; accept gs2 header `n,,` or `y,,` (reject `p=...`
/// with [`ScramError::ChannelBindingNotSupported`]); ignore the username in
/// client-first (PostgreSQL ignores it); the server nonce is 18 random bytes
/// base64.
///
/// Only the verifier is needed, so PBKDF2 never runs here: an exchange is a
/// few HMACs and safe to do on the async runtime. Any error ends the
/// exchange.
pub struct ScramServer {
    secret: Arc<ScramSecret>,
    server_nonce: String,
    state: ServerState,
}

impl ScramServer {
    /// Start an exchange against `secret` with a fresh random server nonce.
    /// The secret is shared because many concurrent logins use the same one.
    pub fn new(secret: Arc<ScramSecret>) -> Self {
        Self::with_server_nonce(secret, random_nonce())
    }

    /// Like [`ScramServer::new`] but with a fixed server nonce, so tests can
    /// replay published test vectors.
    #[cfg(test)]
    pub(crate) fn with_nonce(secret: Arc<ScramSecret>, server_nonce: &str) -> Self {
        Self::with_server_nonce(secret, server_nonce.to_owned())
    }

    fn with_server_nonce(secret: Arc<ScramSecret>, server_nonce: String) -> Self {
        Self {
            secret,
            server_nonce,
            state: ServerState::Initial,
        }
    }

    /// Takes the SASLInitialResponse data (client-first-message), returns
    /// server-first-message bytes.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            std::mem::replace(&mut self.state, ServerState::Finished),
            ServerState::Initial
        ) {
            return Err(ScramError::OutOfOrder);
        }
        check_len(data)?;

        // gs2-cbind-flag
        let (cbind, rest) = match data {
            [b'n', b',', rest @ ..] => (CBIND_NONE, rest),
            [b'y', b',', rest @ ..] => (CBIND_CLIENT_ONLY, rest),
            [b'p', ..] => return Err(ScramError::ChannelBindingNotSupported),
            _ => return Err(ScramError::Malformed("invalid gs2 channel-binding flag")),
        };
        // authzid: PostgreSQL does not support one.
        let bare = match rest {
            [b',', bare @ ..] => bare,
            [b'a', b'=', ..] => {
                return Err(ScramError::Malformed(
                    "authorization identity is not supported",
                ));
            }
            _ => return Err(ScramError::Malformed("invalid gs2 header")),
        };
        if bare.starts_with(b"m=") {
            return Err(ScramError::Malformed("unsupported mandatory extension"));
        }

        let mut input = bare;
        // The user name is ignored, as PostgreSQL does: the startup packet
        // names the user, and clients such as libpq send an empty `n=`.
        let _user = expect_attr(&mut input, b'n', "expected user name attribute")?;
        let client_nonce = expect_attr(&mut input, b'r', "expected nonce attribute")?;
        if !is_printable(client_nonce) {
            return Err(ScramError::Malformed("invalid client nonce"));
        }
        // Optional extensions: none are supported, so they are skipped.
        while !input.is_empty() {
            read_attr(&mut input)?;
        }

        let mut nonce = client_nonce.to_vec();
        nonce.extend_from_slice(self.server_nonce.as_bytes());

        let mut server_first = Vec::with_capacity(64);
        server_first.extend_from_slice(b"r=");
        server_first.extend_from_slice(&nonce);
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(BASE64.encode(&self.secret.salt).as_bytes());
        server_first.extend_from_slice(b",i=");
        server_first.extend_from_slice(self.secret.iterations.to_string().as_bytes());

        self.state = ServerState::SentServerFirst {
            cbind,
            nonce,
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
        };
        Ok(server_first)
    }

    /// Takes client-final-message; verifies the channel-binding echo (`biws`
    /// or `eSws`, matching the gs2 header), the nonce, and the proof.
    ///
    /// On success returns (server-final-message `v=...`, the recovered
    /// ClientKey = proof XOR HMAC(StoredKey, AuthMessage), checked by
    /// SHA256(ClientKey) == StoredKey). The ClientKey is what makes
    /// passthrough possible: with the verifier's ServerKey it logs in
    /// upstream. A wrong proof gives [`ScramError::InvalidProof`].
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, [u8; 32]), ScramError> {
        let ServerState::SentServerFirst {
            cbind,
            nonce,
            client_first_bare,
            server_first,
        } = std::mem::replace(&mut self.state, ServerState::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        check_len(data)?;

        let mut input = data;
        let channel_binding = expect_attr(&mut input, b'c', "expected channel-binding attribute")?;
        if channel_binding != cbind {
            return Err(ScramError::Malformed(
                "channel-binding attribute does not match the gs2 header",
            ));
        }
        let final_nonce = expect_attr(&mut input, b'r', "expected nonce attribute")?;
        if final_nonce != nonce.as_slice() {
            return Err(ScramError::NonceMismatch);
        }
        // Skip optional extensions up to the proof, which must come last.
        let (proof, without_proof) = loop {
            let start = data.len() - input.len();
            let (name, value) = read_attr(&mut input)?;
            if name == b'p' {
                // Everything before the "," that precedes "p=".
                let without_proof = data
                    .get(..start.saturating_sub(1))
                    .ok_or(ScramError::Malformed("invalid client-final-message"))?;
                break (value, without_proof);
            }
        };
        if !input.is_empty() {
            return Err(ScramError::Malformed("garbage after proof"));
        }
        let proof = decode_key(proof).ok_or(ScramError::Malformed("invalid proof"))?;

        let auth_message: [&[u8]; 5] =
            [&client_first_bare, b",", &server_first, b",", without_proof];
        let client_signature = hmac_sha256(&self.secret.stored_key, &auth_message);
        let client_key = xor(&proof, &client_signature);
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac_sha256(&self.secret.server_key, &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(BASE64.encode(server_signature).as_bytes());
        Ok((server_final, client_key))
    }
}

/// The first message of an upstream's SCRAM exchange, decoded: what the
/// caller needs to derive (or look up cached) [`ScramKeys`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServerFirst {
    /// PBKDF2 salt of the upstream's verifier.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count of the upstream's verifier.
    pub iterations: u32,
}

/// Where a [`ScramClient`] is in the exchange.
enum ClientState {
    /// client-first-message may be sent; waiting for server-first.
    Initial,
    /// server-first-message accepted; client-final may be built.
    ReceivedServerFirst {
        server_first: Vec<u8>,
        /// client nonce + server nonce.
        nonce: Vec<u8>,
    },
    /// client-final sent; waiting for the server's signature.
    SentClientFinal { server_signature: [u8; KEY_LEN] },
    /// A step failed or came out of order: the exchange is over.
    Failed,
}

/// Client side, used by the pooler to log in to an upstream PostgreSQL.
///
/// It never sees a password: the caller supplies [`ScramKeys`], derived
/// (possibly cached) or recovered from a client via passthrough, so PBKDF2
/// placement is the caller's choice. Behaves like libpq on the wire.
pub struct ScramClient {
    nonce: String,
    client_first_bare: Vec<u8>,
    state: ClientState,
}

impl Default for ScramClient {
    /// Same as [`ScramClient::new`]: a client is only useful with a fresh
    /// random nonce.
    fn default() -> Self {
        Self::new()
    }
}

impl ScramClient {
    /// Start an exchange with a random nonce (18 bytes, base64), as libpq
    /// does.
    pub fn new() -> Self {
        Self::with_nonce_and_name(random_nonce(), "")
    }

    /// A client with a fixed nonce and user name, so tests can replay
    /// published test vectors (which use `n=user`).
    #[cfg(test)]
    pub(crate) fn with_nonce(nonce: &str, user: &str) -> Self {
        Self::with_nonce_and_name(nonce.to_owned(), user)
    }

    fn with_nonce_and_name(nonce: String, user: &str) -> Self {
        let mut client_first_bare = b"n=".to_vec();
        client_first_bare.extend_from_slice(user.as_bytes());
        client_first_bare.extend_from_slice(b",r=");
        client_first_bare.extend_from_slice(nonce.as_bytes());
        Self {
            nonce,
            client_first_bare,
            state: ClientState::Initial,
        }
    }

    /// `n,,n=,r=<nonce>`: PostgreSQL ignores the user name in SCRAM, so an
    /// empty `n=` is sent, exactly like libpq.
    pub fn client_first(&self) -> Vec<u8> {
        let mut message = b"n,,".to_vec();
        message.extend_from_slice(&self.client_first_bare);
        message
    }

    /// Parse server-first-message and check the nonce extends ours.
    ///
    /// The iteration count must be in `1..=10_000_000` (the caller will run
    /// PBKDF2 with it, so a hostile upstream must not be able to name an
    /// absurd count) and the salt must be non-empty.
    pub fn server_first(&mut self, data: &[u8]) -> Result<ServerFirst, ScramError> {
        if !matches!(
            std::mem::replace(&mut self.state, ClientState::Failed),
            ClientState::Initial
        ) {
            return Err(ScramError::OutOfOrder);
        }
        check_len(data)?;
        if data.starts_with(b"m=") {
            return Err(ScramError::Malformed("unsupported mandatory extension"));
        }

        let mut input = data;
        let nonce = expect_attr(&mut input, b'r', "expected nonce attribute")?;
        if !is_printable(nonce) {
            return Err(ScramError::Malformed("invalid server nonce"));
        }
        // The server must append its own, non-empty, part to our nonce.
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(self.nonce.as_bytes()) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = expect_attr(&mut input, b's', "expected salt attribute")?;
        let salt = decode_base64(salt).ok_or(ScramError::Malformed("invalid salt"))?;
        if salt.is_empty() {
            return Err(ScramError::Malformed("empty salt"));
        }
        let iterations = expect_attr(&mut input, b'i', "expected iteration count attribute")?;
        let iterations = parse_iterations(iterations, MAX_CLIENT_ITERATIONS)
            .ok_or(ScramError::Malformed("invalid iteration count"))?;
        // As libpq: nothing may follow the iteration count.
        if !input.is_empty() {
            return Err(ScramError::Malformed(
                "garbage at end of server-first-message",
            ));
        }

        self.state = ClientState::ReceivedServerFirst {
            server_first: data.to_vec(),
            nonce: nonce.to_vec(),
        };
        Ok(ServerFirst { salt, iterations })
    }

    /// Build client-final-message with the proof from `keys` (the caller
    /// derived them, possibly cached, or recovered ClientKey via
    /// passthrough).
    ///
    /// Called out of order (before a successful
    /// [`ScramClient::server_first`]) it still returns a message, which any
    /// server rejects, and [`ScramClient::server_final`] then fails with
    /// [`ScramError::OutOfOrder`]; this keeps the happy path infallible.
    pub fn client_final(&mut self, keys: &ScramKeys) -> Vec<u8> {
        match std::mem::replace(&mut self.state, ClientState::Failed) {
            ClientState::ReceivedServerFirst {
                server_first,
                nonce,
            } => {
                let (message, server_signature) = build_client_final(
                    &self.client_first_bare,
                    &server_first,
                    CBIND_NONE,
                    &nonce,
                    keys,
                );
                self.state = ClientState::SentClientFinal { server_signature };
                message
            }
            _ => {
                build_client_final(
                    &self.client_first_bare,
                    b"",
                    CBIND_NONE,
                    self.nonce.as_bytes(),
                    keys,
                )
                .0
            }
        }
    }

    /// Verify `v=<ServerSignature>` in server-final-message, proving the
    /// upstream knows the verifier; `e=<error>` maps to
    /// [`ScramError::ServerError`].
    pub fn server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        check_len(data)?;
        let mut input = data;
        let (name, value) = read_attr(&mut input)?;
        if name == b'e' {
            return Err(ScramError::ServerError(
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        let ClientState::SentClientFinal { server_signature } = &self.state else {
            return Err(ScramError::OutOfOrder);
        };
        if name != b'v' {
            return Err(ScramError::Malformed("expected verifier attribute"));
        }
        let signature =
            decode_key(value).ok_or(ScramError::Malformed("invalid server signature"))?;
        // As libpq: nothing may follow the signature.
        if !input.is_empty() {
            return Err(ScramError::Malformed(
                "garbage at end of server-final-message",
            ));
        }
        if !ct_eq(&signature, server_signature) {
            return Err(ScramError::ServerSignatureMismatch);
        }
        Ok(())
    }
}

/// Build client-final-message for `keys` and return it with the server
/// signature the server must answer with.
fn build_client_final(
    client_first_bare: &[u8],
    server_first: &[u8],
    cbind: &[u8],
    nonce: &[u8],
    keys: &ScramKeys,
) -> (Vec<u8>, [u8; KEY_LEN]) {
    let mut message = b"c=".to_vec();
    message.extend_from_slice(cbind);
    message.extend_from_slice(b",r=");
    message.extend_from_slice(nonce);

    let auth_message: [&[u8]; 5] = [client_first_bare, b",", server_first, b",", &message];
    let stored_key = sha256(&keys.client_key);
    let client_signature = hmac_sha256(&stored_key, &auth_message);
    let proof = xor(&keys.client_key, &client_signature);
    let server_signature = hmac_sha256(&keys.server_key, &auth_message);

    message.extend_from_slice(b",p=");
    message.extend_from_slice(BASE64.encode(proof).as_bytes());
    (message, server_signature)
}

/// A fresh nonce: 18 random bytes, base64 (24 printable characters), as
/// PostgreSQL and libpq make them. `rand`'s thread RNG is a CSPRNG seeded
/// from the OS, which nonces require.
fn random_nonce() -> String {
    let raw: [u8; RAW_NONCE_LEN] = rand::random();
    BASE64.encode(raw)
}

/// Reject oversized messages before looking at them.
fn check_len(data: &[u8]) -> Result<(), ScramError> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::Malformed("message too long"));
    }
    Ok(())
}

/// Read one `<letter>=<value>` attribute from the front of `input`,
/// advancing past it and its trailing comma. A comma followed by nothing is
/// an error, so "all attributes read" is exactly `input.is_empty()`.
fn read_attr<'a>(input: &mut &'a [u8]) -> Result<(u8, &'a [u8]), ScramError> {
    let (name, rest) = match *input {
        [name, b'=', rest @ ..] if name.is_ascii_alphabetic() => (*name, rest),
        _ => return Err(ScramError::Malformed("expected attribute")),
    };
    match rest.iter().position(|&b| b == b',') {
        Some(comma) => {
            let (value, tail) = rest.split_at(comma);
            let tail = tail.get(1..).unwrap_or_default();
            if tail.is_empty() {
                return Err(ScramError::Malformed("trailing comma"));
            }
            *input = tail;
            Ok((name, value))
        }
        None => {
            *input = &[];
            Ok((name, rest))
        }
    }
}

/// Read the attribute `name` from the front of `input`, or fail with `what`.
fn expect_attr<'a>(
    input: &mut &'a [u8],
    name: u8,
    what: &'static str,
) -> Result<&'a [u8], ScramError> {
    match read_attr(input) {
        Ok((found, value)) if found == name => Ok(value),
        _ => Err(ScramError::Malformed(what)),
    }
}

/// RFC 5802 `printable` (as PostgreSQL's `is_scram_printable`), and
/// non-empty: `%x21-2B / %x2D-7E`, i.e. visible ASCII except ",".
fn is_printable(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parse a decimal iteration count in `1..=max`. Only ASCII digits are
/// allowed (no sign, no spaces), unlike `str::parse`, which accepts `+`.
fn parse_iterations(value: &[u8], max: u32) -> Option<u32> {
    if value.is_empty() {
        return None;
    }
    let mut n: u32 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    (1..=max).contains(&n).then_some(n)
}

/// Standard (padded) base64 decode; `None` on any error.
fn decode_base64(value: &[u8]) -> Option<Vec<u8>> {
    BASE64.decode(value).ok()
}

/// Decode a base64 value that must hold exactly one 32-byte key, proof or
/// signature.
fn decode_key(value: &[u8]) -> Option<[u8; KEY_LEN]> {
    decode_base64(value)?.try_into().ok()
}

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
#[allow(clippy::expect_used)]
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    // HMAC is defined for keys of any length (long keys are hashed, short
    // ones zero-padded), so `new_from_slice` cannot fail for `Hmac<Sha256>`.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA-256 accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

/// Byte-wise XOR of two keys.
fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Constant-time equality (for equal lengths): the time taken does not
/// depend on where the inputs differ, so proofs and signatures cannot be
/// guessed byte by byte.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    // RFC 7677 section 3.
    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// Made by PostgreSQL 15 (`CREATE ROLE a PASSWORD 'scram-secret'`).
    const PG_VERIFIER: &str = "SCRAM-SHA-256$4096:S+nSB+qjj3Nfna5sIelBvg==$qRw0JCHbr40ustpkpztsz+SGBlOicA7/wB+e8NC5lNg=:s02amouYwbhtnyx9QpXbr6LrHfR6BwBi67I3zfVrhVg=";

    fn rfc_secret() -> Arc<ScramSecret> {
        let salt = BASE64.decode(RFC_SALT).unwrap();
        Arc::new(ScramSecret::from_password("pencil", &salt, 4096))
    }

    /// A full exchange; returns the recovered ClientKey.
    fn login(
        secret: &Arc<ScramSecret>,
        keys_for: impl FnOnce(&ServerFirst) -> ScramKeys,
    ) -> Result<[u8; 32], ScramError> {
        let mut server = ScramServer::new(Arc::clone(secret));
        let mut client = ScramClient::new();
        let server_first = server.client_first(&client.client_first())?;
        let params = client.server_first(&server_first)?;
        let keys = keys_for(&params);
        let (server_final, client_key) = server.client_final(&client.client_final(&keys))?;
        client.server_final(&server_final)?;
        Ok(client_key)
    }

    #[test]
    fn rfc7677_client_vector() {
        let mut client = ScramClient::with_nonce(RFC_CLIENT_NONCE, "user");
        assert_eq!(client.client_first(), RFC_CLIENT_FIRST);
        let params = client.server_first(RFC_SERVER_FIRST).unwrap();
        assert_eq!(params.salt, BASE64.decode(RFC_SALT).unwrap());
        assert_eq!(params.iterations, 4096);
        let keys = derive_keys("pencil", &params.salt, params.iterations);
        assert_eq!(client.client_final(&keys), RFC_CLIENT_FINAL);
        client.server_final(RFC_SERVER_FINAL).unwrap();
    }

    #[test]
    fn rfc7677_server_vector() {
        let secret = rfc_secret();
        let mut server = ScramServer::with_nonce(Arc::clone(&secret), RFC_SERVER_NONCE);
        assert_eq!(
            server.client_first(RFC_CLIENT_FIRST).unwrap(),
            RFC_SERVER_FIRST
        );
        let (server_final, client_key) = server.client_final(RFC_CLIENT_FINAL).unwrap();
        assert_eq!(server_final, RFC_SERVER_FINAL);
        let keys = derive_keys("pencil", &secret.salt, secret.iterations);
        assert_eq!(client_key, keys.client_key);
        // A finished server accepts nothing more.
        assert!(matches!(
            server.client_final(RFC_CLIENT_FINAL),
            Err(ScramError::OutOfOrder)
        ));
        assert!(matches!(
            server.client_first(RFC_CLIENT_FIRST),
            Err(ScramError::OutOfOrder)
        ));
    }

    #[test]
    fn round_trip_and_passthrough() {
        let secret = Arc::new(ScramSecret::generate("correct horse battery staple"));
        let derived = derive_keys(
            "correct horse battery staple",
            &secret.salt,
            secret.iterations,
        );
        assert_eq!(derived.server_key, secret.server_key);

        let recovered = login(&secret, |p| {
            assert_eq!(p.salt, secret.salt);
            assert_eq!(p.iterations, secret.iterations);
            derive_keys("correct horse battery staple", &p.salt, p.iterations)
        })
        .unwrap();
        assert_eq!(recovered, derived.client_key);

        // Wrong password.
        let err = login(&secret, |p| derive_keys("wrong", &p.salt, p.iterations)).unwrap_err();
        assert!(matches!(err, ScramError::InvalidProof), "{err:?}");

        // Passthrough: the recovered ClientKey plus the verifier's ServerKey
        // log in without the password.
        let passthrough = ScramKeys {
            client_key: recovered,
            server_key: secret.server_key,
        };
        let again = login(&secret, |_| passthrough.clone()).unwrap();
        assert_eq!(again, recovered);
    }

    #[test]
    fn client_detects_wrong_server_signature() {
        let secret = rfc_secret();
        let good = derive_keys("pencil", &secret.salt, secret.iterations);
        let mut server = ScramServer::new(Arc::clone(&secret));
        let mut client = ScramClient::new();
        let sf = server.client_first(&client.client_first()).unwrap();
        client.server_first(&sf).unwrap();
        // The client believes in a different ServerKey than the server has.
        let keys = ScramKeys {
            client_key: good.client_key,
            server_key: [7; 32],
        };
        let (server_final, _) = server.client_final(&client.client_final(&keys)).unwrap();
        assert!(matches!(
            client.server_final(&server_final),
            Err(ScramError::ServerSignatureMismatch)
        ));
    }

    #[test]
    fn gs2_y_header_requires_matching_echo() {
        let secret = rfc_secret();
        let keys = derive_keys("pencil", &secret.salt, secret.iterations);
        let bare = b"n=,r=abcdef";
        let client_first = [b"y,,".as_slice(), bare].concat();

        let mut server = ScramServer::new(Arc::clone(&secret));
        let server_first = server.client_first(&client_first).unwrap();
        let nonce = server_first[2..server_first.iter().position(|&b| b == b',').unwrap()].to_vec();
        let (message, expected) =
            build_client_final(bare, &server_first, CBIND_CLIENT_ONLY, &nonce, &keys);
        let (server_final, _) = server.client_final(&message).unwrap();
        assert_eq!(
            server_final,
            [b"v=".as_slice(), BASE64.encode(expected).as_bytes()].concat()
        );

        // "biws" after a "y,," header is rejected.
        let mut server = ScramServer::new(Arc::clone(&secret));
        let server_first = server.client_first(&client_first).unwrap();
        let (message, _) = build_client_final(bare, &server_first, CBIND_NONE, &nonce, &keys);
        assert!(matches!(
            server.client_final(&message),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn server_rejects_bad_client_first() {
        let secret = rfc_secret();
        let first = |data: &[u8]| ScramServer::new(Arc::clone(&secret)).client_first(data);
        assert!(matches!(
            first(b"p=tls-server-end-point,,n=,r=abc"),
            Err(ScramError::ChannelBindingNotSupported)
        ));
        let too_long = [b"n,,n=,r=".as_slice(), &[b'a'; 1100]].concat();
        for bad in [
            b"".as_slice(),
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=",
            b"n,,n=,",
            b"n,,n=,r=",
            b"n,,n=,r=ab c",
            b"n,,n=,r=abc\x01",
            b"n,,n=,r=abc,",
            b"n,,n=,r=abc,garbage",
            b"n,,n=,r=abc,=x",
            &too_long,
        ] {
            assert!(
                matches!(first(bad), Err(ScramError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Extensions and any user name are accepted, as in PostgreSQL.
        first(b"n,,n=someone,r=abc,x=ext").unwrap();
        first(b"y,,n=*,r=abc").unwrap();
    }

    #[test]
    fn server_rejects_bad_client_final() {
        let secret = rfc_secret();
        let final_msg = |data: &[u8]| {
            let mut server = ScramServer::with_nonce(Arc::clone(&secret), RFC_SERVER_NONCE);
            server.client_first(RFC_CLIENT_FIRST).unwrap();
            server.client_final(data)
        };
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert!(matches!(
            final_msg(format!("c=biws,r={nonce}x,p={proof}").as_bytes()),
            Err(ScramError::NonceMismatch)
        ));
        assert!(matches!(
            final_msg(format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={proof}").as_bytes()),
            Err(ScramError::NonceMismatch)
        ));
        // A well-formed but wrong proof.
        assert!(matches!(
            final_msg(format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 32])).as_bytes()),
            Err(ScramError::InvalidProof)
        ));
        // Extensions before the proof are skipped but covered by the proof.
        assert!(matches!(
            final_msg(format!("c=biws,r={nonce},x=y,p={proof}").as_bytes()),
            Err(ScramError::InvalidProof)
        ));
        for bad in [
            String::new(),
            "c=biws".into(),
            format!("r={nonce},p={proof}"),
            format!("c=eSws,r={nonce},p={proof}"),
            format!("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsAAAA,r={nonce},p={proof}"),
            format!("c=biws,r={nonce}"),
            format!("c=biws,r={nonce},"),
            format!("c=biws,r={nonce},p="),
            format!("c=biws,r={nonce},p=!!!!"),
            format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 31])),
            format!("c=biws,r={nonce},p={proof},x=y"),
            format!("c=biws,r={nonce},p={proof},"),
            format!("c=biws,r={nonce},p={proof}{}", "A".repeat(1100)),
        ] {
            assert!(
                matches!(final_msg(bad.as_bytes()), Err(ScramError::Malformed(_))),
                "{bad}"
            );
        }
        // Out of order.
        let mut server = ScramServer::new(Arc::clone(&secret));
        assert!(matches!(
            server.client_final(RFC_CLIENT_FINAL),
            Err(ScramError::OutOfOrder)
        ));
        // A failed step ends the exchange.
        let mut server = ScramServer::new(Arc::clone(&secret));
        assert!(server.client_first(b"").is_err());
        assert!(matches!(
            server.client_first(RFC_CLIENT_FIRST),
            Err(ScramError::OutOfOrder)
        ));
    }

    #[test]
    fn client_rejects_bad_server_first() {
        let first = |data: &[u8]| ScramClient::with_nonce(RFC_CLIENT_NONCE, "").server_first(data);
        let n = RFC_CLIENT_NONCE;
        for bad in [
            "r=somebodyelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".to_string(),
            format!("r={n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            format!("r=x{n},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
        ] {
            assert!(
                matches!(first(bad.as_bytes()), Err(ScramError::NonceMismatch)),
                "{bad}"
            );
        }
        for bad in [
            String::new(),
            "garbage".into(),
            format!("r={n}xyz"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ=="),
            format!("r={n}xyz,i=4096"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i="),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i= 4096"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4294967296"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999999"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=y"),
            format!("r={n}xyz,s=,i=4096"),
            format!("r={n}xyz,s=not base64!,i=4096"),
            format!("r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096"),
            format!("r={n}x\x7fz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            format!("m=ext,r={n}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            format!("s=W22ZaJ0SNY7soEsUEjb6gQ==,r={n}xyz,i=4096"),
            format!("r={n}xyz,s={},i=4096", "A".repeat(1100)),
        ] {
            assert!(
                matches!(first(bad.as_bytes()), Err(ScramError::Malformed(_))),
                "{bad}"
            );
        }
        let ok = first(format!("r={n}xyz,s=AAAA,i=10000000").as_bytes()).unwrap();
        assert_eq!(
            ok,
            ServerFirst {
                salt: vec![0, 0, 0],
                iterations: 10_000_000
            }
        );

        // Out of order.
        let mut client = ScramClient::new();
        let sf = format!("r={}xyz,s=AAAA,i=1", client.nonce);
        client.server_first(sf.as_bytes()).unwrap();
        assert!(matches!(
            client.server_first(sf.as_bytes()),
            Err(ScramError::OutOfOrder)
        ));
    }

    #[test]
    fn client_server_final_errors() {
        let keys = derive_keys("pencil", &BASE64.decode(RFC_SALT).unwrap(), 4096);
        let ready = || {
            let mut client = ScramClient::with_nonce(RFC_CLIENT_NONCE, "user");
            client.server_first(RFC_SERVER_FIRST).unwrap();
            client.client_final(&keys);
            client
        };
        match ready().server_final(b"e=invalid-proof") {
            Err(ScramError::ServerError(e)) => assert_eq!(e, "invalid-proof"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ready().server_final(format!("v={}", BASE64.encode([1u8; 32])).as_bytes()),
            Err(ScramError::ServerSignatureMismatch)
        ));
        for bad in [
            b"".as_slice(),
            b"v=",
            b"v=!!",
            b"x=abc",
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=y",
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,",
            b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ] {
            assert!(
                matches!(ready().server_final(bad), Err(ScramError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        ready().server_final(RFC_SERVER_FINAL).unwrap();

        // Out of order: client_final before server_first still yields a
        // message, but the exchange cannot succeed.
        let mut client = ScramClient::with_nonce(RFC_CLIENT_NONCE, "user");
        assert!(!client.client_final(&keys).is_empty());
        assert!(matches!(
            client.server_final(RFC_SERVER_FINAL),
            Err(ScramError::OutOfOrder)
        ));
        assert!(matches!(
            client.server_first(RFC_SERVER_FIRST),
            Err(ScramError::OutOfOrder)
        ));
        // And a server rejects that message.
        let mut server = ScramServer::new(rfc_secret());
        server.client_first(&client.client_first()).unwrap();
        assert!(server.client_final(&client.client_final(&keys)).is_err());
    }

    #[test]
    fn client_messages_look_like_libpq() {
        let client = ScramClient::default();
        let first = String::from_utf8(client.client_first()).unwrap();
        let nonce = first.strip_prefix("n,,n=,r=").unwrap();
        assert_eq!(nonce.len(), 24);
        assert_eq!(BASE64.decode(nonce).unwrap().len(), RAW_NONCE_LEN);
        assert_ne!(ScramClient::new().client_first(), client.client_first());

        let mut server = ScramServer::new(rfc_secret());
        let sf = String::from_utf8(server.client_first(first.as_bytes()).unwrap()).unwrap();
        let server_nonce = sf.strip_prefix("r=").unwrap().split(',').next().unwrap();
        assert_eq!(server_nonce.len(), 48);
        assert!(server_nonce.starts_with(nonce));
        assert!(sf.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
    }

    #[test]
    fn postgres_verifier_round_trip() {
        let secret = ScramSecret::parse(PG_VERIFIER).unwrap();
        assert_eq!(secret.iterations, 4096);
        assert_eq!(secret.salt.len(), 16);
        assert_eq!(secret.to_verifier(), PG_VERIFIER);
        assert_eq!(
            ScramSecret::from_password("scram-secret", &secret.salt, 4096),
            secret
        );

        // Computed independently (Python hashlib/hmac) for salt 0..16.
        let salt: Vec<u8> = (0..16).collect();
        let derived = ScramSecret::from_password("scram-secret", &salt, 4096);
        let expected = "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$9ySfU38gG0U4lJHczbDEmxVIkLud5TrvaW2sQOfMR5A=:lFWJeEpsqIh+A8YVGVbtiKUH4qKaWbL+zXtrDkWnKK8=";
        assert_eq!(derived.to_verifier(), expected);
        assert_eq!(ScramSecret::parse(expected).unwrap(), derived);
        assert_eq!(
            BASE64.encode(derive_keys("scram-secret", &salt, 4096).client_key),
            "EkzBuDPWNrviDXG+PBq6aOWhh+2IXriyiCAU7FiXgcM="
        );

        // A login against the PostgreSQL-made verifier.
        let secret = Arc::new(secret);
        login(&secret, |p| {
            derive_keys("scram-secret", &p.salt, p.iterations)
        })
        .unwrap();
    }

    #[test]
    fn generate_is_random_and_parses_back() {
        let a = ScramSecret::generate("pw");
        let b = ScramSecret::generate("pw");
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        assert_eq!(a.salt.len(), 16);
        assert_ne!(a.salt, b.salt);
        assert_eq!(ScramSecret::parse(&a.to_verifier()).unwrap(), a);
        // Zero iterations are stored as one, so the verifier stays valid.
        let z = ScramSecret::from_password("pw", b"salt", 0);
        assert_eq!(z.iterations, 1);
        assert_eq!(ScramSecret::parse(&z.to_verifier()).unwrap(), z);
    }

    #[test]
    fn bad_verifiers() {
        let key = BASE64.encode([0u8; 32]);
        let short = BASE64.encode([0u8; 31]);
        for bad in [
            String::new(),
            "SCRAM-SHA-256".into(),
            "SCRAM-SHA-256$".into(),
            "md52a6cbddbf747548186c60739cd10a39b".into(),
            "plaintext".into(),
            format!("SCRAM-SHA-1$4096:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$4096:AAAA${key}"),
            format!("SCRAM-SHA-256$4096${key}:{key}"),
            format!("SCRAM-SHA-256$4096:AAAA${key}:{key}$extra"),
            format!("SCRAM-SHA-256$4096:AAAA${key}:{key}:extra"),
            format!("SCRAM-SHA-256$0:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$-1:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$+4096:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$2147483648:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$99999999999999999999:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$:AAAA${key}:{key}"),
            format!("SCRAM-SHA-256$4096:${key}:{key}"),
            format!("SCRAM-SHA-256$4096:A!AA${key}:{key}"),
            format!("SCRAM-SHA-256$4096:AAAA${short}:{key}"),
            format!("SCRAM-SHA-256$4096:AAAA${key}:{short}"),
            format!("SCRAM-SHA-256$4096:AAAA${key}:"),
            format!("SCRAM-SHA-256$4096:{}${key}:{key}", "A".repeat(1100)),
        ] {
            assert!(
                matches!(
                    ScramSecret::parse(&bad),
                    Err(ScramError::InvalidVerifier(_))
                ),
                "{bad}"
            );
        }
        ScramSecret::parse(&format!("SCRAM-SHA-256$2147483647:AAAA${key}:{key}")).unwrap();
    }

    #[test]
    fn ct_eq_and_helpers() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
        assert_eq!(parse_iterations(b"4096", 5000), Some(4096));
        assert_eq!(parse_iterations(b"0004096", 5000), Some(4096));
        assert_eq!(parse_iterations(b"5001", 5000), None);
        assert_eq!(prepare_password("pencil"), b"pencil");
        assert_eq!(prepare_password("pässword"), "pässword".as_bytes());
    }

    /// Random, truncated and mutated input to every parser: errors are fine,
    /// panics are not.
    #[test]
    fn parsers_never_panic() {
        let secret = rfc_secret();
        let keys = derive_keys("pencil", &secret.salt, secret.iterations);
        let mut rng = StdRng::seed_from_u64(0x5c7a_3256);
        let alphabet = b"nypamrscvei=,+/0123456789AZaz\x00\xff\xc3 ";

        let fuzz_all = |data: &[u8]| {
            let _ = ScramServer::new(Arc::clone(&secret)).client_first(data);
            let mut server = ScramServer::with_nonce(Arc::clone(&secret), RFC_SERVER_NONCE);
            server.client_first(RFC_CLIENT_FIRST).unwrap();
            let _ = server.client_final(data);
            let _ = ScramClient::with_nonce(RFC_CLIENT_NONCE, "user").server_first(data);
            let mut client = ScramClient::with_nonce(RFC_CLIENT_NONCE, "user");
            client.server_first(RFC_SERVER_FIRST).unwrap();
            client.client_final(&keys);
            let _ = client.server_final(data);
            let _ = ScramClient::new().server_final(data);
            let _ = ScramSecret::parse(&String::from_utf8_lossy(data));
        };

        let seeds: [&[u8]; 6] = [
            RFC_CLIENT_FIRST,
            RFC_SERVER_FIRST,
            RFC_CLIENT_FINAL,
            RFC_SERVER_FINAL,
            PG_VERIFIER.as_bytes(),
            b"p=tls-server-end-point,,n=,r=abc",
        ];
        for seed in seeds {
            for cut in 0..=seed.len() {
                fuzz_all(&seed[..cut]);
                fuzz_all(&seed[cut..]);
            }
            for _ in 0..300 {
                let mut mutated = seed.to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..mutated.len());
                    match rng.random_range(0..3) {
                        0 => mutated[at] = alphabet[rng.random_range(0..alphabet.len())],
                        1 => {
                            mutated.remove(at);
                        }
                        _ => mutated.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                    }
                    if mutated.is_empty() {
                        break;
                    }
                }
                fuzz_all(&mutated);
            }
        }
        for _ in 0..1000 {
            let len = rng.random_range(0..1100);
            let data: Vec<u8> = if rng.random_bool(0.5) {
                (0..len).map(|_| rng.random()).collect()
            } else {
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            };
            fuzz_all(&data);
        }
    }
}
