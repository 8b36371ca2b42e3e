//! Data I/O engines for object files.
//!
//! Every byte of object data the store reads or writes goes through an [`IoEngine`]. Metadata
//! operations (open, rename, unlink, mkdir, readdir) are ordinary syscalls made by the store;
//! only data moves through the engine, because that is where batching pays.
//!
//! # Buffer ownership
//!
//! The engine owns every buffer from the moment an operation is handed to [`IoEngine::run`]
//! until its completion has been reaped, and `run` does not return before every operation it
//! submitted has completed — even when submission fails half-way or an operation errors. So no
//! buffer is ever freed, moved or reused while the kernel may still touch it, and no `unsafe`
//! leaks out of this module:
//!
//! * a [`IoOp::Read`] names a length; the engine allocates the destination, the kernel fills it,
//!   and the caller receives it frozen as [`Bytes`] (shorter than asked only at end of file);
//! * a [`IoOp::Write`] carries its payload as [`Bytes`]; the engine keeps that handle (and so the
//!   memory) alive until the write has completed, then drops it;
//! * each operation holds an `Arc<File>`, so the descriptor stays open until the operation
//!   completes even if the store's descriptor cache evicts it meanwhile (no fd-reuse races).
//!
//! Operations in one batch are independent: they may run in any order and concurrently, so a
//! caller must not put a read and a write of the same bytes in one batch and expect an order.
//! Results come back in the order the operations were given.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

pub mod uring;

/// One data operation on an open object file.
#[derive(Debug, Clone)]
pub enum IoOp {
    /// Read up to `len` bytes at `offset`; fewer only at end of file.
    Read {
        /// The object file.
        file: Arc<File>,
        /// Byte offset in the file.
        offset: u64,
        /// Bytes wanted.
        len: usize,
    },
    /// Write all of `data` at `offset`.
    Write {
        /// The object file.
        file: Arc<File>,
        /// Byte offset in the file.
        offset: u64,
        /// Payload; kept alive by the engine until the write completes.
        data: Bytes,
    },
    /// Flush the file to stable storage (`fdatasync` when `datasync`, else `fsync`).
    Fsync {
        /// The object file.
        file: Arc<File>,
        /// Only data and the metadata needed to read it back.
        datasync: bool,
    },
}

/// What a completed [`IoOp`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOutcome {
    /// The bytes read (short only at end of file).
    Read(Bytes),
    /// Bytes written (always the whole payload on success).
    Write(usize),
    /// The flush completed.
    Fsync,
}

impl IoOutcome {
    /// What kind of operation produced this (`"read"`, `"write"`, `"fsync"`), for messages
    /// that must not dump a payload.
    pub fn kind(&self) -> &'static str {
        match self {
            IoOutcome::Read(_) => "read",
            IoOutcome::Write(_) => "write",
            IoOutcome::Fsync => "fsync",
        }
    }
}

/// A way of executing batches of data operations.
pub trait IoEngine: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs and benchmarks (`"io_uring"`, `"sync"`).
    fn name(&self) -> &'static str;

    /// Executes every operation and returns one result per operation, in the order given.
    /// Does not return before every submitted operation has completed (see module docs).
    fn run(&self, ops: Vec<IoOp>) -> Vec<io::Result<IoOutcome>>;

    /// Executes one operation.
    fn run_one(&self, op: IoOp) -> io::Result<IoOutcome> {
        self.run(vec![op])
            .pop()
            .unwrap_or_else(|| Err(io::Error::other("engine returned no result")))
    }
}

/// The synchronous fallback: `pread`/`pwrite`/`fsync` on the calling thread, one syscall per
/// operation (more for short transfers). Gives results identical to every other engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncEngine;

impl SyncEngine {
    fn run_op(op: IoOp) -> io::Result<IoOutcome> {
        match op {
            IoOp::Read { file, offset, len } => {
                let mut buf = BytesMut::zeroed(len);
                let mut done = 0;
                while done < len {
                    let at = offset
                        .checked_add(done as u64)
                        .ok_or_else(offset_overflow)?;
                    match file.read_at(&mut buf[done..], at) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(done);
                Ok(IoOutcome::Read(buf.freeze()))
            }
            IoOp::Write { file, offset, data } => {
                offset
                    .checked_add(data.len() as u64)
                    .ok_or_else(offset_overflow)?;
                file.write_all_at(&data, offset)?;
                Ok(IoOutcome::Write(data.len()))
            }
            IoOp::Fsync { file, datasync } => {
                if datasync {
                    file.sync_data()?;
                } else {
                    file.sync_all()?;
                }
                Ok(IoOutcome::Fsync)
            }
        }
    }
}

/// The error for an offset + length that does not fit in 64 bits.
pub(crate) fn offset_overflow() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "offset plus length overflows 64 bits",
    )
}

impl IoEngine for SyncEngine {
    fn name(&self) -> &'static str {
        "sync"
    }

    fn run(&self, ops: Vec<IoOp>) -> Vec<io::Result<IoOutcome>> {
        ops.into_iter().map(Self::run_op).collect()
    }
}
