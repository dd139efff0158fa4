//! PostgreSQL's legacy MD5 password authentication.
//!
//! Still needed because many existing clusters store `md5...` secrets and
//! some upstreams only offer AuthenticationMD5Password. The scheme is weak
//! (a stored hash is password-equivalent), which is why the pooler prefers
//! SCRAM; these helpers exist only for compatibility.

use md5::{Digest, Md5};

/// Length of a stored MD5 secret: "md5" + 32 hex digits
/// (PostgreSQL's `MD5_PASSWD_LEN`).
const MD5_SECRET_LEN: usize = 35;

/// `"md5" + hex(md5(hex(md5(password + user)) + salt))` — what a client
/// sends for AuthenticationMD5Password.
///
/// The pooler needs it to log in to upstreams that ask for MD5. The inner
/// hash is exactly the pg_authid secret, so a server checks the response
/// against a stored secret without the password.
pub fn md5_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let mut inner = Md5::new();
    inner.update(password.as_bytes());
    inner.update(user.as_bytes());
    let inner_hex = hex_lower(&inner.finalize());

    let mut outer = Md5::new();
    outer.update(inner_hex.as_bytes());
    outer.update(salt);
    format!("md5{}", hex_lower(&outer.finalize()))
}

/// True when a pg_authid secret is an MD5 hash ("md5" + 32 lowercase hex),
/// with exactly PostgreSQL's test (`get_password_type`): anything else is
/// a SCRAM verifier or a plaintext password and must not be treated as MD5.
pub fn is_md5_secret(secret: &str) -> bool {
    let bytes = secret.as_bytes();
    bytes.len() == MD5_SECRET_LEN
        && bytes.starts_with(b"md5")
        && bytes
            .iter()
            .skip(3)
            .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex, as PostgreSQL prints MD5 digests.
fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // python3: "md5" + md5(md5(b"postgres-secretpostgres").hexdigest().encode() + bytes([1,2,3,4])).hexdigest()
        assert_eq!(
            md5_response("postgres", "postgres-secret", [1, 2, 3, 4]),
            "md5b94a2abada119d59c62416c048f28c4c"
        );
    }

    #[test]
    fn response_matches_postgres_stored_secret() {
        // Stored by PostgreSQL 15 for `CREATE ROLE postgres2 PASSWORD 'x'`
        // with password_encryption = md5.
        let secret = "md52a6cbddbf747548186c60739cd10a39b";
        assert!(is_md5_secret(secret));
        let salt = [0xde, 0xad, 0xbe, 0xef];
        // What a server computes from the stored secret alone.
        let mut outer = Md5::new();
        outer.update(&secret.as_bytes()[3..]);
        outer.update(salt);
        let expected = format!("md5{}", hex_lower(&outer.finalize()));
        assert_eq!(md5_response("postgres2", "x", salt), expected);
        assert_ne!(md5_response("postgres2", "y", salt), expected);
        assert_ne!(md5_response("postgres2", "x", [0, 0, 0, 0]), expected);
    }

    #[test]
    fn md5_secret_detection() {
        assert!(is_md5_secret("md54169ad22ff791f8df6e380f2b1035aed"));
        assert!(!is_md5_secret("md54169AD22FF791F8DF6E380F2B1035AED"));
        assert!(!is_md5_secret("md54169ad22ff791f8df6e380f2b1035ae"));
        assert!(!is_md5_secret("md54169ad22ff791f8df6e380f2b1035aed0"));
        assert!(!is_md5_secret("md54169ad22ff791f8df6e380f2b1035aeg"));
        assert!(!is_md5_secret("xx54169ad22ff791f8df6e380f2b1035aed"));
        assert!(!is_md5_secret("md5é169ad22ff791f8df6e380f2b1035ae"));
        assert!(!is_md5_secret("md5"));
        assert!(!is_md5_secret(""));
        assert!(!is_md5_secret("SCRAM-SHA-256$4096:AAAA$AAAA:AAAA"));
        assert!(!is_md5_secret("plaintext-password"));
    }
}
