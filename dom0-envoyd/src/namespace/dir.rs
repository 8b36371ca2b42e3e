//! A directory object in memory: the blocks of [`envoy_storage::dirfmt`] plus indexes.
//!
//! On disk a directory is a sequence of 4096-byte `EDIR` blocks of entries
//! `flags[1] name_len[1] id[8] cookie[8] name` (see `dirfmt`). Here it is kept as the decoded
//! blocks, a name → block index and a cookie → name order. Every update changes exactly one
//! block (an insert goes to the first block with room, or a new block at the end), and the
//! caller writes just that block back at `index * 4096`: one page-aligned `pwrite`, so a crash
//! leaves the old block or the new one. Blocks are never freed: an emptied block stays and
//! takes later inserts, so a directory object only grows.
//!
//! Cookies give readdir stable offsets: each insert takes a cookie above every cookie ever
//! seen in this directory since it was loaded (`next_cookie`), so entries never move and
//! removals never shift later entries. (After the parsed directory is evicted from the cache
//! and reloaded, the cookie of a removed last entry can be handed out again; a listing in
//! progress may then miss the new entry, which POSIX allows for entries added meanwhile.)

use std::collections::{BTreeMap, HashMap};

use envoy_storage::dirfmt::{self, DirBlock, DirEntry, DirFormatError, BLOCK_SIZE};
use envoy_storage::ObjectId;

/// Parsed contents of one directory object.
#[derive(Debug, Clone, Default)]
pub struct DirData {
    blocks: Vec<DirBlock>,
    index: HashMap<Vec<u8>, usize>,
    order: BTreeMap<u64, Vec<u8>>,
    next_cookie: u64,
    /// Every entry's (cookie, block, position) in cookie order, built by the first listing
    /// after a change ([`DirData::entries_after`]) and dropped by every change: a listing of
    /// a large directory is many Treaddirs, each starting where the last ended.
    sorted: std::sync::OnceLock<Vec<(u64, u32, u32)>>,
    /// Bytes of all names, kept up to date for [`DirData::weight`] (the cache asks on every
    /// change; summing them was a pass over every entry).
    name_bytes: usize,
}

