//! Picks the data engine for [`crate::EngineChoice::Uring`]: io_uring when the kernel allows
//! it (ring setup and a probe for READ/WRITE/FSYNC succeed), else the synchronous engine with
//! a warning, so a store always opens.

use std::sync::Arc;

use crate::engine::uring::UringEngine;
use crate::engine::{IoEngine, SyncEngine};

/// io_uring if it can be set up, otherwise [`SyncEngine`].
pub fn uring_or_sync() -> Arc<dyn IoEngine> {
    match UringEngine::default_depth() {
        Ok(e) => Arc::new(e),
        Err(e) => {
            tracing::warn!(error = %e, "io_uring unavailable; using the synchronous engine");
            Arc::new(SyncEngine)
        }
    }
}
