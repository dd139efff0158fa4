//! Frame walking for the relay: find message boundaries in a buffer without copying.
//!
//! Bytes are forwarded as they arrive, even mid-message; the walker only looks at the
//! 5-byte headers (and the status byte of ReadyForQuery) to know where transactions end.
//! Everything before `scanned` has been looked at and may be written out.

/// A frame header that cannot be right.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    /// Length field below 4.
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength {
        /// The message type.
        tag: char,
        /// The length field.
        len: u32,
    },
    /// A message type the peer may not send in this state.
    #[error("unexpected message type {0:?}")]
    UnexpectedTag(char),
}

/// What the per-frame callback decided.
pub enum Flow {
    /// Consume the frame and go on.
    Continue,
    /// Not enough bytes to decide yet: wait for more.
    NeedMore,
    /// Stop before this frame; it is not consumed (used for Terminate).
    Stop,
}

/// Tracks frame boundaries across reads.
#[derive(Debug, Default)]
pub struct Walker {
    /// Bytes of the buffer already walked; they may be forwarded.
    pub scanned: usize,
    /// Body bytes of the current frame not yet in the buffer.
    remaining: usize,
}

impl Walker {
    /// True when the walker stands between two frames with nothing pending.
    pub fn at_boundary(&self, buf_len: usize) -> bool {
        self.remaining == 0 && self.scanned == buf_len
    }

    /// True when no frame is partly walked (a new frame starts at `scanned`).
    pub fn between_frames(&self) -> bool {
        self.remaining == 0
    }

    /// Forgets `n` forwarded bytes at the front of the buffer.
    pub fn consumed(&mut self, n: usize) {
        self.scanned -= n;
    }

    /// Walks `buf` from `scanned`, calling `on_frame(tag, bytes_from_frame_start)` at each new
    /// frame. Returns `Some(offset)` of the frame the callback stopped at.
    pub fn walk(
        &mut self,
        buf: &[u8],
        mut on_frame: impl FnMut(u8, &[u8]) -> Result<Flow, ScanError>,
    ) -> Result<Option<usize>, ScanError> {
        while self.scanned < buf.len() {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - self.scanned);
                self.scanned += take;
                self.remaining -= take;
                continue;
            }
            let rest = &buf[self.scanned..];
            if rest.len() < 5 {
                break;
            }
            let tag = rest[0];
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
            if len < 4 {
                return Err(ScanError::BadLength {
                    tag: tag as char,
                    len,
                });
            }
            match on_frame(tag, rest)? {
                Flow::Continue => {
                    self.scanned += 5;
                    self.remaining = len as usize - 4;
                }
                Flow::NeedMore => break,
                Flow::Stop => return Ok(Some(self.scanned)),
            }
        }
        Ok(None)
    }
}

/// What a client's forwarded bytes mean for the transaction in progress.
#[derive(Debug, Default)]
pub struct FrontendState {
    /// ReadyForQuery messages the server owes for what was forwarded (Query, Sync, FunctionCall).
    pub expected_ready: usize,
    /// Extended-protocol messages were forwarded after the last Sync: the server is mid-batch.
    pub unsynced: bool,
    /// The client sent Terminate.
    pub terminated: bool,
    /// Syncs since the last Execute or Query: if that Execute started a COPY FROM STDIN, the
    /// server ignores them (Sync in copy-in mode does nothing) and owes no ReadyForQuery.
    syncs_since_execute: usize,
}

impl FrontendState {
    /// Walks client bytes, counting what the server will answer. Stops at Terminate, which is
    /// never forwarded: the pooler decides what the server connection does next. `backend`
    /// says whether the server has entered COPY FROM STDIN.
    pub fn walk(
        &mut self,
        walker: &mut Walker,
        buf: &[u8],
        backend: &mut BackendState,
    ) -> Result<Option<usize>, ScanError> {
        walker.walk(buf, |tag, _| {
            match tag {
                b'Q' | b'F' => {
                    self.expected_ready += 1;
                    self.unsynced = false;
                    self.syncs_since_execute = 0;
                }
                b'S' => {
                    self.expected_ready += 1;
                    self.unsynced = false;
                    self.syncs_since_execute += 1;
                }
                b'E' => {
                    self.unsynced = true;
                    self.syncs_since_execute = 0;
                }
                b'P' | b'B' | b'D' | b'C' | b'H' => self.unsynced = true,
                b'c' | b'f' => {
                    // CopyDone/CopyFail end copy-in mode; Syncs sent during it were ignored.
                    if std::mem::take(&mut backend.copy_in) {
                        self.expected_ready -= self.syncs_since_execute.min(self.expected_ready);
                    }
                    self.syncs_since_execute = 0;
                }
                b'd' => {}
                b'X' => {
                    self.terminated = true;
                    return Ok(Flow::Stop);
                }
                other => return Err(ScanError::UnexpectedTag(other as char)),
            }
            Ok(Flow::Continue)
        })
    }
}

/// What a server's bytes say about the transaction in progress.
#[derive(Debug)]
pub struct BackendState {
    /// ReadyForQuery messages seen since the last reset.
    pub ready_seen: usize,
    /// Status byte of the last ReadyForQuery: `I` idle, `T` in transaction, `E` failed transaction.
    pub status: u8,
    /// The server sent CopyInResponse and the client has not yet ended the copy.
    pub copy_in: bool,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState {
            ready_seen: 0,
            status: b'I',
            copy_in: false,
        }
    }
}

