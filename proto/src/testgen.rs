//! Deterministic generation of arbitrary field values for property tests (test-only).
//!
//! The message table's `generate` uses [`GenValue`] per field type; values are biased toward
//! boundaries (0, max, 16 walk elements, empty strings, multi-byte UTF-8).

use crate::stat::{obj_kind, ObjAttr, ObjStat, Stat};
use crate::types::{Dialect, Fid, Qid, Tag, NONUNAME, P9_MAXWELEM};
use crate::wire::IoCount;
use bytes::Bytes;

/// splitmix64 stream.
pub(crate) struct Gen(u64);

impl Gen {
    pub(crate) fn new(seed: u64) -> Gen {
        Gen(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn int(&mut self, max: u64) -> u64 {
        match self.below(4) {
            0 => 0,
            1 => max,
            _ => self.next() & max,
        }
    }
}

pub(crate) trait GenValue {
    fn gen(g: &mut Gen, d: Dialect) -> Self;
}

pub(crate) trait GenAs<T> {
    fn gen(g: &mut Gen, d: Dialect) -> T;
}

impl GenValue for u8 {
    fn gen(g: &mut Gen, _: Dialect) -> u8 {
        g.int(0xff) as u8
    }
}
impl GenValue for u16 {
    fn gen(g: &mut Gen, _: Dialect) -> u16 {
        g.int(0xffff) as u16
    }
}
impl GenValue for u32 {
    fn gen(g: &mut Gen, _: Dialect) -> u32 {
        g.int(0xffff_ffff) as u32
    }
}
impl GenValue for u64 {
    fn gen(g: &mut Gen, _: Dialect) -> u64 {
        g.int(u64::MAX)
    }
}
impl GenValue for Tag {
    fn gen(g: &mut Gen, d: Dialect) -> Tag {
        Tag(u16::gen(g, d))
    }
}
impl GenValue for Fid {
    fn gen(g: &mut Gen, d: Dialect) -> Fid {
        Fid(u32::gen(g, d))
    }
}
impl GenValue for Qid {
    fn gen(g: &mut Gen, d: Dialect) -> Qid {
        Qid {
            ty: u8::gen(g, d),
            version: u32::gen(g, d),
            path: u64::gen(g, d),
        }
    }
}
impl GenValue for String {
    fn gen(g: &mut Gen, _: Dialect) -> String {
        const PIECES: [&str; 8] = ["a", "Z", ".", "..", "é", "日本", "🦀", "file-name_01"];
        let n = g.below(6);
        (0..n).map(|_| PIECES[g.below(8) as usize]).collect()
    }
}
impl GenValue for Bytes {
    fn gen(g: &mut Gen, _: Dialect) -> Bytes {
        let n = g.below(80) as usize;
        Bytes::from((0..n).map(|_| g.next() as u8).collect::<Vec<u8>>())
    }
}
impl GenValue for Vec<String> {
    fn gen(g: &mut Gen, d: Dialect) -> Vec<String> {
        let n = g.below(P9_MAXWELEM as u64 + 1);
        (0..n).map(|_| String::gen(g, d)).collect()
    }
}
impl GenValue for Vec<Qid> {
    fn gen(g: &mut Gen, d: Dialect) -> Vec<Qid> {
        let n = g.below(P9_MAXWELEM as u64 + 1);
        (0..n).map(|_| Qid::gen(g, d)).collect()
    }
}
impl GenValue for Stat {
    fn gen(g: &mut Gen, d: Dialect) -> Stat {
        let mut s = Stat {
            ty: u16::gen(g, d),
            dev: u32::gen(g, d),
            qid: Qid::gen(g, d),
            mode: u32::gen(g, d),
            atime: u32::gen(g, d),
            mtime: u32::gen(g, d),
            length: u64::gen(g, d),
            name: String::gen(g, d),
            uid: String::gen(g, d),
            gid: String::gen(g, d),
            muid: String::gen(g, d),
            ..Stat::default()
        };
        if d.is_dotu() {
            s.extension = String::gen(g, d);
            s.n_uid = u32::gen(g, d);
            s.n_gid = u32::gen(g, d);
            s.n_muid = u32::gen(g, d);
        } else {
            s.n_uid = NONUNAME;
        }
        s
    }
}
impl GenValue for ObjAttr {
    fn gen(g: &mut Gen, d: Dialect) -> ObjAttr {
        ObjAttr {
            kind: g.below(u64::from(obj_kind::MAX) + 1) as u8,
            mode: u32::gen(g, d) & 0o7777,
            uid: u32::gen(g, d),
            gid: u32::gen(g, d),
            atime_sec: u64::gen(g, d),
            atime_nsec: u32::gen(g, d),
            mtime_sec: u64::gen(g, d),
            mtime_nsec: u32::gen(g, d),
        }
    }
}
impl GenValue for ObjStat {
    fn gen(g: &mut Gen, d: Dialect) -> ObjStat {
        ObjStat {
            id: u64::gen(g, d),
            attr: ObjAttr::gen(g, d),
            size: u64::gen(g, d),
            ctime_sec: u64::gen(g, d),
            ctime_nsec: u32::gen(g, d),
            blocks: u64::gen(g, d),
        }
    }
}
impl GenAs<Stat> for crate::stat::NStat {
    fn gen(g: &mut Gen, d: Dialect) -> Stat {
        Stat::gen(g, d)
    }
}
impl GenAs<u32> for IoCount {
    fn gen(g: &mut Gen, _: Dialect) -> u32 {
        // Valid for the msize the property tests use (8192).
        g.below(8192 - 11 + 1) as u32
    }
}
