//! Per-thread reuse of client read buffers.
//!
//! An idle client holds no buffer: what thousands of idle clients cost is what they hold while
//! idle. A request needs one only for the length of its transaction, so each transaction used to
//! allocate 16 KiB and free it again. Returned buffers now wait on a small per-thread stack for
//! the next request on the same worker: no allocator call, and memory that is still in cache.

use std::cell::RefCell;

use bytes::BytesMut;

use super::relay::READ_CHUNK;

/// Buffers a thread keeps (at most `SPARE * 64 KiB` per worker, usually `SPARE * 16 KiB`).
const SPARE: usize = 16;
/// Larger buffers (grown by a big request) go back to the allocator.
const MAX_KEPT: usize = 4 * READ_CHUNK;

thread_local! {
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least one read.
pub fn take() -> BytesMut {
    let mut buf = SPARES
        .with(|spares| spares.borrow_mut().pop())
        .unwrap_or_default();
    buf.reserve(READ_CHUNK);
    buf
}

/// Gives `buf` back for the next request on this thread (or to the allocator when the stack is
/// full or the buffer grew large). Its contents are discarded.
pub fn give(mut buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > MAX_KEPT {
        return;
    }
    buf.clear();
    SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < SPARE {
            spares.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_big_ones_are_not_kept() {
        let mut buf = take();
        assert!(buf.capacity() >= READ_CHUNK);
        buf.extend_from_slice(b"secret of the last client");
        let ptr = buf.as_ptr();
        give(buf);
        let again = take();
        assert!(again.is_empty(), "a reused buffer starts empty");
        assert_eq!(again.as_ptr(), ptr, "the same allocation is reused");
        let mut big = BytesMut::with_capacity(MAX_KEPT * 2);
        big.extend_from_slice(b"x");
        give(big);
        assert_ne!(take().capacity(), MAX_KEPT * 2);
    }
}
