//! io_uring backend (stub while being written).
use std::sync::mpsc::Sender;

use super::{IoConfig, IoError, WorkerParts};
use crate::{Outcome, Transport};

pub(super) fn probe(_config: &IoConfig) -> Result<(), IoError> {
    Err(IoError::IoUringUnavailable {
        what: "not yet",
        source: std::io::Error::other("stub"),
    })
}

pub(super) fn run<S, H>(
    parts: WorkerParts<S, H>,
    ready: Sender<Result<(), IoError>>,
) -> Result<(), IoError>
where
    S: Send + Sync + 'static,
    H: Fn(&S, &[u8], &mut [u8], Transport) -> Outcome + Clone + Send + 'static,
{
    super::portable::run(parts, ready)
}
