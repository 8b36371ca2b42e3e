//! Doorbells: how one ring end tells the other "I produced" or "I freed space", and how an
//! end waits for that without burning a CPU.
//!
//! A [`Doorbell`] has two halves: [`Doorbell::notify`] rings the *peer*, and
//! [`Doorbell::wait`] blocks until the peer rang *us* (or a condition holds, or a timeout).
//! Several threads of one end may wait at once (a connection's reader waits for requests
//! while its writer waits for reply space); a notification wakes all of them, and no
//! notification that arrives after a waiter's last check of its condition is lost.
//!
//! Implementations:
//! * [`FutexBell`]: two 32-bit sequence words in shared memory (one per direction) with
//!   futex wait/wake. Needs nothing but the shared mapping, so it is what `ring:PATH` files use
//!   between two processes on one host.
//! * [`EventFdBell`]: a pair of eventfds (ours, the peer's), for ends whose eventfds can be
//!   handed over (ivshmem-doorbell style, or tests). A Xen event channel is the same shape
//!   (the xen helper implements the trait on `/dev/xen/evtchn`).
//! * [`NoBell`]: pure polling (the [`Waiter`]'s sleep slices only).
//!
//! [`Waiter`] is the adaptive policy around a doorbell: check, spin for a short while, then
//! block on the doorbell in slices (`slice`) so a stop flag or a dead peer is noticed. The
//! spin is what makes a ring round trip cheaper than a socket's (no sleep, no wake-up on
//! either side: a 4 KiB read through envoyd in ~4 µs on an idle 2-CPU host, against ~13 µs
//! blocking), and it is only worth it while a CPU is free for each side, so it is bounded
//! three ways: a per-direction window that adapts like KVM's halt-polling (nothing is spent
//! on idle connections), at most one spinning thread per two CPUs per process, and no spin
//! at all while the host's runnable tasks outnumber its CPUs.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::unistd;

use crate::mem::SharedMem;
use crate::RingError;

/// Notification in both directions between the two ends of a ring.
pub trait Doorbell: Send + Sync {
    /// Tells the peer that something it may wait for changed (bytes produced or consumed).
    fn notify(&self) -> Result<(), RingError>;
    /// Returns when `ready()` is true, after the peer notified, or after `timeout`; the
    /// caller re-checks its condition in every case. A notification sent after `ready()`
    /// returned false must end the wait.
    fn wait(&self, ready: &mut dyn FnMut() -> bool, timeout: Duration) -> Result<(), RingError>;
    /// Tells the peer that space was freed (bytes consumed). Doorbells with one channel for
    /// everything (a Xen event channel) keep this default; a doorbell with a separate
    /// "space" channel spares the peer's *data* waiters a wake-up per consumed message.
    fn notify_space(&self) -> Result<(), RingError> {
        self.notify()
    }
    /// Waits for [`Doorbell::notify_space`] from the peer (a producer waiting for room), with
    /// the contract of [`Doorbell::wait`].
    fn wait_space(
        &self,
        ready: &mut dyn FnMut() -> bool,
        timeout: Duration,
    ) -> Result<(), RingError> {
        self.wait(ready, timeout)
    }
}

/// What a waiter waits for, i.e. which doorbell channel wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    /// Bytes to consume ([`Doorbell::wait`]).
    Data,
    /// Room to produce into ([`Doorbell::wait_space`]).
    Space,
}

/// No doorbell: waits are plain sleeps of at most 100 µs (polling).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBell;

impl Doorbell for NoBell {
    fn notify(&self) -> Result<(), RingError> {
        Ok(())
    }
    fn wait(&self, ready: &mut dyn FnMut() -> bool, timeout: Duration) -> Result<(), RingError> {
        if !ready() {
            std::thread::sleep(timeout.min(Duration::from_micros(100)));
        }
        Ok(())
    }
}

/// A futex doorbell in shared memory: `ours` is the sequence word the peer bumps to wake us,
/// `theirs` the one we bump to wake the peer. Each word is followed (at +4) by a waiter count,
/// so a notify makes a `FUTEX_WAKE` system call only when someone sleeps.
///
/// Protocol: a waiter increments its waiter count, loads its sequence word, checks its
/// condition and sleeps only while the word is unchanged; a notifier publishes its index
/// (Release), increments the peer's sequence word, then wakes if the waiter count is non-zero.
/// All of these are SeqCst, so either the notifier sees the waiter or the waiter sees the new
/// sequence/index. A hostile peer writing these words can only cause spurious or delayed
/// wake-ups (waits are bounded by the caller's timeout).
#[derive(Debug, Clone)]
pub struct FutexBell {
    mem: SharedMem,
    ours: usize,
    theirs: usize,
    /// Separate (ours, theirs) words for "space freed", if any.
    space: Option<(usize, usize)>,
}

