//! The xenstored wire protocol (`io/xs_wire.h`), shared by the client and the simulated
//! daemon.
//!
//! Every message is a 16-byte header followed by `len` payload bytes, all native-endian:
//!
//! ```text
//! 0      4        8       12      16
//! | type | req_id | tx_id |  len  | payload (len ≤ 4096) ...
//! ```
//!
//! Payloads are NUL-separated strings: READ `path\0` → raw value; WRITE `path\0value`
//! (value not NUL-terminated) → `OK\0`; DIRECTORY `path\0` → `name\0name\0…`;
//! WATCH/UNWATCH `path\0token\0` → `OK\0`; WATCH_EVENT (unsolicited) `path\0token\0`;
//! TRANSACTION_START `\0` → `<id>\0`; TRANSACTION_END `T\0`/`F\0`; errors come back as type
//! ERROR with `E<NAME>\0`.

use std::io::{self, Read};

/// Header length.
pub const HEADER_LEN: usize = 16;
/// Largest payload xenstored accepts (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;

/// Message types used here (`enum xsd_sockmsg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MsgType {
    /// 1.
    Directory = 1,
    /// 2.
    Read = 2,
    /// 4.
    Watch = 4,
    /// 5.
    Unwatch = 5,
    /// 6.
    TransactionStart = 6,
    /// 7.
    TransactionEnd = 7,
    /// 10.
    GetDomainPath = 10,
    /// 11.
    Write = 11,
    /// 12.
    Mkdir = 12,
    /// 13.
    Rm = 13,
    /// 15: unsolicited.
    WatchEvent = 15,
    /// 16.
    Error = 16,
}

impl MsgType {
    /// Decodes a type number; types this crate never sends or serves give `None`.
    pub fn from_u32(v: u32) -> Option<MsgType> {
        Some(match v {
            1 => MsgType::Directory,
            2 => MsgType::Read,
            4 => MsgType::Watch,
            5 => MsgType::Unwatch,
            6 => MsgType::TransactionStart,
            7 => MsgType::TransactionEnd,
            10 => MsgType::GetDomainPath,
            11 => MsgType::Write,
            12 => MsgType::Mkdir,
            13 => MsgType::Rm,
            15 => MsgType::WatchEvent,
            16 => MsgType::Error,
            _ => return None,
        })
    }

    /// Name for error messages.
    pub fn name(self) -> &'static str {
        match self {
            MsgType::Directory => "DIRECTORY",
            MsgType::Read => "READ",
            MsgType::Watch => "WATCH",
            MsgType::Unwatch => "UNWATCH",
            MsgType::TransactionStart => "TRANSACTION_START",
            MsgType::TransactionEnd => "TRANSACTION_END",
            MsgType::GetDomainPath => "GET_DOMAIN_PATH",
            MsgType::Write => "WRITE",
            MsgType::Mkdir => "MKDIR",
            MsgType::Rm => "RM",
            MsgType::WatchEvent => "WATCH_EVENT",
            MsgType::Error => "ERROR",
        }
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Raw type number.
    pub msg_type: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Encodes into 16 native-endian bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.msg_type.to_ne_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        b[12..16].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    /// Decodes 16 bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let f = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            msg_type: f(0),
            req_id: f(4),
            tx_id: f(8),
            len: f(12),
        }
    }
}

/// One whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Header (its `len` equals `payload.len()`).
    pub header: Header,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Packet {
    /// Builds a message; `None` when the payload exceeds [`PAYLOAD_MAX`].
    pub fn new(msg_type: u32, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Option<Packet> {
        if payload.len() > PAYLOAD_MAX {
            return None;
        }
        Some(Packet {
            header: Header {
                msg_type,
                req_id,
                tx_id,
                len: payload.len() as u32,
            },
            payload,
        })
    }

    /// Header and payload as one buffer (the xenbus device wants one `write` per message).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.extend_from_slice(&self.header.encode());
        v.extend_from_slice(&self.payload);
        v
    }

    /// Reads one message. `Ok(None)` on a clean end of stream before a header;
    /// `InvalidData` for a payload length above [`PAYLOAD_MAX`].
    pub fn read_from(r: &mut dyn Read) -> io::Result<Option<Packet>> {
        let mut h = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match r.read(&mut h[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let header = Header::decode(&h);
        if header.len as usize > PAYLOAD_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "xenstore payload of {} bytes exceeds {PAYLOAD_MAX}",
                    header.len
                ),
            ));
        }
        let mut payload = vec![0u8; header.len as usize];
        r.read_exact(&mut payload)?;
        Ok(Some(Packet { header, payload }))
    }
}

