//! Request handlers, one file per group of 9P messages; [`dispatch`] is the one table from
//! message to handler. Every handler returns `FsResult<Message>`; the worker turns an error
//! into `Rlerror`/`Rerror` through [`crate::errno`].

pub mod attach;
pub mod attr;
pub mod dir;
pub mod file;
pub mod link;
pub mod lock;
pub mod statfs;
pub mod walk;
pub mod xattr;

use std::sync::Arc;

use envoy_proto::Message;

use crate::error::{FsError, FsResult};
use crate::session::Conn;

/// The fid a request is about, for its tracing span.
pub fn request_fid(m: &Message) -> Option<envoy_proto::Fid> {
    Some(match m {
        Message::Tattach(x) => x.fid,
        Message::Twalk(x) => x.fid,
        Message::Tclunk(x) => x.fid,
        Message::Tremove(x) => x.fid,
        Message::Tlopen(x) => x.fid,
        Message::Tlcreate(x) => x.fid,
        Message::Topen(x) => x.fid,
        Message::Tcreate(x) => x.fid,
        Message::Tread(x) => x.fid,
        Message::Twrite(x) => x.fid,
        Message::Tfsync(x) => x.fid,
        Message::Treaddir(x) => x.fid,
        Message::Tmkdir(x) => x.dfid,
        Message::Tunlinkat(x) => x.dirfid,
        Message::Tgetattr(x) => x.fid,
        Message::Tsetattr(x) => x.fid,
        Message::Tstat(x) => x.fid,
        Message::Twstat(x) => x.fid,
        Message::Tsymlink(x) => x.fid,
        Message::Treadlink(x) => x.fid,
        Message::Tmknod(x) => x.dfid,
        Message::Tlink(x) => x.dfid,
        Message::Trename(x) => x.fid,
        Message::Trenameat(x) => x.olddirfid,
        Message::Txattrwalk(x) => x.fid,
        Message::Txattrcreate(x) => x.fid,
        Message::Tlock(x) => x.fid,
        Message::Tgetlock(x) => x.fid,
        Message::Tstatfs(x) => x.fid,
        _ => return None,
    })
}

/// Runs one request.
pub fn dispatch(c: &Arc<Conn>, msg: Message) -> FsResult<Message> {
    if let Some(reply) = crate::access::auth::intercept(c, &msg) {
        return reply;
    }
    let msg = if c.fids.has_synthetic() {
        match crate::ctl_tree::route(c, msg) {
            crate::ctl_tree::Routed::Ctl(reply) => return reply,
            crate::ctl_tree::Routed::Pass(msg) => msg,
        }
    } else {
        msg
    };
    match msg {
        Message::Tauth(m) => attach::auth(c, m),
        Message::Tattach(m) => attach::attach(c, m),
        Message::Twalk(m) => walk::walk(c, m),
        Message::Tclunk(m) => walk::clunk(c, m),
        Message::Tremove(m) => file::remove(c, m),
        Message::Tlopen(m) => file::lopen(c, m),
        Message::Tlcreate(m) => file::lcreate(c, m),
        Message::Topen(m) => file::open(c, m),
        Message::Tcreate(m) => file::create(c, m),
        Message::Tread(m) => file::read(c, m),
        Message::Twrite(m) => file::write(c, m),
        Message::Tfsync(m) => file::fsync(c, m),
        Message::Treaddir(m) => dir::readdir(c, m),
        Message::Tmkdir(m) => dir::mkdir(c, m),
        Message::Tunlinkat(m) => dir::unlinkat(c, m),
        Message::Tgetattr(m) => attr::getattr(c, m),
        Message::Tsetattr(m) => attr::setattr(c, m),
        Message::Tstat(m) => attr::stat(c, m),
        Message::Twstat(m) => attr::wstat(c, m),
        Message::Tsymlink(m) => link::symlink(c, m),
        Message::Treadlink(m) => link::readlink(c, m),
        Message::Tmknod(m) => link::mknod(c, m),
        Message::Tlink(m) => link::link(c, m),
        Message::Trename(m) => link::rename(c, m),
        Message::Trenameat(m) => link::renameat(c, m),
        Message::Txattrwalk(m) => xattr::xattrwalk(c, m),
        Message::Txattrcreate(m) => xattr::xattrcreate(c, m),
        Message::Tlock(m) => lock::lock(c, m),
        Message::Tgetlock(m) => lock::getlock(c, m),
        Message::Tstatfs(m) => statfs::statfs(c, m),
        other => {
            tracing::debug!(msg = other.name(), "not a request this server handles");
            Err(FsError::NotSupported("message type"))
        }
    }
}