impl FutexBell {
    /// A doorbell on the words at `ours` and `theirs` (each 8 bytes: sequence, waiters); data
    /// and space notifications share them.
    pub fn new(mem: SharedMem, ours: usize, theirs: usize) -> Result<FutexBell, RingError> {
        for off in [ours, theirs] {
            mem.atomic_u32(off)?;
            mem.atomic_u32(off + 4)?;
        }
        Ok(FutexBell {
            mem,
            ours,
            theirs,
            space: None,
        })
    }

    /// Adds a second pair of words (`ours_space`, `theirs_space`) for space notifications, so
    /// a consumer's "I freed space" does not wake the peer's threads waiting for data.
    pub fn with_space(mut self, ours_space: usize, theirs_space: usize) -> Result<Self, RingError> {
        for off in [ours_space, theirs_space] {
            self.mem.atomic_u32(off)?;
            self.mem.atomic_u32(off + 4)?;
        }
        self.space = Some((ours_space, theirs_space));
        Ok(self)
    }

    fn ring_word(&self, word: usize) -> Result<(), RingError> {
        self.mem.atomic_u32(word)?.fetch_add(1, Ordering::SeqCst);
        if self.mem.atomic_u32(word + 4)?.load(Ordering::SeqCst) != 0 {
            self.mem.futex_wake(word)?;
        }
        Ok(())
    }