impl BackendState {
    /// Walks server bytes, noting each ReadyForQuery.
    pub fn walk(&mut self, walker: &mut Walker, buf: &[u8]) -> Result<Option<usize>, ScanError> {
        walker.walk(buf, |tag, frame| {
            match tag {
                b'Z' => {
                    if frame.len() < 6 {
                        return Ok(Flow::NeedMore);
                    }
                    self.ready_seen += 1;
                    self.status = frame[5];
                }
                b'G' => self.copy_in = true,
                _ => {}
            }
            Ok(Flow::Continue)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn counts_pipelined_batches_fed_one_byte_at_a_time() {
        let mut stream = Vec::new();
        for _ in 0..50 {
            stream.extend(msg(b'Q', b"select 1\0"));
        }
        stream.extend(msg(b'P', b"\0select 1\0\0\0"));
        stream.extend(msg(b'S', b""));
        let mut buf = Vec::new();
        let (mut walker, mut state) = (Walker::default(), FrontendState::default());
        for byte in &stream {
            buf.push(*byte);
            state
                .walk(&mut walker, &buf, &mut BackendState::default())
                .expect("valid");
        }
        assert_eq!(state.expected_ready, 51);
        assert!(!state.unsynced);
        assert!(walker.at_boundary(buf.len()));
    }

    #[test]
    fn unsynced_extended_messages_hold_the_server() {
        let mut buf = msg(b'P', b"\0q\0\0\0");
        buf.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        buf.extend(msg(b'E', b"\0\0\0\0\0"));
        buf.extend(msg(b'H', b""));
        let (mut walker, mut state) = (Walker::default(), FrontendState::default());
        state
            .walk(&mut walker, &buf, &mut BackendState::default())
            .expect("valid");
        assert!(state.unsynced);
        assert_eq!(state.expected_ready, 0);
    }

    #[test]
    fn terminate_stops_before_the_frame() {
        let mut buf = msg(b'Q', b"x\0");
        let at = buf.len();
        buf.extend(msg(b'X', b""));
        let (mut walker, mut state) = (Walker::default(), FrontendState::default());
        assert_eq!(
            state.walk(&mut walker, &buf, &mut BackendState::default()),
            Ok(Some(at))
        );
        assert!(state.terminated);
    }

    #[test]
    fn bad_frames_are_errors() {
        let (mut walker, mut state) = (Walker::default(), FrontendState::default());
        assert!(matches!(
            state.walk(
                &mut walker,
                &[b'Q', 0, 0, 0, 1],
                &mut BackendState::default()
            ),
            Err(ScanError::BadLength { .. })
        ));
        let mut walker = Walker::default();
        assert_eq!(
            state.walk(
                &mut walker,
                &msg(b'p', b"pw\0"),
                &mut BackendState::default()
            ),
            Err(ScanError::UnexpectedTag('p'))
        );
    }

    #[test]
    fn syncs_sent_during_extended_copy_in_are_not_owed_a_ready_for_query() {
        // tokio-postgres: Bind/Execute/Sync, then (after CopyInResponse) data, CopyDone, Sync.
        let (mut walker, mut front, mut back) = (
            Walker::default(),
            FrontendState::default(),
            BackendState::default(),
        );
        let mut buf = msg(b'B', b"\0\0\0\0\0\0\0\0");
        buf.extend(msg(b'E', b"\0\0\0\0\0"));
        buf.extend(msg(b'S', b""));
        front.walk(&mut walker, &buf, &mut back).expect("valid");
        let mut bwalk = Walker::default();
        back.walk(&mut bwalk, &msg(b'G', b"\0\0\0")).expect("valid");
        assert!(back.copy_in);
        buf.extend(msg(b'd', b"1\n"));
        buf.extend(msg(b'c', b""));
        buf.extend(msg(b'S', b""));
        front.walk(&mut walker, &buf, &mut back).expect("valid");
        assert_eq!(
            front.expected_ready, 1,
            "only the Sync after CopyDone is answered"
        );
        assert!(!back.copy_in);

        // Simple-protocol COPY: the Query is owed its ReadyForQuery as usual.
        let (mut walker, mut front, mut back) = (
            Walker::default(),
            FrontendState::default(),
            BackendState::default(),
        );
        let mut buf = msg(b'Q', b"copy t from stdin\0");
        front.walk(&mut walker, &buf, &mut back).expect("valid");
        back.copy_in = true;
        buf.extend(msg(b'd', b"1\n"));
        buf.extend(msg(b'c', b""));
        front.walk(&mut walker, &buf, &mut back).expect("valid");
        assert_eq!(front.expected_ready, 1);
    }

    #[test]
    fn ready_for_query_status_needs_its_byte() {
        let z = msg(b'Z', b"T");
        let (mut walker, mut state) = (Walker::default(), BackendState::default());
        state.walk(&mut walker, &z[..5]).expect("valid");
        assert_eq!(state.ready_seen, 0);
        assert_eq!(walker.scanned, 0);
        state.walk(&mut walker, &z).expect("valid");
        assert_eq!((state.ready_seen, state.status), (1, b'T'));
        assert!(walker.at_boundary(z.len()));
    }

    #[test]
    fn large_bodies_stream_through() {
        let mut big = msg(b'D', &vec![7u8; 100_000]);
        big.extend(msg(b'Z', b"I"));
        let (mut walker, mut state) = (Walker::default(), BackendState::default());
        state.walk(&mut walker, &big[..50_000]).expect("valid");
        assert_eq!(walker.scanned, 50_000);
        state.walk(&mut walker, &big).expect("valid");
        assert_eq!(state.ready_seen, 1);
    }
}
