//! The radix-tree geometry: how an object ID becomes a path.
//!
//! Objects live under `<store>/objects/` in a tree of directories indexed by ID bits
//! (dissertation §5.3.2). The ID is split least-significant bits first:
//!
//! ```text
//!   id (id_bits wide):  [ root bits | interior_bits | … | interior_bits | leaf_bits ]
//!   path:  objects/<root hex>/<level hex>/…/<leaf name>
//! ```
//!
//! The lowest `leaf_bits` go into the leaf file name (see [`crate::name`]); each directory level
//! above carries `interior_bits`; whatever is left over — a smaller fan-out — is the root level
//! (absent when the bits divide evenly). Wasting space in one root block beats wasting it in
//! every leaf. Directory names are fixed-width lowercase hex (`ceil(bits/4)` characters).
//!
//! Fan-outs are chosen so a directory fits in one host file-system block, assuming ext4-style
//! directory entries: 8 bytes of header plus the name rounded up to 4 bytes, plus `.` and `..`
//! (12 bytes each). `interior_bits` is the largest `n` such that `2^n` entries with
//! `ceil(n/4)`-character names fit; `leaf_bits` likewise for the fixed-length leaf name, whose
//! length depends on `leaf_bits` itself. Both are computed once at store creation and recorded
//! in the superblock; opening a store uses the recorded values.

use std::path::{Path, PathBuf};

use crate::name::{self, LEAF_FIXED_LEN};
use crate::object::ObjectId;

/// Bytes one ext4 directory entry with a name of `name_len` bytes occupies.
pub fn dirent_size(name_len: usize) -> usize {
    8 + name_len.div_ceil(4) * 4
}

/// Bytes of `.` and `..` in every directory.
const DOT_ENTRIES: usize = 24;

/// Hex characters needed for `bits` bits (at least one).
pub fn hex_width(bits: u8) -> usize {
    usize::from(bits).div_ceil(4).max(1)
}

/// How a store maps IDs to paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Host file-system block size the fan-outs were computed for.
    pub block_size: u32,
    /// Width of object IDs; IDs at or above `2^id_bits` are rejected.
    pub id_bits: u8,
    /// ID bits in the leaf file name.
    pub leaf_bits: u8,
    /// ID bits per interior directory level.
    pub interior_bits: u8,
}

/// Why a geometry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// Block size outside 512 B ..= 1 MiB.
    #[error("block size {0} is outside 512..=1048576")]
    BlockSize(u32),
    /// ID width outside 1..=64.
    #[error("id_bits {0} is outside 1..=64")]
    IdBits(u8),
    /// Recorded fan-outs that make no sense.
    #[error("leaf_bits {leaf} / interior_bits {interior} invalid for id_bits {id_bits}")]
    FanOut {
        /// Leaf bits.
        leaf: u8,
        /// Interior bits.
        interior: u8,
        /// ID bits.
        id_bits: u8,
    },
}

impl Geometry {
    /// Computes the geometry for a host block size and an ID width.
    pub fn compute(block_size: u32, id_bits: u8) -> Result<Self, GeometryError> {
        if !(512..=1 << 20).contains(&block_size) {
            return Err(GeometryError::BlockSize(block_size));
        }
        if !(1..=64).contains(&id_bits) {
            return Err(GeometryError::IdBits(id_bits));
        }
        let room = block_size as usize - DOT_ENTRIES;
        let fits = |n: u8, name_len: usize| (1usize << n) * dirent_size(name_len) <= room;
        let interior_bits = (1..=16u8)
            .rev()
            .find(|&n| fits(n, hex_width(n)))
            .unwrap_or(1);
        let leaf_bits = (1..=16u8)
            .rev()
            .find(|&n| fits(n, hex_width(n) + LEAF_FIXED_LEN))
            .unwrap_or(1)
            .min(id_bits);
        Ok(Geometry {
            block_size,
            id_bits,
            leaf_bits,
            interior_bits,
        })
    }

    /// Checks recorded values (from a superblock) for consistency.
    pub fn validate(&self) -> Result<(), GeometryError> {
        if !(512..=1 << 20).contains(&self.block_size) {
            return Err(GeometryError::BlockSize(self.block_size));
        }
        if !(1..=64).contains(&self.id_bits) {
            return Err(GeometryError::IdBits(self.id_bits));
        }
        if !(1..=16).contains(&self.leaf_bits)
            || !(1..=16).contains(&self.interior_bits)
            || self.leaf_bits > self.id_bits
        {
            return Err(GeometryError::FanOut {
                leaf: self.leaf_bits,
                interior: self.interior_bits,
                id_bits: self.id_bits,
            });
        }
        Ok(())
    }

    /// Bits per directory level from the root down (the leaf name not included).
    pub fn levels(&self) -> Vec<u8> {
        let rest = self.id_bits - self.leaf_bits;
        let mut v = Vec::new();
        let root = rest % self.interior_bits;
        if root > 0 {
            v.push(root);
        }
        v.extend(std::iter::repeat_n(
            self.interior_bits,
            usize::from(rest / self.interior_bits),
        ));
        v
    }

    /// True if `id` is below [`Self::id_limit`]: it fits in `id_bits` and, in a 64-bit store,
    /// is not `u64::MAX` (the exclusive reserve mark, a `u64`, could never cover it).
    pub fn contains(&self, id: ObjectId) -> bool {
        id.0 < self.id_limit()
    }

