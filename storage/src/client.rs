//! A small blocking client for the storage service: one request at a time, one method per
//! message. Used by the server tests and tools; the envoy's own "top half" builds on the same
//! codec.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use envoy_proto::{
    decode, encode_parts, Dialect, FrameSplitter, Message, Tag, Tsclone, Tscreate, Tsdelete,
    Tsread, Tsreserve, Tsstat, Tssync, Tswrite, Tswstat, Tversion, VERSION_STORAGE,
};

use crate::object::{AttrChange, Attributes, IdRange, ObjectId, ObjectStat};
use crate::wire::{self, Endpoint, Stream};

/// What can go wrong talking to a storage server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("connection error")]
    Io(#[from] io::Error),
    /// The server sent a frame that does not decode.
    #[error("undecodable reply")]
    Decode(#[from] envoy_proto::DecodeError),
    /// The server's framing is broken.
    #[error("broken framing from server")]
    Frame(#[from] envoy_proto::FrameError),
    /// A request could not be encoded (e.g. larger than msize).
    #[error("cannot encode request")]
    Encode(#[from] envoy_proto::EncodeError),
    /// The server answered with an error.
    #[error("server error: {}", io::Error::from_raw_os_error(*ecode as i32))]
    Remote {
        /// Linux errno.
        ecode: u32,
    },
    /// The server answered with the wrong message or refused the version.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A reply field that does not map back (e.g. an invalid kind).
    #[error("bad reply")]
    BadReply(#[from] crate::StoreError),
}

impl ClientError {
    /// The server's errno, if this is a remote error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ClientError::Remote { ecode } => Some(*ecode as i32),
            _ => None,
        }
    }
}

/// A connection to a storage server, after the version handshake.
#[derive(Debug)]
pub struct StorageClient {
    stream: Stream,
    msize: u32,
    next_tag: u16,
    buf: BytesMut,
}

impl StorageClient {
    /// Connects and negotiates `"Envoy.storage.1"` with the given msize.
    pub fn connect(ep: &Endpoint, msize: u32) -> Result<Self, ClientError> {
        let stream = Stream::connect(ep)?;
        let mut c = StorageClient {
            stream,
            msize,
            next_tag: 0,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let reply = c.call_tag(
            Tag::NOTAG,
            Tversion {
                msize,
                version: VERSION_STORAGE.into(),
            }
            .into(),
        )?;
        match reply {
            Message::Rversion(v) if v.version == VERSION_STORAGE && v.msize <= msize => {
                c.msize = v.msize;
                Ok(c)
            }
            Message::Rversion(v) => Err(ClientError::Protocol(format!(
                "version refused: server answered {} with msize {} (asked {msize})",
                v.version, v.msize
            ))),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Connects over TCP.
    pub fn connect_tcp(addr: std::net::SocketAddr) -> Result<Self, ClientError> {
        Self::connect(&Endpoint::Tcp(addr), 1 << 20)
    }

    /// Connects over a Unix socket.
    pub fn connect_unix(path: &std::path::Path) -> Result<Self, ClientError> {
        Self::connect(&Endpoint::Unix(path.to_path_buf()), 1 << 20)
    }

    /// The negotiated msize.
    pub fn msize(&self) -> u32 {
        self.msize
    }

    /// Largest payload of one read or write on this connection.
    pub fn max_io(&self) -> usize {
        self.msize.saturating_sub(32) as usize
    }

    /// Sends one request and returns the reply (an `Rlerror` becomes [`ClientError::Remote`]).
    pub fn call(&mut self, msg: Message) -> Result<Message, ClientError> {
        self.next_tag = (self.next_tag + 1) % 0xffff;
        self.call_tag(Tag(self.next_tag), msg)
    }

    fn call_tag(&mut self, tag: Tag, msg: Message) -> Result<Message, ClientError> {
        let mut head = BytesMut::new();
        let parts = encode_parts(tag, &msg, Dialect::Storage, self.msize, &mut head)?;
        wire::write_frame(&mut self.stream, &head, parts.payload.as_deref())?;
        let splitter = FrameSplitter::new(self.msize);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(frame) = splitter.next_frame(&mut self.buf)? {
                let f = decode(frame, Dialect::Storage, self.msize)?;
                if f.tag != tag {
                    return Err(ClientError::Protocol(format!(
                        "reply tag {} for request tag {tag}",
                        f.tag
                    )));
                }
                return match f.msg {
                    Message::Rlerror(e) => Err(ClientError::Remote { ecode: e.ecode }),
                    m => Ok(m),
                };
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn unexpected(m: Message) -> ClientError {
        ClientError::Protocol(format!("unexpected reply {}", m.name()))
    }

    /// Reserves `count` IDs.
    pub fn reserve(&mut self, count: u64) -> Result<IdRange, ClientError> {
        match self.call(Tsreserve { count }.into())? {
            Message::Rsreserve(r) => Ok(IdRange {
                first: ObjectId(r.first),
                count: r.count,
            }),
            m => Err(Self::unexpected(m)),
        }
    }

    /// Creates an object.
    pub fn create(&mut self, id: ObjectId, attr: &Attributes) -> Result<ObjectStat, ClientError> {
        let attr = wire::attr_to_wire(attr);
        match self.call(Tscreate { id: id.0, attr }.into())? {
            Message::Rscreate(r) => Ok(wire::stat_from_wire(&r.stat)?),
            m => Err(Self::unexpected(m)),
        }
    }

    /// Clones `src` to `dst`.
    pub fn clone_object(
        &mut self,
        src: ObjectId,
        dst: ObjectId,
    ) -> Result<ObjectStat, ClientError> {
        match self.call(
            Tsclone {
                src: src.0,
                dst: dst.0,
            }
            .into(),
        )? {
            Message::Rsclone(r) => Ok(wire::stat_from_wire(&r.stat)?),
            m => Err(Self::unexpected(m)),
        }
    }

    /// Reads up to `count` bytes.
    pub fn read(&mut self, id: ObjectId, offset: u64, count: u32) -> Result<Bytes, ClientError> {
        match self.call(
            Tsread {
                id: id.0,
                offset,
                count,
            }
            .into(),
        )? {
            Message::Rsread(r) => Ok(r.data),
            m => Err(Self::unexpected(m)),
        }
    }

    /// Writes `data`.
    pub fn write(&mut self, id: ObjectId, offset: u64, data: Bytes) -> Result<u32, ClientError> {
        match self.call(
            Tswrite {
                id: id.0,
                offset,
                data,
            }
            .into(),
        )? {
            Message::Rswrite(r) => Ok(r.count),
            m => Err(Self::unexpected(m)),
        }
    }

    /// Stats an object.
    pub fn stat(&mut self, id: ObjectId) -> Result<ObjectStat, ClientError> {
        match self.call(Tsstat { id: id.0 }.into())? {
            Message::Rsstat(r) => Ok(wire::stat_from_wire(&r.stat)?),
            m => Err(Self::unexpected(m)),
        }
    }

    /// Changes attributes and/or size.
    pub fn wstat(&mut self, id: ObjectId, change: &AttrChange) -> Result<ObjectStat, ClientError> {
        let (valid, attr, size) = wire::change_to_wire(change);
        match self.call(
            Tswstat {
                id: id.0,
                valid,
                attr,
                size,
            }
            .into(),
        )? {
            Message::Rswstat(r) => Ok(wire::stat_from_wire(&r.stat)?),
            m => Err(Self::unexpected(m)),
        }
    }

    /// Deletes an object.
    pub fn delete(&mut self, id: ObjectId) -> Result<(), ClientError> {
        match self.call(Tsdelete { id: id.0 }.into())? {
            Message::Rsdelete(_) => Ok(()),
            m => Err(Self::unexpected(m)),
        }
    }

    /// Makes an object durable.
    pub fn sync(&mut self, id: ObjectId) -> Result<(), ClientError> {
        match self.call(Tssync { id: id.0 }.into())? {
            Message::Rssync(_) => Ok(()),
            m => Err(Self::unexpected(m)),
        }
    }
}
