//! The leaf file name: an object's low ID bits and its attributes in one fixed-length name.
//!
//! Attributes the host inode cannot hold for us (kind, full mode, owner, times) live in the
//! name, so a single directory read yields every object's attributes, and changing them is one
//! atomic `rename` (old record or new, never neither). Size and ctime come from the host inode.
//!
//! Layout (all lowercase hex, no separators; `w = ceil(leaf_bits / 4)`):
//!
//! | offset   | len | field                                          |
//! |----------|-----|------------------------------------------------|
//! | 0        | w   | low `leaf_bits` of the object ID               |
//! | w        | 1   | kind: `f d l c b p s`                          |
//! | w + 1    | 4   | mode (`0o7777` bits)                           |
//! | w + 5    | 8   | uid                                            |
//! | w + 13   | 8   | gid                                            |
//! | w + 21   | 16  | atime, nanoseconds since the epoch             |
//! | w + 37   | 16  | mtime, nanoseconds since the epoch             |
//! | w + 53   | 2   | format version (`01`)                          |
//!
//! Total `w + 55` bytes. Temporary files start with `.` and never parse as leaf names.

use crate::object::{Attributes, ObjectKind, Timestamp};

/// Leaf-name bytes besides the low ID bits.
pub const LEAF_FIXED_LEN: usize = 55;
/// The format version written in every leaf name.
pub const NAME_VERSION: u8 = 1;
/// Largest mode the name can hold.
pub const MODE_MAX: u32 = 0o7777;

/// A parsed leaf name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafName {
    /// Low ID bits.
    pub low: u64,
    /// Attributes.
    pub attr: Attributes,
}

/// Why attributes cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Mode has bits beyond `0o7777`.
    #[error("mode {0:#o} has bits beyond 0o7777")]
    Mode(u32),
    /// A timestamp beyond 2554 or with nanos >= 1e9.
    #[error("timestamp {secs}.{nanos:09} cannot be stored")]
    Time {
        /// Seconds.
        secs: u64,
        /// Nanoseconds.
        nanos: u32,
    },
}

fn ts_nanos(t: Timestamp) -> Result<u64, NameError> {
    t.as_nanos().ok_or(NameError::Time {
        secs: t.secs,
        nanos: t.nanos,
    })
}

/// Checks that `attr` can be written into a name.
pub fn validate(attr: &Attributes) -> Result<(), NameError> {
    if attr.mode > MODE_MAX {
        return Err(NameError::Mode(attr.mode));
    }
    ts_nanos(attr.atime)?;
    ts_nanos(attr.mtime)?;
    Ok(())
}

/// Encodes a leaf name for `low` (already masked to `leaf_bits`).
pub fn encode(leaf_bits: u8, low: u64, attr: &Attributes) -> Result<String, NameError> {
    validate(attr)?;
    let w = crate::geometry::hex_width(leaf_bits);
    Ok(format!(
        "{low:0w$x}{kind}{mode:04x}{uid:08x}{gid:08x}{at:016x}{mt:016x}{NAME_VERSION:02x}",
        kind = char::from(attr.kind.code()),
        mode = attr.mode,
        uid = attr.uid,
        gid = attr.gid,
        at = ts_nanos(attr.atime)?,
        mt = ts_nanos(attr.mtime)?,
    ))
}

/// Parses lowercase hex (1..=16 digits); `None` on anything else.
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Parses a leaf name; `None` unless it is exactly a valid name for `leaf_bits`.
pub fn parse(leaf_bits: u8, name: &str) -> Option<LeafName> {
    let b = name.as_bytes();
    let w = crate::geometry::hex_width(leaf_bits);
    if b.len() != w + LEAF_FIXED_LEN {
        return None;
    }
    let low = parse_hex(&b[..w])?;
    if low >> leaf_bits != 0 {
        return None;
    }
    let kind = ObjectKind::from_code(b[w])?;
    let field = |at: usize, len: usize| parse_hex(&b[w + at..w + at + len]);
    let mode = u32::try_from(field(1, 4)?).ok()?;
    if mode > MODE_MAX {
        return None;
    }
    let uid = u32::try_from(field(5, 8)?).ok()?;
    let gid = u32::try_from(field(13, 8)?).ok()?;
    let atime = Timestamp::from_nanos(field(21, 16)?);
    let mtime = Timestamp::from_nanos(field(37, 16)?);
    if field(53, 2)? != u64::from(NAME_VERSION) {
        return None;
    }
    Some(LeafName {
        low,
        attr: Attributes {
            kind,
            mode,
            uid,
            gid,
            atime,
            mtime,
        },
    })
}

