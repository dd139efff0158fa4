//! The first packet of a connection: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.
//!
//! Read with a hard 1 KiB bound before anything is allocated for it, since it arrives before
//! the client has proved anything.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, MAX_STARTUP_PACKET, SSL_REQUEST_CODE};

/// What the first packet asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// SSLRequest: answered `N` until TLS is configured.
    SslRequest,
    /// GSSENCRequest: answered `N`.
    GssEncRequest,
    /// CancelRequest for a (synthetic) backend key.
    Cancel {
        /// Process id from BackendKeyData.
        pid: u32,
        /// Secret key from BackendKeyData.
        secret: u32,
    },
    /// StartupMessage.
    Startup {
        /// The minor protocol version asked for (3.x).
        minor: u16,
        /// Parameters in the order sent.
        params: Vec<(String, String)>,
    },
    /// An HTTP request on the PostgreSQL port (load-balancer health probes).
    HttpProbe,
}

/// Why a first packet was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    /// The client left.
    #[error("connection closed during startup")]
    Closed,
    /// Longer than the bound.
    #[error("Startup packet too large: {0} bytes (max 1024 bytes)")]
    TooLarge(u32),
    /// Shorter than a header or otherwise unreadable.
    #[error("Invalid startup message: {0}")]
    Malformed(&'static str),
    /// A protocol major version we do not speak.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
}

/// Reads and classifies one startup packet.
pub async fn read_startup<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<StartupPacket, StartupError> {
    let mut header = [0u8; 8];
    read_exact(stream, &mut header[..4]).await?;
    if &header[..4] == b"GET " {
        return Ok(StartupPacket::HttpProbe);
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if len as usize > MAX_STARTUP_PACKET {
        return Err(StartupError::TooLarge(len));
    }
    if len < 8 {
        return Err(StartupError::Malformed(":bad_startup_payload"));
    }
    read_exact(stream, &mut header[4..8]).await?;
    let code = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let mut body = vec![0u8; len as usize - 8];
    read_exact(stream, &mut body).await?;
    match code {
        SSL_REQUEST_CODE if body.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if body.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE if body.len() == 8 => Ok(StartupPacket::Cancel {
            pid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            secret: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        }),
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            Err(StartupError::Malformed(":bad_startup_payload"))
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            Ok(StartupPacket::Startup {
                minor,
                params: parse_params(&body)?,
            })
        }
    }
}

async fn read_exact<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
) -> Result<(), StartupError> {
    stream
        .read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| StartupError::Closed)
}

/// Parses the `key\0value\0...\0` list of a StartupMessage.
pub fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let Some((&0, list)) = body.split_last() else {
        return Err(StartupError::Malformed(":bad_startup_payload"));
    };
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let Some((&0, list)) = list.split_last() else {
        return Err(StartupError::Malformed(":bad_startup_payload"));
    };
    let parts: Vec<&[u8]> = list.split(|&b| b == 0).collect();
    if !parts.len().is_multiple_of(2) {
        return Err(StartupError::Malformed(":bad_startup_payload"));
    }
    parts
        .chunks(2)
        .map(|kv| {
            let k =
                std::str::from_utf8(kv[0]).map_err(|_| StartupError::Malformed(":invalid_utf8"))?;
            let v =
                std::str::from_utf8(kv[1]).map_err(|_| StartupError::Malformed(":invalid_utf8"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Splits the `options` startup parameter the way PostgreSQL's `pg_split_opts` does
/// (whitespace separates, backslash escapes the next character) and returns its settings:
/// `-c key=value`, `-ckey=value` and `--key=value`. A value with no dashes at all, like
/// `reference=acme`, is read as `&`-separated `key=value` pairs (Supavisor accepts it).
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }

    let mut settings = Vec::new();
    let mut iter = words.into_iter().peekable();
    let mut saw_dash = false;
    let mut bare = Vec::new();
    while let Some(w) = iter.next() {
        let setting = if w == "-c" {
            saw_dash = true;
            iter.next()
        } else if let Some(rest) = w.strip_prefix("--") {
            saw_dash = true;
            Some(rest.to_string())
        } else if let Some(rest) = w.strip_prefix("-c") {
            saw_dash = true;
            Some(rest.to_string())
        } else {
            bare.push(w);
            None
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            settings.push((k.replace('-', "_"), v.to_string()));
        }
    }
    if !saw_dash {
        for w in bare {
            for pair in w.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    settings.push((k.to_string(), v.to_string()));
                }
            }
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut p = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    async fn read(bytes: Vec<u8>) -> Result<StartupPacket, StartupError> {
        read_startup(&mut std::io::Cursor::new(bytes)).await
    }

    #[tokio::test]
    async fn classifies_packets() {
        assert_eq!(
            read(packet(SSL_REQUEST_CODE, b"")).await,
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            read(packet(GSSENC_REQUEST_CODE, b"")).await,
            Ok(StartupPacket::GssEncRequest)
        );
        assert_eq!(
            read(packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 1, 0, 0, 0, 2])).await,
            Ok(StartupPacket::Cancel { pid: 1, secret: 2 })
        );
        assert_eq!(
            read(packet(0x0003_0002, b"user\0u.t\0database\0d\0\0")).await,
            Ok(StartupPacket::Startup {
                minor: 2,
                params: vec![
                    ("user".into(), "u.t".into()),
                    ("database".into(), "d".into())
                ]
            })
        );
        assert_eq!(
            read(b"GET / HTTP/1.1\r\n".to_vec()).await,
            Ok(StartupPacket::HttpProbe)
        );
    }

    #[tokio::test]
    async fn refuses_bad_packets_without_allocating_for_them() {
        assert_eq!(
            read(vec![0x7f, 0, 0, 0]).await,
            Err(StartupError::TooLarge(0x7f00_0000))
        );
        assert_eq!(
            read(vec![0, 0, 0, 4]).await,
            Err(StartupError::Malformed(":bad_startup_payload"))
        );
        assert_eq!(read(vec![0, 0]).await, Err(StartupError::Closed));
        assert!(matches!(
            read(packet(0x0002_0000, b"\0")).await,
            Err(StartupError::UnsupportedProtocol { major: 2, .. })
        ));
        assert!(read(packet(0x0003_0000, b"user\0u\0db\0")).await.is_err());
        assert!(read(packet(0x0003_0000, b"user\0u\0db")).await.is_err());
        assert!(read(packet(0x0003_0000, b"user\0\xff\0\0")).await.is_err());
    }

    #[test]
    fn options_forms() {
        let kv = |s: &str| parse_options(s);
        assert_eq!(
            kv("-c reference=acme"),
            vec![("reference".into(), "acme".into())]
        );
        assert_eq!(
            kv("--reference=acme"),
            vec![("reference".into(), "acme".into())]
        );
        assert_eq!(
            kv("-creference=acme"),
            vec![("reference".into(), "acme".into())]
        );
        assert_eq!(
            kv("reference=acme"),
            vec![("reference".into(), "acme".into())]
        );
        assert_eq!(
            kv("-c search_path=a,\\ b --reference=x -c work_mem=1GB"),
            vec![
                ("search_path".into(), "a, b".into()),
                ("reference".into(), "x".into()),
                ("work_mem".into(), "1GB".into())
            ]
        );
        assert!(kv("").is_empty());
        assert!(kv("-c").is_empty());
        assert!(kv("\\").is_empty());
    }
}
