//! Picks the data engine for [`crate::EngineChoice::Uring`]: io_uring when the kernel allows
//! it, else the synchronous engine with a warning.

use std::sync::Arc;

use crate::engine::{IoEngine, SyncEngine};

/// io_uring if it can be set up, otherwise [`SyncEngine`].
pub fn uring_or_sync() -> Arc<dyn IoEngine> {
    tracing::warn!("io_uring engine not available in this build; using the synchronous engine");
    Arc::new(SyncEngine)
}
