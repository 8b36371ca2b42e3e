//! The directory object format (dissertation §4.2.3): how the envoy layer stores a directory
//! in a storage object, and what `clone` rewrites when it copies one.
//!
//! A directory object is a sequence of 4096-byte blocks (size 0 = empty directory). Each block:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "EDIR"
//! 4       1     version (1)
//! 5       1     reserved (0)
//! 6       2     count: entries in this block, u16 LE
//! 8       2     used_bytes: header + entries, u16 LE (12..=4096)
//! 10      2     reserved (0)
//! 12      …     count packed entries, then zero fill
//!
//! entry:
//! 0       1     flags: bit 0 = copy-on-write, other bits must be 0
//! 1       1     name_len (1..=255)
//! 2       8     object ID, u64 LE
//! 10      8     cookie, u64 LE
//! 18      n     name bytes (no '/', no NUL, not "." or "..")
//! ```
//!
//! The cookie is a per-directory number, increasing on insert, that gives readdir stable
//! offsets; [`next_cookie`] computes the next one from the entries. Decoding trusts nothing:
//! every length is checked against the block before use, so a hostile object yields an error,
//! never a panic or an out-of-bounds read.

use crate::object::ObjectId;

/// Bytes per directory block.
pub const BLOCK_SIZE: usize = 4096;
/// Bytes of the block header.
pub const HEADER_SIZE: usize = 12;
/// Bytes of an entry before its name.
pub const ENTRY_HEADER: usize = 18;
/// The block magic.
pub const MAGIC: &[u8; 4] = b"EDIR";
/// The format version.
pub const VERSION: u8 = 1;
/// Entry flag: the linked object is copy-on-write.
pub const FLAG_COW: u8 = 1;

/// What is wrong with one block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The block is not 4096 bytes.
    #[error("block is {0} bytes, not 4096")]
    Length(usize),
    /// The magic is not "EDIR".
    #[error("bad magic {0:02x?}")]
    Magic([u8; 4]),
    /// Unknown version.
    #[error("unsupported version {0}")]
    Version(u8),
    /// `used_bytes` outside the block or below the header.
    #[error("used_bytes {0} outside 12..=4096")]
    Used(u16),
    /// An entry runs past `used_bytes`.
    #[error("entry {index} at offset {offset} runs past used_bytes")]
    EntryPastEnd {
        /// Entry number.
        index: usize,
        /// Its offset.
        offset: usize,
    },
    /// Entries end before `used_bytes`.
    #[error("entries end at {end} but used_bytes says {used}")]
    UsedMismatch {
        /// Where the entries end.
        end: usize,
        /// The header's claim.
        used: usize,
    },
    /// A name that may not appear in a directory.
    #[error("invalid entry name {0:?}")]
    Name(String),
    /// Unknown flag bits.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    /// Two entries with one name.
    #[error("duplicate name {0:?}")]
    Duplicate(String),
    /// No room for the entry.
    #[error("block full: entry needs {need} bytes, {free} free")]
    Full {
        /// Bytes needed.
        need: usize,
        /// Bytes free.
        free: usize,
    },
}

/// What is wrong with a directory object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirFormatError {
    /// The object size is not a multiple of 4096.
    #[error("directory size {0} is not a multiple of 4096")]
    PartialBlock(u64),
    /// A bad block.
    #[error("block {index}")]
    Block {
        /// Block number.
        index: usize,
        /// The problem.
        #[source]
        source: BlockError,
    },
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Copy-on-write flag.
    pub cow: bool,
    /// The linked object.
    pub id: ObjectId,
    /// Stable readdir cookie.
    pub cookie: u64,
    /// Name bytes.
    pub name: Vec<u8>,
}

impl DirEntry {
    /// Bytes the entry occupies in a block.
    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER + self.name.len()
    }
}