/// Splits a payload into its NUL-terminated strings (a trailing piece without NUL is kept).
pub fn split_nul(payload: &[u8]) -> Vec<&[u8]> {
    if payload.is_empty() {
        return Vec::new();
    }
    let mut parts: Vec<&[u8]> = payload.split(|&b| b == 0).collect();
    if payload.last() == Some(&0) {
        parts.pop();
    }
    parts
}

/// `s` followed by a NUL.
pub fn nul_terminated(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p);
        v.push(0);
    }
    v
}

/// xenstored error names (the `E<NAME>` strings of `xsd_errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XsErrno {
    /// `ENOENT`: no such node.
    NoEnt,
    /// `EAGAIN`: transaction conflict, retry.
    Again,
    /// `EACCES`: permission denied.
    Acces,
    /// `EEXIST`.
    Exist,
    /// `EINVAL`.
    Inval,
    /// `EISDIR`.
    IsDir,
    /// `ENOSPC`.
    NoSpc,
    /// `EBUSY`.
    Busy,
    /// `E2BIG`.
    TooBig,
    /// `EQUOTA`.
    Quota,
    /// Anything else, as sent.
    Other(String),
}

impl XsErrno {
    /// Parses an ERROR payload (`ENOENT\0`).
    pub fn parse(payload: &[u8]) -> XsErrno {
        let name = String::from_utf8_lossy(split_nul(payload).first().copied().unwrap_or(b""))
            .into_owned();
        match name.as_str() {
            "ENOENT" => XsErrno::NoEnt,
            "EAGAIN" => XsErrno::Again,
            "EACCES" => XsErrno::Acces,
            "EEXIST" => XsErrno::Exist,
            "EINVAL" => XsErrno::Inval,
            "EISDIR" => XsErrno::IsDir,
            "ENOSPC" => XsErrno::NoSpc,
            "EBUSY" => XsErrno::Busy,
            "E2BIG" => XsErrno::TooBig,
            "EQUOTA" => XsErrno::Quota,
            _ => XsErrno::Other(name),
        }
    }

    /// The wire name.
    pub fn name(&self) -> &str {
        match self {
            XsErrno::NoEnt => "ENOENT",
            XsErrno::Again => "EAGAIN",
            XsErrno::Acces => "EACCES",
            XsErrno::Exist => "EEXIST",
            XsErrno::Inval => "EINVAL",
            XsErrno::IsDir => "EISDIR",
            XsErrno::NoSpc => "ENOSPC",
            XsErrno::Busy => "EBUSY",
            XsErrno::TooBig => "E2BIG",
            XsErrno::Quota => "EQUOTA",
            XsErrno::Other(s) => s,
        }
    }
}

impl std::fmt::Display for XsErrno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_roundtrip_native_endian_header() {
        let p = Packet::new(MsgType::Write as u32, 7, 3, b"a/b\0v".to_vec()).unwrap();
        let bytes = p.to_bytes();
        assert_eq!(&bytes[0..4], &11u32.to_ne_bytes());
        assert_eq!(&bytes[12..16], &5u32.to_ne_bytes());
        let back = Packet::read_from(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn packet_oversized_payload_rejected() {
        assert!(Packet::new(2, 0, 0, vec![0; PAYLOAD_MAX + 1]).is_none());
        let h = Header {
            msg_type: 2,
            req_id: 0,
            tx_id: 0,
            len: PAYLOAD_MAX as u32 + 1,
        };
        let e = Packet::read_from(&mut &h.encode()[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn packet_truncated_header_is_eof_error() {
        assert!(Packet::read_from(&mut &b""[..]).unwrap().is_none());
        let e = Packet::read_from(&mut &b"\x01\x00"[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn split_nul_names_and_errno_parse() {
        assert_eq!(split_nul(b"a\0bc\0"), vec![&b"a"[..], &b"bc"[..]]);
        assert_eq!(split_nul(b"p\0v"), vec![&b"p"[..], &b"v"[..]]);
        assert!(split_nul(b"").is_empty());
        assert_eq!(XsErrno::parse(b"ENOENT\0"), XsErrno::NoEnt);
        assert_eq!(XsErrno::parse(b"EWHAT\0"), XsErrno::Other("EWHAT".into()));
    }
}
