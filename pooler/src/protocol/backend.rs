//! Messages the pooler writes to clients itself (everything else is forwarded bytes).

use bytes::{BufMut, BytesMut};

/// AuthenticationOk.
pub const AUTH_OK: i32 = 0;
/// AuthenticationCleartextPassword.
pub const AUTH_CLEARTEXT: i32 = 3;
/// AuthenticationMD5Password.
pub const AUTH_MD5: i32 = 5;
/// AuthenticationSASL.
pub const AUTH_SASL: i32 = 10;
/// AuthenticationSASLContinue.
pub const AUTH_SASL_CONTINUE: i32 = 11;
/// AuthenticationSASLFinal.
pub const AUTH_SASL_FINAL: i32 = 12;

/// Severity of an ErrorResponse: FATAL closes the connection, ERROR does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Writes a message header whose length is patched by [`finish`].
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    at
}

fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the string early on the other side; drop it rather than corrupt framing.
    buf.extend(s.bytes().filter(|&b| b != 0));
    buf.put_u8(0);
}

/// An Authentication* request with optional data.
pub fn authentication(buf: &mut BytesMut, code: i32, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(code);
    buf.put_slice(data);
    finish(buf, at);
}

/// AuthenticationSASL offering the given mechanisms.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let at = begin(buf, b'R');
    buf.put_i32(AUTH_SASL);
    for m in mechanisms {
        put_cstr(buf, m);
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, b'S');
    put_cstr(buf, name);
    put_cstr(buf, value);
    finish(buf, at);
}

/// BackendKeyData (protocol 3.0: 4-byte secret).
pub fn backend_key_data(buf: &mut BytesMut, pid: u32, secret: u32) {
    let at = begin(buf, b'K');
    buf.put_u32(pid);
    buf.put_u32(secret);
    finish(buf, at);
}

/// ReadyForQuery with a transaction status (`I`, `T` or `E`).
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    finish(buf, at);
}

/// NegotiateProtocolVersion: the newest minor version we speak and the options we ignored.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: u32, unsupported: &[String]) {
    let at = begin(buf, b'v');
    buf.put_u32(minor);
    buf.put_u32(unsupported.len() as u32);
    for option in unsupported {
        put_cstr(buf, option);
    }
    finish(buf, at);
}

/// ErrorResponse with severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: Severity, sqlstate: &str, message: &str) {
    let at = begin(buf, b'E');
    for (field, value) in [
        (b'S', severity.as_str()),
        (b'V', severity.as_str()),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        buf.put_u8(field);
        put_cstr(buf, value);
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// A raw message with a tag and body, e.g. an upstream ErrorResponse forwarded verbatim.
pub fn raw(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    let at = begin(buf, tag);
    buf.put_slice(body);
    finish(buf, at);
}

/// Reads the fields of an ErrorResponse or NoticeResponse body.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some(end) = tail.iter().position(|&b| b == 0) else {
            break;
        };
        fields.push((code, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = &tail[end + 1..];
    }
    fields
}

/// One field of an ErrorResponse body (`b'C'` for SQLSTATE, `b'M'` for the message).
pub fn error_field(body: &[u8], code: u8) -> Option<String> {
    error_fields(body)
        .into_iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips_through_the_field_parser() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, Severity::Fatal, "28P01", "bad \0password");
        assert_eq!(buf[0], b'E');
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert_eq!(len + 1, buf.len());
        assert_eq!(error_field(&buf[5..], b'C').as_deref(), Some("28P01"));
        assert_eq!(error_field(&buf[5..], b'S').as_deref(), Some("FATAL"));
        assert_eq!(
            error_field(&buf[5..], b'M').as_deref(),
            Some("bad password")
        );
    }

    #[test]
    fn field_parser_tolerates_garbage() {
        assert!(error_fields(b"").is_empty());
        assert!(error_fields(b"Cxx").is_empty());
        assert_eq!(error_fields(b"C1\0M").len(), 1);
    }

    #[test]
    fn fixed_messages_have_the_right_bytes() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, b'I');
        backend_key_data(&mut buf, 7, 9);
        assert_eq!(
            &buf[..],
            &[
                b'Z', 0, 0, 0, 5, b'I', b'K', 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 9
            ]
        );
    }
}
