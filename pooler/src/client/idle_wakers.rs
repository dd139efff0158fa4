//! Wakes idle transaction-mode clients when the pooler starts draining.
//!
//! Between transactions a client waits for its socket alone. What wakes it for a drain is its
//! task's waker, filed here once per connection. Waiting on the drain token as well would file
//! and unfile a waiter under the token's lock on every transaction, on every worker.

use std::task::Waker;

use parking_lot::Mutex;

/// The wakers of connected transaction-mode clients.
#[derive(Default)]
pub struct IdleWakers {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl IdleWakers {
    /// Files `waker` until the returned guard drops.
    pub fn register(&self, waker: Waker) -> IdleWaker<'_> {
        let mut slots = self.slots.lock();
        let slot = match slots.free.pop() {
            Some(slot) => {
                slots.wakers[slot] = Some(waker.clone());
                slot
            }
            None => {
                slots.wakers.push(Some(waker.clone()));
                slots.wakers.len() - 1
            }
        };
        IdleWaker {
            owner: self,
            slot,
            waker,
        }
    }

    /// Wakes every filed client. Each then sees the drain flag on its next poll.
    pub fn wake_all(&self) {
        let wakers: Vec<Waker> = self.slots.lock().wakers.iter().flatten().cloned().collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Clients filed now (for the tests: nothing else needs the count).
    #[cfg(test)]
    fn len(&self) -> usize {
        let slots = self.slots.lock();
        slots.wakers.len() - slots.free.len()
    }
}

/// One client's filing; removed on drop.
pub struct IdleWaker<'a> {
    owner: &'a IdleWakers,
    slot: usize,
    waker: Waker,
}

impl IdleWaker<'_> {
    /// Keeps the filed waker current. A task's waker does not change between polls, so this
    /// is a pointer comparison and takes the lock only if the waiting future moved to
    /// another task.
    pub fn refresh(&mut self, current: &Waker) {
        if !self.waker.will_wake(current) {
            self.waker = current.clone();
            self.owner.slots.lock().wakers[self.slot] = Some(current.clone());
        }
    }
}

impl Drop for IdleWaker<'_> {
    fn drop(&mut self) {
        let mut slots = self.owner.slots.lock();
        slots.wakers[self.slot] = None;
        slots.free.push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn wakes_filed_clients_and_forgets_dropped_ones() {
        let wakers = IdleWakers::default();
        let (a, wa) = counter();
        let (b, wb) = counter();
        let ga = wakers.register(wa.clone());
        let gb = wakers.register(wb);
        assert_eq!(wakers.len(), 2);
        drop(gb);
        assert_eq!(wakers.len(), 1);
        wakers.wake_all();
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            b.0.load(Ordering::SeqCst),
            0,
            "a dropped filing is not woken"
        );

        // A freed slot is reused, and a refreshed waker replaces the old one.
        let (c, wc) = counter();
        let mut gc = wakers.register(wa.clone());
        gc.refresh(&wc);
        wakers.wake_all();
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert_eq!(a.0.load(Ordering::SeqCst), 2, "ga is still filed");
        drop((ga, gc));
        assert_eq!(wakers.len(), 0);
    }
}