/// Checks a name for a directory entry.
pub fn check_name(name: &[u8]) -> Result<(), BlockError> {
    if name.is_empty()
        || name.len() > 255
        || name == b"."
        || name == b".."
        || name.iter().any(|&c| c == b'/' || c == 0)
    {
        return Err(BlockError::Name(String::from_utf8_lossy(name).into_owned()));
    }
    Ok(())
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Validates a block and returns each entry's offset with the entry.
fn parse(block: &[u8]) -> Result<Vec<(usize, DirEntry)>, BlockError> {
    if block.len() != BLOCK_SIZE {
        return Err(BlockError::Length(block.len()));
    }
    let magic = [block[0], block[1], block[2], block[3]];
    if &magic != MAGIC {
        return Err(BlockError::Magic(magic));
    }
    if block[4] != VERSION {
        return Err(BlockError::Version(block[4]));
    }
    let count = usize::from(le16(block, 6));
    let used_raw = le16(block, 8);
    let used = usize::from(used_raw);
    if !(HEADER_SIZE..=BLOCK_SIZE).contains(&used) {
        return Err(BlockError::Used(used_raw));
    }
    let mut out: Vec<(usize, DirEntry)> = Vec::with_capacity(count.min(BLOCK_SIZE / ENTRY_HEADER));
    let mut off = HEADER_SIZE;
    for index in 0..count {
        if off + ENTRY_HEADER > used {
            return Err(BlockError::EntryPastEnd { index, offset: off });
        }
        let flags = block[off];
        if flags & !FLAG_COW != 0 {
            return Err(BlockError::Flags(flags));
        }
        let name_len = usize::from(block[off + 1]);
        let end = off + ENTRY_HEADER + name_len;
        if end > used {
            return Err(BlockError::EntryPastEnd { index, offset: off });
        }
        let name = &block[off + ENTRY_HEADER..end];
        check_name(name)?;
        if out.iter().any(|(_, e)| e.name == name) {
            return Err(BlockError::Duplicate(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        out.push((
            off,
            DirEntry {
                cow: flags & FLAG_COW != 0,
                id: ObjectId(le64(block, off + 2)),
                cookie: le64(block, off + 10),
                name: name.to_vec(),
            },
        ));
        off = end;
    }
    if off != used {
        return Err(BlockError::UsedMismatch { end: off, used });
    }
    Ok(out)
}

/// A decoded block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirBlock {
    /// Entries in block order.
    pub entries: Vec<DirEntry>,
}

impl DirBlock {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes and validates a 4096-byte block.
    pub fn decode(block: &[u8]) -> Result<Self, BlockError> {
        Ok(DirBlock {
            entries: parse(block)?.into_iter().map(|(_, e)| e).collect(),
        })
    }

    /// Bytes in use, header included.
    pub fn used(&self) -> usize {
        HEADER_SIZE
            + self
                .entries
                .iter()
                .map(DirEntry::encoded_len)
                .sum::<usize>()
    }

    /// Bytes still free.
    pub fn free(&self) -> usize {
        BLOCK_SIZE.saturating_sub(self.used())
    }

    /// Encodes into a 4096-byte block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        // Invariant kept by `insert`: entries fit, so count and used fit in u16.
        b[6..8].copy_from_slice(&(self.entries.len() as u16).to_le_bytes());
        b[8..10].copy_from_slice(&(self.used().min(BLOCK_SIZE) as u16).to_le_bytes());
        let mut off = HEADER_SIZE;
        for e in &self.entries {
            if off + e.encoded_len() > BLOCK_SIZE {
                break;
            }
            b[off] = if e.cow { FLAG_COW } else { 0 };
            b[off + 1] = e.name.len() as u8;
            b[off + 2..off + 10].copy_from_slice(&e.id.0.to_le_bytes());
            b[off + 10..off + 18].copy_from_slice(&e.cookie.to_le_bytes());
            b[off + ENTRY_HEADER..off + e.encoded_len()].copy_from_slice(&e.name);
            off += e.encoded_len();
        }
        b
    }

    /// The entry named `name`.
    pub fn lookup(&self, name: &[u8]) -> Option<&DirEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Adds an entry; fails on a bad or duplicate name or when the block is full.
    pub fn insert(&mut self, entry: DirEntry) -> Result<(), BlockError> {
        check_name(&entry.name)?;
        if self.lookup(&entry.name).is_some() {
            return Err(BlockError::Duplicate(
                String::from_utf8_lossy(&entry.name).into_owned(),
            ));
        }
        let need = entry.encoded_len();
        if need > self.free() {
            return Err(BlockError::Full {
                need,
                free: self.free(),
            });
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Removes and returns the entry named `name`.
    pub fn remove(&mut self, name: &[u8]) -> Option<DirEntry> {
        let i = self.entries.iter().position(|e| e.name == name)?;
        Some(self.entries.remove(i))
    }
}

/// Validates `block` and sets the copy-on-write flag of every entry in place; returns how many
/// entries it has.
pub fn set_cow_all(block: &mut [u8]) -> Result<usize, BlockError> {
    let entries = parse(block)?;
    for (off, _) in &entries {
        block[*off] |= FLAG_COW;
    }
    Ok(entries.len())
}

/// Applies [`set_cow_all`] to every block of a whole directory object.
pub fn set_cow_object(data: &mut [u8]) -> Result<usize, DirFormatError> {
    if data.len() % BLOCK_SIZE != 0 {
        return Err(DirFormatError::PartialBlock(data.len() as u64));
    }
    let mut n = 0;
    for (index, block) in data.chunks_mut(BLOCK_SIZE).enumerate() {
        n += set_cow_all(block).map_err(|source| DirFormatError::Block { index, source })?;
    }
    Ok(n)
}

/// Iterates the entries of a whole directory object; stops after the first error.
pub fn entries(data: &[u8]) -> Entries<'_> {
    Entries {
        data,
        block: 0,
        pending: Vec::new().into_iter(),
        failed: false,
    }
}

/// Iterator returned by [`entries`].
#[derive(Debug)]
pub struct Entries<'a> {
    data: &'a [u8],
    block: usize,
    pending: std::vec::IntoIter<(usize, DirEntry)>,
    failed: bool,
}

impl Iterator for Entries<'_> {
    type Item = Result<DirEntry, DirFormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some((_, e)) = self.pending.next() {
                return Some(Ok(e));
            }
            if self.data.len() % BLOCK_SIZE != 0 {
                self.failed = true;
                return Some(Err(DirFormatError::PartialBlock(self.data.len() as u64)));
            }
            let start = self.block * BLOCK_SIZE;
            if start >= self.data.len() {
                return None;
            }
            let index = self.block;
            self.block += 1;
            match parse(&self.data[start..start + BLOCK_SIZE]) {
                Ok(v) => self.pending = v.into_iter(),
                Err(source) => {
                    self.failed = true;
                    return Some(Err(DirFormatError::Block { index, source }));
                }
            }
        }
    }
}