impl DirData {
    /// Parses a whole directory object.
    pub fn parse(data: &[u8]) -> Result<Self, DirFormatError> {
        if data.len() % BLOCK_SIZE != 0 {
            return Err(DirFormatError::PartialBlock(data.len() as u64));
        }
        let mut d = DirData {
            next_cookie: 1,
            ..DirData::default()
        };
        for (index, chunk) in data.chunks(BLOCK_SIZE).enumerate() {
            let b = DirBlock::decode(chunk)
                .map_err(|source| DirFormatError::Block { index, source })?;
            for e in &b.entries {
                if d.index.insert(e.name.clone(), index).is_some() {
                    return Err(DirFormatError::Block {
                        index,
                        source: dirfmt::BlockError::Duplicate(
                            String::from_utf8_lossy(&e.name).into_owned(),
                        ),
                    });
                }
                d.order.insert(e.cookie, e.name.clone());
                d.name_bytes += e.name.len();
                d.next_cookie = d.next_cookie.max(e.cookie.saturating_add(1));
            }
            d.blocks.push(b);
        }
        Ok(d)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the directory has no entries.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The entry called `name`.
    pub fn lookup(&self, name: &[u8]) -> Option<&DirEntry> {
        let b = *self.index.get(name)?;
        self.blocks.get(b)?.lookup(name)
    }

    /// Adds an entry with a fresh cookie; returns the index of the block that changed.
    pub fn insert(
        &mut self,
        name: Vec<u8>,
        id: ObjectId,
        cow: bool,
    ) -> Result<usize, dirfmt::BlockError> {
        self.insert_preferring(name, id, cow, usize::MAX)
    }

    /// [`DirData::insert`] into block `preferred` when it has room (so a change of two
    /// entries is one block write), else where `insert` would put it.
    pub fn insert_preferring(
        &mut self,
        name: Vec<u8>,
        id: ObjectId,
        cow: bool,
        preferred: usize,
    ) -> Result<usize, dirfmt::BlockError> {
        dirfmt::check_name(&name)?;
        self.sorted = std::sync::OnceLock::new();
        if self.index.contains_key(&name) {
            return Err(dirfmt::BlockError::Duplicate(
                String::from_utf8_lossy(&name).into_owned(),
            ));
        }
        let cookie = self.next_cookie.max(1);
        let entry = DirEntry {
            cow,
            id,
            cookie,
            name: name.clone(),
        };
        let need = entry.encoded_len();
        // The last block first: appends land there, and checking every block's free space
        // made each insert in a directory of n entries cost O(n). Earlier blocks' holes are
        // looked for only when the last block is full.
        let last_fits = self.blocks.last().is_some_and(|b| b.free() >= need);
        let slot = if self.blocks.get(preferred).is_some_and(|b| b.free() >= need) {
            preferred
        } else if last_fits {
            self.blocks.len() - 1
        } else {
            match self.blocks.iter().position(|b| b.free() >= need) {
                Some(i) => i,
                None => {
                    self.blocks.push(DirBlock::new());
                    self.blocks.len() - 1
                }
            }
        };
        self.blocks[slot].insert(entry)?;
        self.next_cookie = cookie + 1;
        self.name_bytes += name.len();
        self.index.insert(name.clone(), slot);
        self.order.insert(cookie, name);
        Ok(slot)
    }

    /// Removes `name`; returns the entry and the index of the block that changed.
    pub fn remove(&mut self, name: &[u8]) -> Option<(DirEntry, usize)> {
        let slot = self.index.remove(name)?;
        self.name_bytes = self.name_bytes.saturating_sub(name.len());
        self.sorted = std::sync::OnceLock::new();
        let e = self.blocks.get_mut(slot)?.remove(name)?;
        self.order.remove(&e.cookie);
        Some((e, slot))
    }

    /// Points `name` at `id` with copy-on-write flag `cow`, keeping its cookie; returns the
    /// index of the block that changed.
    pub fn set(&mut self, name: &[u8], id: ObjectId, cow: bool) -> Option<usize> {
        let slot = *self.index.get(name)?;
        let e = self
            .blocks
            .get_mut(slot)?
            .entries
            .iter_mut()
            .find(|e| e.name == name)?;
        e.id = id;
        e.cow = cow;
        Some(slot)
    }

    /// The encoded bytes of block `index`.
    pub fn block_bytes(&self, index: usize) -> Option<Vec<u8>> {
        self.blocks.get(index).map(DirBlock::encode)
    }

    /// Entries with a cookie strictly above `after`, in cookie order.
    ///
    /// From the cookie-ordered position index, built once per change (gathering and sorting
    /// every entry, not looking names up: going through `order` would hash each name and scan
    /// its block comparing names). A listing continues with a binary search.
    pub fn entries_after(&self, after: u64) -> impl Iterator<Item = &DirEntry> + '_ {
        let sorted = self.sorted.get_or_init(|| {
            let mut v: Vec<(u64, u32, u32)> = Vec::with_capacity(self.index.len());
            for (bi, b) in self.blocks.iter().enumerate() {
                for (pi, e) in b.entries.iter().enumerate() {
                    // Blocks hold at most 4096 bytes of entries; a directory object of 2^32
                    // blocks cannot be loaded. Entries past those bounds are not listed.
                    if let (Ok(bi), Ok(pi)) = (u32::try_from(bi), u32::try_from(pi)) {
                        v.push((e.cookie, bi, pi));
                    }
                }
            }
            v.sort_unstable_by_key(|t| t.0);
            v
        });
        let start = sorted.partition_point(|t| t.0 <= after);
        sorted
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .filter_map(|&(_, b, p)| {
                self.blocks
                    .get(b as usize)
                    .and_then(|blk| blk.entries.get(p as usize))
            })
    }

