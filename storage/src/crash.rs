//! Injected crashes for tests.
//!
//! The store calls [`CrashInjector::hit`] between every on-disk step of every operation. A
//! disarmed injector only counts the points; an injector armed at `n` fails the `n`-th point
//! (0-based) with [`StoreError::InjectedCrash`], and the operation returns at once leaving the
//! disk exactly as it is — the same state a `kill -9` at that moment would leave. Tests then
//! drop the store, reopen it (running recovery) and compare against a model.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::StoreError;

/// Counts crash points and fails the armed one.
#[derive(Debug, Default)]
pub struct CrashInjector {
    seen: AtomicU64,
    /// `u64::MAX` when disarmed.
    armed: AtomicU64,
}

impl CrashInjector {
    /// A disarmed injector.
    pub fn new() -> Self {
        CrashInjector {
            seen: AtomicU64::new(0),
            armed: AtomicU64::new(u64::MAX),
        }
    }

    /// Fails the `n`-th point from now on (counts restart at 0).
    pub fn arm(&self, n: u64) {
        self.seen.store(0, Ordering::SeqCst);
        self.armed.store(n, Ordering::SeqCst);
    }

    /// Stops failing and restarts the count.
    pub fn disarm(&self) {
        self.seen.store(0, Ordering::SeqCst);
        self.armed.store(u64::MAX, Ordering::SeqCst);
    }

    /// Points seen since the last arm/disarm.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// One crash point.
    pub fn hit(&self, label: &'static str) -> Result<(), StoreError> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n == self.armed.load(Ordering::SeqCst) {
            tracing::debug!(label, "injected crash");
            return Err(StoreError::InjectedCrash(label));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_armed_point_fails_once() {
        let c = CrashInjector::new();
        assert!(c.hit("a").is_ok());
        c.arm(1);
        assert!(c.hit("a").is_ok());
        assert!(matches!(c.hit("b"), Err(StoreError::InjectedCrash("b"))));
        assert!(c.hit("c").is_ok());
        c.disarm();
        assert!(c.hit("d").is_ok());
        assert_eq!(c.seen(), 1);
    }
}
