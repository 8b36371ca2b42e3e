//! Extended attributes of names, stored on their objects (`ObjectStore::xattr_*`: host
//! `user.envoy.*` xattrs on the object file). Setting or removing one is a change like any
//! other: a frozen name is thawed first, and a thaw copies the attributes onto the clone.

use std::sync::Arc;

use envoy_proto::xattr as xflags;

use super::node::{read, write, Node};
use super::Fs;
use crate::error::{FsError, FsResult};

/// Largest value (Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: u64 = 65536;
/// Longest name (Linux `XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;

impl Fs {
    /// The value of `name`, `ENODATA` if unset.
    pub fn xattr_get(&self, node: &Node, name: &str) -> FsResult<Vec<u8>> {
        let _io = read(&node.io);
        self.store
            .xattr_get(node.id(), name)?
            .ok_or(FsError::NoData)
    }

    /// The attribute list as `listxattr(2)` returns it: each name NUL-terminated.
    pub fn xattr_list(&self, node: &Node) -> FsResult<Vec<u8>> {
        let _io = read(&node.io);
        let mut out = Vec::new();
        for n in self.store.xattr_list(node.id())? {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    /// Sets `name` to `value` (`flags`: `XATTR_CREATE` fails if it exists, `XATTR_REPLACE`
    /// if it does not); an empty value removes the attribute, as QEMU and the Linux client
    /// agree (removexattr is sent as a zero-length create).
    pub fn xattr_set(
        &self,
        node: &Arc<Node>,
        name: &str,
        value: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        let mut prep = self.prepare_thaw(node);
        let _gate = self.enter_prepared(node, &mut prep)?;
        loop {
            self.thaw(node)?;
            let _io = write(&node.io);
            let (id, cow) = {
                let s = node.state();
                (s.id, s.cow)
            };
            if cow {
                continue;
            }
            let exists = self.store.xattr_get(id, name)?.is_some();
            if flags & xflags::CREATE != 0 && exists {
                return Err(FsError::Exists);
            }
            if flags & xflags::REPLACE != 0 && !exists {
                return Err(FsError::NoData);
            }
            if value.is_empty() {
                if !self.store.xattr_remove(id, name)? && flags & xflags::CREATE == 0 {
                    return Err(FsError::NoData);
                }
                return Ok(());
            }
            self.store.xattr_set(id, name, value)?;
            return Ok(());
        }
    }
}