    /// Every entry, in cookie order.
    pub fn entries(&self) -> impl Iterator<Item = &DirEntry> + '_ {
        self.entries_after(0)
    }

    /// Number of blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// Sets the copy-on-write flag on every entry (what a clone does on disk).
    pub fn set_cow_all(&mut self) {
        for b in &mut self.blocks {
            for e in &mut b.entries {
                e.cow = true;
            }
        }
    }

    /// Approximate memory footprint, for the cache budget.
    pub fn weight(&self) -> usize {
        let per_entry = 96;
        128 + self.blocks.len() * 64 + self.index.len() * per_entry + self.name_bytes * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(d: &DirData) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..d.blocks.len() {
            out.extend(d.block_bytes(i).unwrap_or_default());
        }
        out
    }

    #[test]
    fn weight_kept_in_step_with_inserts_removes_and_parse() {
        let mut d = DirData::default();
        let empty = d.weight();
        for i in 0..300u64 {
            d.insert(format!("name-{i}").into_bytes(), ObjectId(i + 10), false)
                .unwrap();
        }
        let full = d.weight();
        assert!(full > empty);
        let reparsed = DirData::parse(&encode_all(&d)).unwrap();
        assert_eq!(reparsed.weight(), full, "parse counts the same names");
        for i in 0..300u64 {
            d.remove(format!("name-{i}").as_bytes()).unwrap();
        }
        // Only the (now empty) blocks remain.
        assert_eq!(d.weight(), empty + d.blocks.len() * 64);
    }

    #[test]
    fn dirdata_insert_remove_reparse_same_entries() {
        let mut d = DirData::parse(&[]).unwrap();
        for i in 0..500u64 {
            d.insert(
                format!("file-{i:04}").into_bytes(),
                ObjectId(10 + i),
                i % 2 == 0,
            )
            .unwrap();
        }
        assert!(d.blocks.len() > 1, "500 entries need several blocks");
        d.remove(b"file-0003").unwrap();
        let again = DirData::parse(&encode_all(&d)).unwrap();
        assert_eq!(again.len(), 499);
        assert_eq!(
            again.lookup(b"file-0004").map(|e| (e.id, e.cow)),
            Some((ObjectId(14), true))
        );
        assert!(again.lookup(b"file-0003").is_none());
        let cookies: Vec<u64> = again.entries().map(|e| e.cookie).collect();
        assert!(cookies.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn dirdata_cookie_not_reused_after_remove_of_last() {
        let mut d = DirData::parse(&[]).unwrap();
        d.insert(b"a".to_vec(), ObjectId(5), false).unwrap();
        d.insert(b"b".to_vec(), ObjectId(6), false).unwrap();
        let b_cookie = d.lookup(b"b").map(|e| e.cookie).unwrap();
        d.remove(b"b");
        d.insert(b"c".to_vec(), ObjectId(7), false).unwrap();
        assert!(d.lookup(b"c").map(|e| e.cookie).unwrap() > b_cookie);
        assert_eq!(d.entries_after(b_cookie).count(), 1);
    }
    #[test]
    fn insert_preferring_uses_the_preferred_block_when_it_has_room() {
        let mut d = DirData::default();
        for i in 0..500u64 {
            d.insert(format!("file-{i:04}").into_bytes(), ObjectId(10 + i), false)
                .unwrap();
        }
        let first = d.index[b"file-0000".as_slice()];
        d.remove(b"file-0001").unwrap();
        let got = d
            .insert_preferring(b"web@1".to_vec(), ObjectId(10), true, first)
            .unwrap();
        assert_eq!(got, first, "room was freed in the preferred block");
        assert!(
            d.insert_preferring(b"oob".to_vec(), ObjectId(8), false, 9999)
                .is_ok(),
            "an out-of-range preference falls back to the usual place"
        );
        let again = DirData::parse(&encode_all(&d)).unwrap();
        assert_eq!(
            again.lookup(b"web@1").map(|e| (e.id, e.cow)),
            Some((ObjectId(10), true))
        );
    }
}
