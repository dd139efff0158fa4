//! Messages the pooler writes to servers itself: startup, passwords, reset queries.

use bytes::{BufMut, BytesMut};

use super::PROTOCOL_3_0;

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.extend(s.bytes().filter(|&b| b != 0));
    buf.put_u8(0);
}

/// A StartupMessage (3.0) with the given parameters.
pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_u32(0);
    buf.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(buf, k);
        put_cstr(buf, v);
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A CancelRequest for a server process.
pub fn cancel_request(buf: &mut BytesMut, pid: u32, secret: u32) {
    buf.put_u32(16);
    buf.put_u32(super::CANCEL_REQUEST_CODE);
    buf.put_u32(pid);
    buf.put_u32(secret);
}

fn tagged(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// PasswordMessage (cleartext or MD5 response).
pub fn password_message(buf: &mut BytesMut, password: &str) {
    tagged(buf, b'p', |b| put_cstr(b, password));
}

/// SASLInitialResponse.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    tagged(buf, b'p', |b| {
        put_cstr(b, mechanism);
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// SASLResponse.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'p', |b| b.put_slice(data));
}

/// A simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    tagged(buf, b'Q', |b| put_cstr(b, sql));
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    tagged(buf, b'X', |_| {});
}

/// Parse + Bind + Execute + Sync of a one-parameter text statement (unnamed), used by the auth
/// query so the role name is sent as a parameter, never spliced into SQL.
pub fn extended_query_one_param(buf: &mut BytesMut, sql: &str, param: &str) {
    tagged(buf, b'P', |b| {
        b.put_u8(0);
        put_cstr(b, sql);
        b.put_i16(0);
    });
    tagged(buf, b'B', |b| {
        b.put_u8(0);
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(1);
        b.put_i32(param.len() as i32);
        b.put_slice(param.as_bytes());
        b.put_i16(0);
    });
    tagged(buf, b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
    tagged(buf, b'S', |_| {});
}
