//! Image and credential requests: the control socket's bridge to [`crate::images`] and
//! [`crate::access`].

use crate::server::Shared;

use super::{ControlError, ProgressLine, Request};

/// Why an administrative request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The subsystem is not part of this build.
    #[error("{0} is not available in this envoyd build: upgrade envoyd")]
    Unavailable(&'static str),
}

/// Runs an image or credential request.
pub fn execute(
    _shared: &Shared,
    req: Request,
    _progress: &dyn Fn(ProgressLine),
) -> Result<serde_json::Value, ControlError> {
    let what = match req {
        Request::Grants
        | Request::Grant { .. }
        | Request::Revoke { .. }
        | Request::Bind { .. }
        | Request::Unbind { .. } => "credential management",
        _ => "image management",
    };
    Err(AdminError::Unavailable(what).into())
}