/// The cookie for the next insert: one past the largest in the object (1 when empty).
pub fn next_cookie(data: &[u8]) -> Result<u64, DirFormatError> {
    let mut max = 0u64;
    for e in entries(data) {
        max = max.max(e?.cookie);
    }
    Ok(max.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(name: &str, id: u64, cookie: u64) -> DirEntry {
        DirEntry {
            cow: false,
            id: ObjectId(id),
            cookie,
            name: name.as_bytes().to_vec(),
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = DirBlock::new();
        b.insert(ent("a", 1, 1)).unwrap();
        b.insert(ent("hello.txt", 99, 2)).unwrap();
        b.encode()
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut b = DirBlock::new();
        b.insert(ent("x", 5, 1)).unwrap();
        b.insert(DirEntry {
            cow: true,
            ..ent("y", u64::MAX, 2)
        })
        .unwrap();
        assert_eq!(DirBlock::decode(&b.encode()).unwrap(), b);
        assert_eq!(b.lookup(b"y").map(|e| e.id), Some(ObjectId(u64::MAX)));
        assert_eq!(b.remove(b"x").map(|e| e.cookie), Some(1));
        assert!(b.lookup(b"x").is_none());
    }

    #[test]
    fn insert_until_full_then_error() {
        let mut b = DirBlock::new();
        let mut n = 0u64;
        loop {
            let name = format!("{n:0>200}");
            match b.insert(ent(&name, n, n)) {
                Ok(()) => n += 1,
                Err(BlockError::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(n, 18);
        assert_eq!(DirBlock::decode(&b.encode()).unwrap().entries.len(), 18);
    }

    #[test]
    fn insert_bad_names_rejected() {
        let mut b = DirBlock::new();
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(
                matches!(b.insert(ent(bad, 1, 1)), Err(BlockError::Name(_))),
                "{bad:?}"
            );
        }
        let long = "x".repeat(256);
        assert!(b.insert(ent(&long, 1, 1)).is_err());
        b.insert(ent("dup", 1, 1)).unwrap();
        assert!(matches!(
            b.insert(ent("dup", 2, 2)),
            Err(BlockError::Duplicate(_))
        ));
    }

    #[test]
    fn decode_hostile_blocks_rejected() {
        let good = sample();
        let mut cases: Vec<(Vec<u8>, &str)> = vec![(good[..100].to_vec(), "short")];
        let mut b = good.clone();
        b[0] = b'X';
        cases.push((b, "magic"));
        let mut b = good.clone();
        b[4] = 9;
        cases.push((b, "version"));
        let mut b = good.clone();
        b[6..8].copy_from_slice(&500u16.to_le_bytes());
        cases.push((b, "count past used"));
        let mut b = good.clone();
        b[8..10].copy_from_slice(&5000u16.to_le_bytes());
        cases.push((b, "used past block"));
        let mut b = good.clone();
        b[8..10].copy_from_slice(&4u16.to_le_bytes());
        cases.push((b, "used below header"));
        let mut b = good.clone();
        b[8..10].copy_from_slice(&4000u16.to_le_bytes());
        cases.push((b, "used beyond entries"));
        let mut b = good.clone();
        b[HEADER_SIZE + 1] = 0;
        cases.push((b, "name_len 0"));
        let mut b = good.clone();
        b[HEADER_SIZE + 1] = 255;
        cases.push((b, "name_len past used"));
        let mut b = good.clone();
        b[HEADER_SIZE + ENTRY_HEADER] = b'/';
        cases.push((b, "slash"));
        let mut b = good.clone();
        b[HEADER_SIZE + ENTRY_HEADER] = 0;
        cases.push((b, "nul"));
        let mut b = good.clone();
        b[HEADER_SIZE + ENTRY_HEADER] = b'.';
        cases.push((b, "dot"));
        let mut b = good.clone();
        b[HEADER_SIZE] = 0x80;
        cases.push((b, "flags"));
        let mut d = DirBlock::new();
        d.insert(ent("..", 1, 1)).unwrap_err();
        let mut b = good.clone();
        // Rename "a" to ".." by growing: rebuild a block by hand with name "..".
        b[HEADER_SIZE + 1] = 2;
        b[HEADER_SIZE + ENTRY_HEADER] = b'.';
        b[HEADER_SIZE + ENTRY_HEADER + 1] = b'.';
        cases.push((b, "dotdot"));
        for (b, what) in cases {
            assert!(DirBlock::decode(&b).is_err(), "{what}");
            let mut m = b.clone();
            assert!(set_cow_all(&mut m).is_err(), "{what}");
            assert_eq!(m, b, "{what}: a failed set_cow_all leaves the block alone");
        }
    }

    #[test]
    fn set_cow_all_flags_every_entry() {
        let mut obj = sample();
        obj.extend(sample());
        assert_eq!(set_cow_object(&mut obj).unwrap(), 4);
        let all: Vec<_> = entries(&obj).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|e| e.cow));
        assert_eq!(next_cookie(&obj).unwrap(), 3);
    }

    #[test]
    fn entries_partial_or_bad_block_error_then_stop() {
        let mut obj = sample();
        obj.push(0);
        let v: Vec<_> = entries(&obj).collect();
        assert_eq!(v, vec![Err(DirFormatError::PartialBlock(4097))]);
        let mut obj = sample();
        obj.extend(vec![0u8; BLOCK_SIZE]);
        let v: Vec<_> = entries(&obj).collect();
        assert_eq!(v.len(), 3);
        assert!(matches!(v[2], Err(DirFormatError::Block { index: 1, .. })));
        assert_eq!(entries(&[]).count(), 0);
        assert_eq!(next_cookie(&[]).unwrap(), 1);
    }

    proptest::proptest! {
        #[test]
        fn decode_random_blocks_never_panics(
            count in proptest::prelude::any::<u16>(),
            used in proptest::prelude::any::<u16>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..BLOCK_SIZE - HEADER_SIZE),
        ) {
            let mut b = vec![0u8; BLOCK_SIZE];
            b[..4].copy_from_slice(MAGIC);
            b[4] = VERSION;
            b[6..8].copy_from_slice(&count.to_le_bytes());
            b[8..10].copy_from_slice(&used.to_le_bytes());
            b[HEADER_SIZE..HEADER_SIZE + body.len()].copy_from_slice(&body);
            let decoded = DirBlock::decode(&b);
            let mut m = b.clone();
            let cow = set_cow_all(&mut m);
            proptest::prop_assert_eq!(decoded.is_ok(), cow.is_ok());
            if let Ok(d) = decoded {
                // Whatever decodes re-encodes to an equivalent block.
                proptest::prop_assert_eq!(DirBlock::decode(&d.encode()).ok(), Some(d));
            }
        }

        #[test]
        fn insert_encode_decode_random_names(names in proptest::collection::vec("[a-zA-Z0-9._-]{1,40}", 0..60)) {
            let mut b = DirBlock::new();
            for (i, n) in names.iter().enumerate() {
                let _ = b.insert(ent(n, i as u64, i as u64 + 1));
            }
            proptest::prop_assert!(b.used() <= BLOCK_SIZE);
            proptest::prop_assert_eq!(DirBlock::decode(&b.encode()).unwrap(), b);
        }
    }
}