    /// Exclusive upper bound of IDs (`u64::MAX` for 64-bit IDs, so that ID is never valid).
    pub fn id_limit(&self) -> u64 {
        if self.id_bits >= 64 {
            u64::MAX
        } else {
            1u64 << self.id_bits
        }
    }

    /// The leaf-directory number of `id`: all bits above the leaf bits.
    pub fn leaf_dir_key(&self, id: ObjectId) -> u64 {
        id.0 >> self.leaf_bits
    }

    /// The low bits stored in the leaf name.
    pub fn leaf_low(&self, id: ObjectId) -> u64 {
        id.0 & ((1u64 << self.leaf_bits) - 1)
    }

    /// The ID for a leaf-directory number and the leaf's low bits.
    pub fn join(&self, dir_key: u64, low: u64) -> ObjectId {
        ObjectId((dir_key << self.leaf_bits) | low)
    }

    /// The directory components of the leaf directory for `dir_key`, root first.
    pub fn dir_components(&self, dir_key: u64) -> Vec<String> {
        let levels = self.levels();
        let mut out = Vec::with_capacity(levels.len());
        let mut shift: u32 = levels.iter().map(|&b| u32::from(b)).sum();
        for bits in levels {
            shift -= u32::from(bits);
            let v = (dir_key >> shift) & ((1u64 << bits) - 1);
            out.push(format!("{:0w$x}", v, w = hex_width(bits)));
        }
        out
    }

    /// The leaf directory holding `dir_key`'s objects.
    pub fn leaf_dir(&self, objects: &Path, dir_key: u64) -> PathBuf {
        let mut p = objects.to_path_buf();
        for c in self.dir_components(dir_key) {
            p.push(c);
        }
        p
    }

    /// Parses one directory component at `level` (0 = root); `None` if it is not the exact
    /// fixed-width lowercase hex of a value that fits the level.
    pub fn parse_component(&self, level: usize, s: &str) -> Option<u64> {
        let bits = *self.levels().get(level)?;
        if s.len() != hex_width(bits) {
            return None;
        }
        let v = name::parse_hex(s.as_bytes())?;
        (v >> bits == 0).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_4k_blocks_expected_fanouts() {
        let g = Geometry::compute(4096, 48).unwrap();
        // 256 two-char names * 12 B + 24 = 3096 <= 4096; 512 would need 6144.
        assert_eq!(g.interior_bits, 8);
        // leaf name 57 chars -> 68 B; 32 * 68 = 2176 fits, 64 * 68 = 4352 does not.
        assert_eq!(g.leaf_bits, 5);
        assert_eq!(g.levels(), vec![3, 8, 8, 8, 8, 8]);
        assert!(g.validate().is_ok());
    }

    #[test]
    fn compute_fanouts_fit_one_block_for_many_sizes() {
        for bs in [512u32, 1024, 2048, 4096, 8192, 65536] {
            let g = Geometry::compute(bs, 64).unwrap();
            let room = bs as usize - DOT_ENTRIES;
            let inner = (1usize << g.interior_bits) * dirent_size(hex_width(g.interior_bits));
            assert!(inner <= room, "{bs}");
            let leaf_len = hex_width(g.leaf_bits) + LEAF_FIXED_LEN;
            assert!(
                (1usize << g.leaf_bits) * dirent_size(leaf_len) <= room,
                "{bs}"
            );
            // One more bit would not fit.
            let n = g.interior_bits + 1;
            assert!((1usize << n) * dirent_size(hex_width(n)) > room, "{bs}");
            let total: u32 = g.levels().iter().map(|&b| u32::from(b)).sum();
            assert_eq!(total + u32::from(g.leaf_bits), 64);
        }
    }

    #[test]
    fn compute_bad_inputs_rejected() {
        assert!(Geometry::compute(100, 48).is_err());
        assert!(Geometry::compute(4096, 0).is_err());
        assert!(Geometry::compute(4096, 65).is_err());
        let g = Geometry::compute(4096, 3).unwrap();
        assert_eq!(g.leaf_bits, 3);
        assert!(g.levels().is_empty());
    }

    #[test]
    fn path_components_root_smallest_and_round_trip() {
        let g = Geometry::compute(4096, 48).unwrap();
        let id = ObjectId(0x7abc_def0_1234);
        let key = g.leaf_dir_key(id);
        let comps = g.dir_components(key);
        assert_eq!(comps.len(), 6);
        assert_eq!(comps[0].len(), 1);
        let mut back = 0u64;
        for (i, c) in comps.iter().enumerate() {
            let bits = g.levels()[i];
            back = (back << bits) | g.parse_component(i, c).unwrap();
        }
        assert_eq!(g.join(back, g.leaf_low(id)), id);
        assert_eq!(g.parse_component(0, "f"), None, "root holds 3 bits");
        assert_eq!(g.parse_component(1, "AB"), None, "uppercase rejected");
        assert_eq!(g.parse_component(1, "abc"), None, "wrong width");
    }

    #[test]
    fn contains_rejects_ids_past_width() {
        let g = Geometry::compute(4096, 48).unwrap();
        assert!(g.contains(ObjectId((1 << 48) - 1)));
        assert!(!g.contains(ObjectId(1 << 48)));
        let g64 = Geometry::compute(4096, 64).unwrap();
        assert!(g64.contains(ObjectId(u64::MAX - 1)));
        assert!(!g64.contains(ObjectId(u64::MAX)), "no mark can cover it");
    }
}
