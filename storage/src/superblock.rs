//! The superblock: `envoy-store.meta`, a small text file of `key=value` lines.
//!
//! ```text
//! format=envoy-store
//! version=1
//! block_size=4096
//! id_bits=48
//! leaf_bits=5
//! interior_bits=8
//! reserved=4097
//! ```
//!
//! `reserved` is the high-water mark: every ID below it was handed out by `reserve` or used by
//! a `create`/`clone` (which raise it first), so an object at or above it is a stray. The file is
//! replaced atomically: write `envoy-store.meta.tmp`, fsync, rename over, fsync the directory.
//! Unknown keys, missing keys and duplicate keys are errors.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::geometry::Geometry;

/// The superblock file name.
pub const META_FILE: &str = "envoy-store.meta";
/// Its temporary name during a rewrite.
pub const META_TMP: &str = "envoy-store.meta.tmp";
const FORMAT: &str = "envoy-store";
const VERSION: u32 = 1;

/// The decoded superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// The radix-tree geometry.
    pub geometry: Geometry,
    /// Reserve high-water mark (first ID never handed out).
    pub reserved: u64,
}

impl Superblock {
    /// The file's text.
    pub fn encode(&self) -> String {
        let g = &self.geometry;
        format!(
            "format={FORMAT}\nversion={VERSION}\nblock_size={}\nid_bits={}\nleaf_bits={}\n\
             interior_bits={}\nreserved={}\n",
            g.block_size, g.id_bits, g.leaf_bits, g.interior_bits, self.reserved
        )
    }

    /// Parses the file's text; `Err(reason)` on anything unexpected.
    pub fn decode(text: &str) -> Result<Self, String> {
        let mut vals: [Option<u64>; 6] = [None; 6];
        const KEYS: [&str; 6] = [
            "version",
            "block_size",
            "id_bits",
            "leaf_bits",
            "interior_bits",
            "reserved",
        ];
        let mut format_seen = false;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line without '=': {line:?}"))?;
            if k == "format" {
                if v != FORMAT || format_seen {
                    return Err(format!("bad or repeated format {v:?}"));
                }
                format_seen = true;
                continue;
            }
            let i = KEYS
                .iter()
                .position(|&key| key == k)
                .ok_or_else(|| format!("unknown key {k:?}"))?;
            if vals[i].is_some() {
                return Err(format!("duplicate key {k:?}"));
            }
            vals[i] = Some(v.parse().map_err(|_| format!("bad value for {k}: {v:?}"))?);
        }
        if !format_seen {
            return Err("missing format line".into());
        }
        let mut get = |i: usize| vals[i].take().ok_or_else(|| format!("missing {}", KEYS[i]));
        let version = get(0)?;
        if version != u64::from(VERSION) {
            return Err(format!("unsupported version {version}"));
        }
        let small = |v: u64, k: &str| u8::try_from(v).map_err(|_| format!("{k} too large"));
        let geometry = Geometry {
            block_size: u32::try_from(get(1)?).map_err(|_| "block_size too large".to_string())?,
            id_bits: small(get(2)?, "id_bits")?,
            leaf_bits: small(get(3)?, "leaf_bits")?,
            interior_bits: small(get(4)?, "interior_bits")?,
        };
        geometry.validate().map_err(|e| e.to_string())?;
        let reserved = get(5)?;
        if geometry.id_bits < 64 && reserved > 1u64 << geometry.id_bits {
            return Err(format!("reserved mark {reserved} beyond the ID range"));
        }
        Ok(Superblock { geometry, reserved })
    }

    /// Reads and parses `<dir>/envoy-store.meta`.
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(META_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoStore(dir.to_path_buf()))
            }
            Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
        };
        Self::decode(&text).map_err(|reason| StoreError::CorruptSuperblock { path, reason })
    }

    /// Writes the superblock durably (temp + fsync + rename + fsync dir), calling `step`
    /// between the on-disk steps (crash points). A failed fsync goes through `fsync_failed`
    /// (the store poisons itself there).
    pub fn store(
        &self,
        dir: &Path,
        mut step: impl FnMut(&'static str) -> Result<(), StoreError>,
        fsync_failed: impl Fn(StoreError) -> StoreError,
    ) -> Result<(), StoreError> {
        let tmp = dir.join(META_TMP);
        let ctx = |what: &str, p: &PathBuf| format!("{what} {}", p.display());
        step("superblock:begin")?;
        let mut f = File::create(&tmp).map_err(|e| StoreError::io(ctx("creating", &tmp), e))?;
        f.write_all(self.encode().as_bytes())
            .map_err(|e| StoreError::io(ctx("writing", &tmp), e))?;
        f.sync_all()
            .map_err(|e| fsync_failed(StoreError::io(ctx("fsync of", &tmp), e)))?;
        step("superblock:temp-written")?;
        let path = dir.join(META_FILE);
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(ctx("renaming over", &path), e))?;
        step("superblock:renamed")?;
        crate::sys::fsync_dir(dir).map_err(fsync_failed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let sb = Superblock {
            geometry: Geometry::compute(4096, 48).unwrap(),
            reserved: 77,
        };
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }

    #[test]
    fn decode_hostile_text_rejected() {
        let good = Superblock {
            geometry: Geometry::compute(4096, 48).unwrap(),
            reserved: 1,
        }
        .encode();
        for bad in [
            String::new(),
            good.replace("format=envoy-store", "format=other"),
            good.replace("version=1", "version=2"),
            good.replace("reserved=1", "reserved=-1"),
            good.replace("reserved=1", "reserved=999999999999999999"),
            good.replace("leaf_bits=5", "leaf_bits=0"),
            good.replace("id_bits=48", "id_bits=300"),
            format!("{good}reserved=2\n"),
            format!("{good}color=blue\n"),
            format!("{good}junk\n"),
            good.replace("interior_bits=8\n", ""),
        ] {
            assert!(Superblock::decode(&bad).is_err(), "{bad:?}");
        }
    }
}
