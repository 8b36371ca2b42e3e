//! The takeover watchdog: a connection's reader never stays stuck behind one request.
//!
//! The reader runs the last request of each read itself (see [`super`]), letting go of the
//! read side while it does. Almost always that request ends within microseconds and the
//! reader takes the read side back. If it is still running after [`AFTER`] — waiting for a
//! lock that a long operation holds, for a thaw, for a slow disk — the watchdog starts a new
//! thread that takes the read side and goes on serving the connection's other requests; the
//! stuck thread steps aside when its request ends. The watchdog itself wakes every
//! [`TICK`] while requests run inline anywhere, and every [`IDLE_TICK`] otherwise; it never
//! touches the request path (one atomic store before and after each inline request).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::Conn;
use crate::server::Shared;

/// An inline request running longer than this gets its connection a new reader.
pub const AFTER: Duration = Duration::from_millis(2);
/// Watchdog period while requests run inline.
pub const TICK: Duration = Duration::from_millis(1);
/// Watchdog period when nothing runs inline.
pub const IDLE_TICK: Duration = Duration::from_millis(20);

/// `inline_since` value of a request whose connection was already taken over.
const TAKEN: u64 = u64::MAX;

/// Requests running inline in this process, on every connection.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the process's epoch, never 0.
fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros())
        .unwrap_or(TAKEN - 1)
        .max(1)
}

/// Runs `f` (a request) on the reader's thread, visible to the watchdog meanwhile. With
/// `cork`, replies it sends are queued but not sent ([`super::reply::Replies::flush`] sends
/// them).
pub fn run_inline(c: &Conn, cork: bool, f: impl FnOnce()) {
    RUNNING.fetch_add(1, Ordering::Relaxed);
    c.inline_since.store(now_us(), Ordering::Release);
    super::reply::set_cork(cork);
    f();
    super::reply::set_cork(false);
    c.inline_since.store(0, Ordering::Release);
    RUNNING.fetch_sub(1, Ordering::Relaxed);
}

/// Starts the watchdog of a server; it ends when `stop` is set or the server is gone.
pub fn start(shared: Weak<Shared>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("envoyd-takeover".into())
        .spawn(move || watch(&shared, &stop))
        .map(|_| ())
}

fn watch(shared: &Weak<Shared>, stop: &AtomicBool) {
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if RUNNING.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(IDLE_TICK);
            continue;
        }
        let Some(sh) = shared.upgrade() else {
            return;
        };
        let limit = u64::try_from(AFTER.as_micros()).unwrap_or(u64::MAX);
        let now = now_us();
        for c in sh.sessions() {
            let since = c.inline_since.load(Ordering::Acquire);
            if since == 0 || since == TAKEN || now.saturating_sub(since) < limit {
                continue;
            }
            if c.inline_since
                .compare_exchange(since, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                take_over(c);
            }
        }
        drop(sh);
        std::thread::sleep(TICK);
    }
}

/// Starts a thread that takes `c`'s read side (if nobody holds it) and serves requests.
fn take_over(c: Arc<Conn>) {
    tracing::debug!(
        conn = c.id,
        "a request runs long; a new thread reads the connection"
    );
    let span = tracing::info_span!("conn", id = c.id, peer = %c.peer);
    let r = std::thread::Builder::new()
        .name(format!("envoyd-conn{}", c.id))
        .spawn(move || {
            let _e = span.enter();
            super::read_requests(&c);
        });
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot start a takeover reader; the connection waits");
    }
}