/// True for names the store uses for temporary files (removed by recovery).
pub fn is_temp(name: &str) -> bool {
    name.starts_with('.')
}

/// The temporary name used while cloning into `dst_low`'s slot.
pub fn clone_temp(dst: u64) -> String {
    format!(".clone-{dst:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr() -> Attributes {
        Attributes {
            kind: ObjectKind::Directory,
            mode: 0o4755,
            uid: 0xdead_beef,
            gid: 7,
            atime: Timestamp {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
            mtime: Timestamp { secs: 0, nanos: 1 },
        }
    }

    #[test]
    fn encode_parse_round_trip_every_kind() {
        for kind in ObjectKind::ALL {
            let a = Attributes { kind, ..attr() };
            let n = encode(5, 0x1f, &a).unwrap();
            assert_eq!(n.len(), 2 + LEAF_FIXED_LEN);
            assert_eq!(parse(5, &n), Some(LeafName { low: 0x1f, attr: a }));
        }
    }

    #[test]
    fn encode_field_offsets_documented() {
        let n = encode(5, 3, &attr()).unwrap();
        assert_eq!(&n[0..2], "03");
        assert_eq!(&n[2..3], "d");
        assert_eq!(&n[3..7], "09ed");
        assert_eq!(&n[7..15], "deadbeef");
        assert_eq!(&n[15..23], "00000007");
        assert_eq!(&n[39..55], "0000000000000001");
        assert_eq!(&n[55..57], "01");
    }

    #[test]
    fn encode_bad_attributes_rejected() {
        let a = Attributes {
            mode: 0o10000,
            ..attr()
        };
        assert_eq!(encode(5, 0, &a), Err(NameError::Mode(0o10000)));
        let a = Attributes {
            mtime: Timestamp {
                secs: u64::MAX / 2,
                nanos: 0,
            },
            ..attr()
        };
        assert!(encode(5, 0, &a).is_err());
    }

    #[test]
    fn parse_hostile_names_none() {
        let good = encode(5, 3, &attr()).unwrap();
        let mut cases: Vec<String> = vec![
            String::new(),
            ".".into(),
            "..".into(),
            ".clone-3".into(),
            good[..good.len() - 1].into(),
            format!("{good}0"),
            good.to_uppercase(),
            good.replacen('d', "x", 1),
        ];
        // Low bits beyond leaf_bits (0x3f with 5 bits).
        cases.push(format!("3f{}", &good[2..]));
        // Mode beyond 0o7777.
        cases.push(format!("{}1fff{}", &good[..3], &good[7..]));
        // Wrong version.
        cases.push(format!("{}02", &good[..55]));
        // Non-ASCII of the right byte length.
        cases.push(format!("é{}", &good[2..]));
        for c in cases {
            assert_eq!(parse(5, &c), None, "{c:?}");
        }
        assert!(is_temp(&clone_temp(9)));
        assert!(!is_temp(&good));
    }

    proptest::proptest! {
        #[test]
        fn parse_random_strings_never_panics(s in "\\PC{0,80}", bits in 1u8..=16) {
            let _ = parse(bits, &s);
        }

        #[test]
        fn encode_parse_round_trip_random(
            bits in 1u8..=16,
            low in proptest::prelude::any::<u64>(),
            mode in 0u32..=0o7777,
            uid in proptest::prelude::any::<u32>(),
            gid in proptest::prelude::any::<u32>(),
            at in 0u64..u64::MAX / 2,
            mt in 0u64..u64::MAX / 2,
            k in 0usize..7,
        ) {
            let low = low & ((1u64 << bits) - 1);
            let a = Attributes {
                kind: ObjectKind::ALL[k],
                mode,
                uid,
                gid,
                atime: Timestamp::from_nanos(at),
                mtime: Timestamp::from_nanos(mt),
            };
            let n = encode(bits, low, &a).unwrap();
            proptest::prop_assert_eq!(n.len(), crate::geometry::hex_width(bits) + LEAF_FIXED_LEN);
            proptest::prop_assert_eq!(parse(bits, &n), Some(LeafName { low, attr: a }));
        }
    }
}
