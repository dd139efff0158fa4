//! Answering a batch that cannot get a server, without breaking the protocol.
//!
//! After login an error is an ERROR plus ReadyForQuery, as PostgreSQL would send for a failed
//! statement: the client's first batch (up to and including its first Query, Sync or
//! FunctionCall) is read and dropped, the error answers it, and the session goes on.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::errors::ClientError;
use crate::protocol::backend::{self, Severity};

/// Answers the batch that could not get a server. `false` when the session is over.
pub async fn answer_failed_checkout(
    stream: &mut TcpStream,
    cbuf: &mut BytesMut,
    error: ClientError,
) -> bool {
    match fail_first_batch(stream, cbuf, &error).await {
        Ok(keep_going) => keep_going,
        Err(fatal) => {
            let mut out = BytesMut::new();
            fatal.encode(&mut out, Severity::Fatal);
            let _ =
                crate::timer::timeout(std::time::Duration::from_secs(5), stream.write_all(&out))
                    .await;
            false
        }
    }
}

/// Drops the first batch from `cbuf` (reading more from the client as needed, never buffering
/// a large message) and answers it with `error`. `Ok(false)` means the client left or sent
/// Terminate; `Err` is a protocol violation to report as FATAL.
pub async fn fail_first_batch(
    stream: &mut TcpStream,
    cbuf: &mut BytesMut,
    error: &ClientError,
) -> Result<bool, ClientError> {
    loop {
        while cbuf.len() >= 5 {
            let tag = cbuf[0];
            let len = u32::from_be_bytes([cbuf[1], cbuf[2], cbuf[3], cbuf[4]]) as usize;
            if len < 4 {
                return Err(ClientError::ProtocolViolation(format!(
                    "invalid message length {len}"
                )));
            }
            match tag {
                b'X' => return Ok(false),
                b'Q' | b'S' | b'F' | b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'd' | b'c'
                | b'f' => {}
                other => {
                    return Err(ClientError::ProtocolViolation(format!(
                        "unexpected message type {:?}",
                        other as char
                    )));
                }
            }
            skip(stream, cbuf, 1 + len).await?;
            if matches!(tag, b'Q' | b'S' | b'F') {
                let mut out = BytesMut::new();
                error.encode(&mut out, Severity::Error);
                backend::ready_for_query(&mut out, b'I');
                stream
                    .write_all(&out)
                    .await
                    .map_err(|_| ClientError::AuthProtocol)?;
                return Ok(true);
            }
        }
        cbuf.reserve(1024);
        if stream.read_buf(cbuf).await.unwrap_or(0) == 0 {
            return Ok(false);
        }
    }
}

/// Drops `n` bytes: those in `cbuf` first, then straight from the socket.
async fn skip(stream: &mut TcpStream, cbuf: &mut BytesMut, n: usize) -> Result<(), ClientError> {
    let from_buf = n.min(cbuf.len());
    cbuf.advance(from_buf);
    let mut left = n - from_buf;
    let mut scratch = [0u8; 4096];
    while left > 0 {
        let want = left.min(scratch.len());
        match stream.read(&mut scratch[..want]).await {
            Ok(0) | Err(_) => {
                return Err(ClientError::ProtocolViolation(
                    "client left mid-message".into(),
                ));
            }
            Ok(got) => left -= got,
        }
    }
    Ok(())
}