    fn wait_word(
        &self,
        word: usize,
        ready: &mut dyn FnMut() -> bool,
        timeout: Duration,
    ) -> Result<(), RingError> {
        let waiters = self.mem.atomic_u32(word + 4)?;
        waiters.fetch_add(1, Ordering::SeqCst);
        let seq = self.mem.atomic_u32(word)?.load(Ordering::SeqCst);
        let r = if ready() {
            Ok(())
        } else {
            self.mem.futex_wait(word, seq, timeout)
        };
        waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

impl Doorbell for FutexBell {
    fn notify(&self) -> Result<(), RingError> {
        self.ring_word(self.theirs)
    }

    fn wait(&self, ready: &mut dyn FnMut() -> bool, timeout: Duration) -> Result<(), RingError> {
        self.wait_word(self.ours, ready, timeout)
    }

    fn notify_space(&self) -> Result<(), RingError> {
        self.ring_word(self.space.map_or(self.theirs, |s| s.1))
    }

    fn wait_space(
        &self,
        ready: &mut dyn FnMut() -> bool,
        timeout: Duration,
    ) -> Result<(), RingError> {
        self.wait_word(self.space.map_or(self.ours, |s| s.0), ready, timeout)
    }
}

/// An eventfd doorbell: `ours` becomes readable when the peer notifies; `theirs` is written to
/// notify the peer. One waiting thread at a time blocks in `poll`; the others wait on a
/// condition variable and are woken (with a generation bump) when the leader consumes a
/// notification, so concurrent waiters of one end never steal each other's wake-ups.
#[derive(Debug)]
pub struct EventFdBell {
    ours: OwnedFd,
    theirs: OwnedFd,
    state: Mutex<LeaderState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct LeaderState {
    leader: bool,
    generation: u64,
}

impl EventFdBell {
    /// Wraps two eventfds (`ours` is switched to non-blocking).
    pub fn new(ours: OwnedFd, theirs: OwnedFd) -> Result<EventFdBell, RingError> {
        let fd = ours.as_raw_fd();
        let fl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| RingError::Doorbell(e.into()))?;
        let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(fl))
            .map_err(|e| RingError::Doorbell(e.into()))?;
        Ok(EventFdBell {
            ours,
            theirs,
            state: Mutex::new(LeaderState::default()),
            cv: Condvar::new(),
        })
    }

    /// Two connected doorbells (frontend's, backend's) for both ends in one process.
    pub fn pair() -> Result<(EventFdBell, EventFdBell), RingError> {
        let mk = || {
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| RingError::Doorbell(e.into()))
        };
        let (a, b): (OwnedFd, OwnedFd) = (mk()?.into(), mk()?.into());
        let dup = |e: &OwnedFd| e.try_clone().map_err(RingError::Doorbell);
        Ok((
            EventFdBell::new(dup(&a)?, dup(&b)?)?,
            EventFdBell::new(b, a)?,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaderState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Doorbell for EventFdBell {
    fn notify(&self) -> Result<(), RingError> {
        match unistd::write(&self.theirs, &1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            // The counter is saturated: the peer has plenty of pending wake-ups.
            Err(nix::errno::Errno::EAGAIN) => Ok(()),
            Err(e) => Err(RingError::Doorbell(e.into())),
        }
    }

    fn wait(&self, ready: &mut dyn FnMut() -> bool, timeout: Duration) -> Result<(), RingError> {
        let g0 = self.lock().generation;
        if ready() {
            return Ok(());
        }
        let mut st = self.lock();
        if st.generation != g0 {
            return Ok(()); // a notification was consumed since we checked: re-check
        }
        if st.leader {
            let _ = self.cv.wait_timeout(st, timeout);
            return Ok(());
        }
        st.leader = true;
        drop(st);
        let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.ours.as_fd(), PollFlags::POLLIN)];
        let r = nix::poll::poll(&mut fds, PollTimeout::from(ms));
        let mut counter = [0u8; 8];
        let consumed = match unistd::read(self.ours.as_raw_fd(), &mut counter) {
            Ok(_) => true,
            Err(nix::errno::Errno::EAGAIN) => false,
            Err(e) => {
                let mut st = self.lock();
                st.leader = false;
                self.cv.notify_all();
                return Err(RingError::Doorbell(e.into()));
            }
        };
        let mut st = self.lock();
        st.leader = false;
        if consumed {
            st.generation = st.generation.wrapping_add(1);
        }
        self.cv.notify_all();
        match r {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(RingError::Doorbell(e.into())),
        }
    }
}

/// Adaptive waiting: spin while the peer is likely to answer soon, then block on the doorbell
/// in slices, re-checking a stop condition between slices.
///
/// The spin window adapts the way KVM's halt-polling does (`grow_halt_poll_ns`): a wait that
/// had to block but ended within `spin` would have been caught by spinning, so the window
/// doubles (from [`SPIN_GROW_START`] up to `spin`); a wait that lasted longer than `spin`
/// gained nothing from spinning, so the window drops to zero. A ping-pong peer (a client
/// waiting for its reply, a server reader waiting for a client that sends its next request
/// at once) keeps a full window and never sleeps; an idle connection, or a host so busy that
/// the peer is not running, stops spinning after one long wait. Each reader/writer owns its
/// own copy, so the window is per ring direction.
///
/// Unlike a vCPU, a waiter's own wake-up can be slower than the whole spin (a woken thread on
/// an idle VM waits ~90 µs for its halted vCPU), so "blocked and the wait was long" cannot
/// tell a slow peer from a slow wake-up, and a zero window would never grow back. So every
/// [`PROBE_EVERY`]th wait with a zero window spins the full `spin` once: if the answer comes
/// while spinning, the window is full again.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    /// Longest spin (re-checking with `spin_loop` hints) before blocking.
    pub spin: Duration,
    /// Longest single block on the doorbell before re-checking `closed`.
    pub slice: Duration,
    /// The current adaptive spin window (at most `spin`).
    window: Duration,
    /// Waits since the window became zero (see [`PROBE_EVERY`]).
    since_zero: u32,
}

/// With a zero window, one wait in this many spins the full `spin` as a probe.
pub const PROBE_EVERY: u32 = 32;

/// One wait's spin: when it began, how long it may spin, whether it had to block.
struct Spin {
    start: Instant,
    window: Duration,
    blocked: bool,
    /// This thread's place among the process's spinners, while it spins.
    slot: Option<SpinSlot>,
}

/// Threads of this process spinning right now (see [`SpinSlot`]).
static SPINNERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A place among the process's spinners: at most one per two CPUs (one on a 2-CPU host), so
/// the threads of a busy process (four clients, four ring readers) wait by sleeping while one
/// of them spins, instead of all spinning against each other's peers.
struct SpinSlot;

impl SpinSlot {
    fn take() -> Option<SpinSlot> {
        let max = (host_cpus() / 2).max(1);
        if SPINNERS.fetch_add(1, Ordering::AcqRel) < max {
            Some(SpinSlot)
        } else {
            SPINNERS.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }
}

impl Drop for SpinSlot {
    fn drop(&mut self) {
        SPINNERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Environment variable overriding the default spin (microseconds) of [`Waiter::default`].
pub const SPIN_ENV: &str = "ENVOY_RING_SPIN_US";

/// How often the host's run queue is sampled for [`cpus_idle_enough_to_spin`].
const LOAD_SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// Whether spinning can pay: the host's runnable tasks (the fourth field of `/proc/loadavg`,
/// the instantaneous count, including the caller) do not outnumber its CPUs. On a host whose
/// CPUs are all taken, a spinning waiter only keeps its peer — the one that would answer it —
/// off a CPU; measured on 2 CPUs under a build's load, spinning doubled a ring round trip.
/// Sampled at most every [`LOAD_SAMPLE_EVERY`] per process (one `pread` of a kept-open file,
/// a few µs);
/// without `/proc`, spinning is allowed.
fn cpus_idle_enough_to_spin() -> bool {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::OnceLock;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static LOADAVG: OnceLock<Option<std::fs::File>> = OnceLock::new();
    static NEXT_SAMPLE_NS: AtomicU64 = AtomicU64::new(0);
    static IDLE_ENOUGH: AtomicBool = AtomicBool::new(true);
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64;
    let next = NEXT_SAMPLE_NS.load(Ordering::Relaxed);
    let step = LOAD_SAMPLE_EVERY.as_nanos() as u64;
    if now < next
        || NEXT_SAMPLE_NS
            .compare_exchange(next, now + step, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return IDLE_ENOUGH.load(Ordering::Relaxed);
    }
    let file = LOADAVG.get_or_init(|| std::fs::File::open("/proc/loadavg").ok());
    let mut buf = [0u8; 128];
    let running = file
        .as_ref()
        .and_then(|f| f.read_at(&mut buf, 0).ok())
        .and_then(|n| runnable_tasks(buf.get(..n)?));
    let ok = running.is_none_or(|r| r <= host_cpus());
    IDLE_ENOUGH.store(ok, Ordering::Relaxed);
    ok
}

/// The CPUs this process may use, looked up once (`available_parallelism` reads cgroup files
/// on every call).
fn host_cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The runnable count of `/proc/loadavg` ("0.52 0.58 0.59 3/412 12345" → 3).
fn runnable_tasks(loadavg: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(loadavg).ok()?;
    let field = text.split_ascii_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// The first non-zero window after a short blocking wait.
pub const SPIN_GROW_START: Duration = Duration::from_micros(10);

impl Default for Waiter {
    /// At most 50 µs of adaptive spin when the host has at least 2 CPUs (a spinning thread on
    /// a 1-CPU host only delays the peer it waits for); `ENVOY_RING_SPIN_US` overrides.
    fn default() -> Waiter {
        let spin_us = std::env::var(SPIN_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(
                || match std::thread::available_parallelism().map(|n| n.get()) {
                    Ok(n) if n >= 2 => 50,
                    _ => 0,
                },
            );
        Waiter::new(
            Duration::from_micros(spin_us.min(10_000)),
            Duration::from_millis(50),
        )
    }
}

impl Waiter {
    /// A waiter that spins at most `spin` and blocks in slices of `slice`; the window starts
    /// full.
    pub fn new(spin: Duration, slice: Duration) -> Waiter {
        Waiter {
            spin,
            slice,
            window: spin,
            since_zero: 0,
        }
    }

    /// The spin window the next wait will use (before any probe).
    pub fn window(&self) -> Duration {
        self.window.min(self.spin)
    }

    /// The window for the next wait: the adaptive one, or the full spin as a probe after
    /// [`PROBE_EVERY`] waits with none.
    fn next_window(&mut self) -> Duration {
        let w = self.window();
        if w > Duration::ZERO || self.spin.is_zero() {
            return w;
        }
        self.since_zero += 1;
        if self.since_zero >= PROBE_EVERY {
            self.since_zero = 0;
            return self.spin;
        }
        Duration::ZERO
    }

    /// A wait ended while spinning: spinning pays here, so the window is full.
    fn hit(&mut self) {
        self.window = self.spin;
        self.since_zero = 0;
    }

    /// Adapts the window after a wait that blocked for a total of `waited`.
    fn adapt(&mut self, waited: Duration) {
        if waited <= self.spin {
            self.window = (self.window * 2).max(SPIN_GROW_START).min(self.spin);
        } else {
            self.window = Duration::ZERO;
        }
    }

    /// Polls `poll` until it yields `Some`, fails, `closed()` becomes true (→ `Ok(None)`), or
    /// `deadline` passes (→ `Ok(None)`); blocks on the doorbell's data channel.
    pub fn wait_for<T>(
        &mut self,
        bell: &dyn Doorbell,
        poll: impl FnMut() -> Result<Option<T>, RingError>,
        closed: &dyn Fn() -> bool,
        deadline: Option<Instant>,
    ) -> Result<Option<T>, RingError> {
        self.wait_for_kind(WaitKind::Data, bell, poll, closed, deadline)
    }

    /// [`Waiter::wait_for`] on the channel `kind`. The spin is a plain `spin_loop` (no
    /// `sched_yield`: on a busy host a yield can cost a whole scheduler slice).
    pub fn wait_for_kind<T>(
        &mut self,
        kind: WaitKind,
        bell: &dyn Doorbell,
        mut poll: impl FnMut() -> Result<Option<T>, RingError>,
        closed: &dyn Fn() -> bool,
        deadline: Option<Instant>,
    ) -> Result<Option<T>, RingError> {
        if let Some(v) = poll()? {
            return Ok(Some(v));
        }
        let mut window = self.next_window();
        let mut slot = None;
        if window > Duration::ZERO {
            slot = SpinSlot::take().filter(|_| cpus_idle_enough_to_spin());
            if slot.is_none() {
                window = Duration::ZERO;
            }
        }
        let mut spin = Spin {
            start: Instant::now(),
            window,
            blocked: false,
            slot,
        };
        let r = self.wait_loop(kind, bell, &mut poll, closed, deadline, &mut spin);
        if matches!(r, Ok(Some(_))) {
            if spin.blocked {
                self.adapt(spin.start.elapsed());
            } else if spin.window > Duration::ZERO {
                self.hit();
            }
        }
        r
    }

    /// Spins until `spin.window` after `spin.start`, then blocks in slices (noting it in
    /// `spin.blocked`).
    fn wait_loop<T>(
        &self,
        kind: WaitKind,
        bell: &dyn Doorbell,
        poll: &mut impl FnMut() -> Result<Option<T>, RingError>,
        closed: &dyn Fn() -> bool,
        deadline: Option<Instant>,
        spin: &mut Spin,
    ) -> Result<Option<T>, RingError> {
        loop {
            if let Some(v) = poll()? {
                return Ok(Some(v));
            }
            if closed() {
                return Ok(None);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            if now.duration_since(spin.start) < spin.window {
                std::hint::spin_loop();
                continue;
            }
            spin.blocked = true;
            spin.slot = None;
            let mut t = self.slice;
            if let Some(d) = deadline {
                t = t.min(d.saturating_duration_since(now));
            }
            // `poll` may have side effects (it can consume or produce a message), so a value
            // it yields inside the doorbell's readiness check is kept and returned, never
            // dropped and polled for again.
            let mut got: Option<T> = None;
            let mut failed = None;
            {
                let mut ready = || {
                    if got.is_some() || failed.is_some() {
                        return true;
                    }
                    match poll() {
                        Ok(Some(v)) => {
                            got = Some(v);
                            true
                        }
                        Ok(None) => closed(),
                        Err(e) => {
                            failed = Some(e);
                            true
                        }
                    }
                };
                match kind {
                    WaitKind::Data => bell.wait(&mut ready, t)?,
                    WaitKind::Space => bell.wait_space(&mut ready, t)?,
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if got.is_some() {
                return Ok(got);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    fn two_waiters_both_woken(a: Arc<dyn Doorbell>, b: Arc<dyn Doorbell>) {
        let flag = Arc::new(AtomicU32::new(0));
        let mut hs = Vec::new();
        for _ in 0..2 {
            let (a, flag) = (Arc::clone(&a), Arc::clone(&flag));
            hs.push(std::thread::spawn(move || {
                let mut w = Waiter::new(Duration::ZERO, Duration::from_secs(10));
                let t0 = Instant::now();
                let got = w
                    .wait_for(
                        &*a,
                        || Ok((flag.load(Ordering::SeqCst) != 0).then_some(())),
                        &|| false,
                        Some(Instant::now() + Duration::from_secs(20)),
                    )
                    .unwrap();
                (got, t0.elapsed())
            }));
        }
        std::thread::sleep(Duration::from_millis(50));
        flag.store(1, Ordering::SeqCst);
        b.notify().unwrap();
        for h in hs {
            let (got, took) = h.join().unwrap();
            assert_eq!(got, Some(()));
            assert!(
                took < Duration::from_secs(9),
                "woken by the doorbell, not a slice"
            );
        }
    }

    #[test]
    fn eventfd_bell_notify_wakes_every_waiter() {
        let (f, b) = EventFdBell::pair().unwrap();
        two_waiters_both_woken(Arc::new(f), Arc::new(b));
    }

    #[test]
    fn futex_bell_notify_wakes_every_waiter() {
        let m = SharedMem::anonymous(64).unwrap();
        let f = FutexBell::new(m.clone(), 0, 8).unwrap();
        let b = FutexBell::new(m, 8, 0).unwrap();
        two_waiters_both_woken(Arc::new(f), Arc::new(b));
    }

    /// The doorbell calls `ready` (and so `poll`) itself; a value produced there is the
    /// result, not lost (a poll that consumes a message must see each message exactly once).
    #[test]
    fn waiter_value_polled_inside_doorbell_wait_is_returned() {
        struct CallsReady;
        impl Doorbell for CallsReady {
            fn notify(&self) -> Result<(), RingError> {
                Ok(())
            }
            fn wait(
                &self,
                ready: &mut dyn FnMut() -> bool,
                _timeout: Duration,
            ) -> Result<(), RingError> {
                ready();
                Ok(())
            }
        }
        let mut w = Waiter::new(Duration::ZERO, Duration::from_millis(1));
        let mut queue = vec![3, 2, 1];
        let mut calls = 0;
        let mut poll = || {
            calls += 1;
            // Nothing on the first look (before the doorbell), then one value per poll.
            Ok(if calls == 1 { None } else { queue.pop() })
        };
        let got = w.wait_for(&CallsReady, &mut poll, &|| false, None).unwrap();
        assert_eq!(got, Some(1));
        assert_eq!(queue, vec![3, 2], "exactly one value consumed");
    }

    #[test]
    fn loadavg_runnable_field_parsed_and_garbage_refused() {
        assert_eq!(runnable_tasks(b"0.52 0.58 0.59 3/412 12345\n"), Some(3));
        assert_eq!(runnable_tasks(b"1.00 2.00 3.00 17/2000 1"), Some(17));
        assert_eq!(runnable_tasks(b"0.52 0.58"), None);
        assert_eq!(runnable_tasks(b"a b c x/y z"), None);
        assert_eq!(runnable_tasks(&[0xff, 0xfe]), None);
    }

    #[test]
    fn waiter_window_drops_after_long_wait_and_regrows_after_short_ones() {
        let us = Duration::from_micros;
        let mut w = Waiter::new(us(50), Duration::from_millis(1));
        assert_eq!(w.window(), us(50), "starts full");
        w.adapt(us(51));
        assert_eq!(
            w.window(),
            Duration::ZERO,
            "spinning would not have caught it"
        );
        let mut seen = Vec::new();
        for _ in 0..5 {
            w.adapt(us(30));
            seen.push(w.window());
        }
        assert_eq!(seen, vec![us(10), us(20), us(40), us(50), us(50)]);
        // With a zero window, every PROBE_EVERY-th wait spins the full window once.
        w.adapt(us(51));
        let windows: Vec<Duration> = (0..2 * PROBE_EVERY).map(|_| w.next_window()).collect();
        let probes: Vec<usize> = (0..windows.len())
            .filter(|&i| windows[i] == us(50))
            .collect();
        assert_eq!(
            probes,
            vec![PROBE_EVERY as usize - 1, 2 * PROBE_EVERY as usize - 1]
        );
        assert!(windows.iter().all(|&x| x == us(50) || x.is_zero()));
        w.hit();
        assert_eq!(
            w.next_window(),
            us(50),
            "a probe that caught its answer refills it"
        );
        let mut none = Waiter::new(Duration::ZERO, Duration::from_millis(1));
        none.adapt(Duration::ZERO);
        assert_eq!(none.window(), Duration::ZERO, "a zero maximum never spins");
    }

    #[test]
    fn waiter_closed_or_deadline_returns_none() {
        let mut w = Waiter::default();
        let r: Option<()> = w.wait_for(&NoBell, || Ok(None), &|| true, None).unwrap();
        assert_eq!(r, None);
        let r: Option<()> = w
            .wait_for(
                &NoBell,
                || Ok(None),
                &|| false,
                Some(Instant::now() + Duration::from_millis(5)),
            )
            .unwrap();
        assert_eq!(r, None);
    }
}
