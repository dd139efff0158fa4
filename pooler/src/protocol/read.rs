//! Reading one whole message, bounded, for the login phases.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The length field is below 4 or above the bound.
    #[error("invalid message length {len} (limit {limit})")]
    BadLength {
        /// The length the peer announced.
        len: u32,
        /// The bound in force.
        limit: usize,
    },
}

/// One tagged message: its type byte and body (without the length).
#[derive(Debug, Clone)]
pub struct Message {
    /// The message type byte.
    pub tag: u8,
    /// The message body.
    pub body: Bytes,
}

/// Reads one tagged message of at most `limit` bytes, using `buf` as the read buffer.
///
/// Bytes after the message stay in `buf`, so a pipelining peer loses nothing.
pub async fn read_message<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Message, ReadError> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            if len < 4 || len as usize > limit {
                return Err(ReadError::BadLength { len, limit });
            }
            let total = 1 + len as usize;
            if buf.len() >= total {
                let tag = buf[0];
                let mut frame = buf.split_to(total);
                frame.advance(5);
                return Ok(Message {
                    tag,
                    body: frame.freeze(),
                });
            }
            buf.reserve(total - buf.len());
        } else {
            buf.reserve(512);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// Reads a NUL-terminated string from the front of `body`.
pub fn get_cstr(body: &mut Bytes) -> Option<String> {
    let end = body.iter().position(|&b| b == 0)?;
    let s = String::from_utf8(body.split_to(end).to_vec()).ok();
    body.advance(1);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_messages_split_across_reads_and_keeps_the_rest() {
        let data: &[u8] = &[b'Z', 0, 0, 0, 5, b'I', b'Z', 0, 0, 0, 5, b'T'];
        let mut reader = tokio_test_reader(data);
        let mut buf = BytesMut::new();
        let m = read_message(&mut reader, &mut buf, 100)
            .await
            .expect("message");
        assert_eq!((m.tag, &m.body[..]), (b'Z', &b"I"[..]));
        let m = read_message(&mut reader, &mut buf, 100)
            .await
            .expect("message");
        assert_eq!(&m.body[..], b"T");
        assert!(matches!(
            read_message(&mut reader, &mut buf, 100).await,
            Err(ReadError::Closed)
        ));
    }

    #[tokio::test]
    async fn refuses_oversized_and_undersized_lengths_before_allocating() {
        let mut reader = tokio_test_reader(&[b'Q', 0x7f, 0xff, 0xff, 0xff]);
        let mut buf = BytesMut::new();
        assert!(matches!(
            read_message(&mut reader, &mut buf, 1024).await,
            Err(ReadError::BadLength { .. })
        ));
        assert!(buf.capacity() < 4096);
        let mut reader = tokio_test_reader(&[b'Q', 0, 0, 0, 3]);
        let mut buf = BytesMut::new();
        assert!(matches!(
            read_message(&mut reader, &mut buf, 1024).await,
            Err(ReadError::BadLength { len: 3, .. })
        ));
    }

    fn tokio_test_reader(data: &[u8]) -> std::io::Cursor<Vec<u8>> {
        std::io::Cursor::new(data.to_vec())
    }

    #[test]
    fn cstr_parsing() {
        let mut b = Bytes::from_static(b"user\0app\0");
        assert_eq!(get_cstr(&mut b).as_deref(), Some("user"));
        assert_eq!(get_cstr(&mut b).as_deref(), Some("app"));
        assert_eq!(get_cstr(&mut b), None);
    }
}
