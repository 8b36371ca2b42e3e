//! [`SharedMem`]: a window on memory shared with an untrusted peer. **The only `unsafe` in
//! this crate lives here.**
//!
//! Memory that another process, VM or domain can write at any moment is never turned into a
//! `&[u8]` or `&mut [u8]` (the compiler would be entitled to assume it does not change under
//! it). It is accessed only through:
//!
//! * 32-bit atomics for the ring indexes and control words ([`SharedMem::atomic_u32`]); an
//!   `AtomicU32` is interior-mutable, so a reference to one in shared memory is sound even while
//!   the peer writes it;
//! * copies between shared memory and private buffers ([`SharedMem::read`],
//!   [`SharedMem::write`]): volatile bytes up to 8 bytes, `memcpy` beyond (vm-memory's policy;
//!   see `volatile_copy_from` for why). The copied-out bytes are private from then on and are
//!   validated by the caller (the peer can change the ring after the copy; it cannot change
//!   our copy);
//! * futex wait/wake on a 32-bit word ([`SharedMem::futex_wait`], [`SharedMem::futex_wake`]),
//!   which is how two processes mapping the same file ring each other's doorbell.
//!
//! Every offset is bounds-checked against the window (a hostile index can only make a call
//! fail, never reach outside the mapping). Multi-byte values in shared memory are
//! little-endian by explicit conversion (`to_le`/`from_le`), which is the native order of every
//! Xen architecture the 9pfs transport runs on, so the layout matches Xen's native-endian
//! structs there.

use std::fmt;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use crate::RingError;

/// Keeps the memory behind a [`SharedMem`] alive (an mmap, a `Vec`, a grant mapping).
pub trait MemOwner: Send + Sync + 'static {}
impl<T: Send + Sync + 'static> MemOwner for T {}

/// A bounds-checked window `[ptr, ptr + len)` on memory that a peer may modify concurrently.
///
/// Cloning is cheap (the owner is reference-counted); sub-windows share the owner.
#[derive(Clone)]
pub struct SharedMem {
    ptr: *mut u8,
    len: usize,
    owner: Arc<dyn MemOwner>,
}

// SAFETY: SharedMem is a raw pointer plus an owner that keeps the memory mapped. Every access
// goes through atomics or volatile copies (never references to plain bytes), which are valid
// from any thread; the owner is Send + Sync by the MemOwner bound.
unsafe impl Send for SharedMem {}
// SAFETY: as above: no method hands out references to non-atomic shared bytes, and concurrent
// atomic/volatile accesses from several threads are what this type is for.
unsafe impl Sync for SharedMem {}

impl fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMem")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

/// Private, page-aligned, zeroed memory (tests, and both ring ends in one process).
struct HeapPages {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: HeapPages owns its allocation exclusively; it is only freed in Drop.
unsafe impl Send for HeapPages {}
// SAFETY: HeapPages itself never reads or writes the memory; SharedMem does, as described there.
unsafe impl Sync for HeapPages {}

impl Drop for HeapPages {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl SharedMem {
    /// Wraps raw memory.
    ///
    /// # Safety
    ///
    /// `ptr..ptr+len` must be readable and writable memory that stays mapped for as long as
    /// `owner` lives (the window keeps `owner` alive), and nothing in this process may hold a
    /// Rust reference (`&[u8]`/`&mut [u8]`) to it while any `SharedMem` over it exists. The
    /// peer (another process, VM or domain) may write it at any time; that is allowed.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize, owner: Arc<dyn MemOwner>) -> SharedMem {
        SharedMem { ptr, len, owner }
    }

    /// A shared read/write mapping of `len` bytes of `file` at `offset` (a `/dev/shm` file, a
    /// memfd, an ivshmem BAR's resource file). The file must already be at least that long.
    pub fn map_file(file: &std::fs::File, offset: u64, len: usize) -> Result<SharedMem, RingError> {
        let map = memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map_raw(file)
            .map_err(RingError::Map)?;
        let ptr = map.as_mut_ptr();
        // SAFETY: MmapRaw is a MAP_SHARED read/write mapping of exactly `len` bytes that stays
        // mapped until the MmapRaw (kept as the owner) is dropped; MmapRaw hands out only raw
        // pointers, and this crate never makes references to the bytes.
        Ok(unsafe { SharedMem::from_raw(ptr, len, Arc::new(map)) })
    }

    /// `len` bytes of private, zeroed, 4 KiB-aligned memory (both ring ends in one process).
    pub fn anonymous(len: usize) -> Result<SharedMem, RingError> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096)
            .map_err(|_| RingError::Layout("anonymous mapping too large"))?;
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(RingError::Layout("out of memory for an anonymous ring"));
        }
        let owner = Arc::new(HeapPages { ptr, layout });
        // SAFETY: the allocation is len bytes (or 1 when len is 0), zeroed, owned by `owner`,
        // and no reference to it exists.
        Ok(unsafe { SharedMem::from_raw(ptr, len, owner) })
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: usize, len: usize) -> Result<(), RingError> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(RingError::OutOfBounds {
                offset: off,
                len,
                size: self.len,
            }),
        }
    }

    /// The sub-window `[off, off + len)`.
    pub fn slice(&self, off: usize, len: usize) -> Result<SharedMem, RingError> {
        self.check(off, len)?;
        Ok(SharedMem {
            // SAFETY: off + len <= self.len (checked), so the result stays inside the window.
            ptr: unsafe { self.ptr.add(off) },
            len,
            owner: Arc::clone(&self.owner),
        })
    }

    /// The 32-bit atomic at `off` (4-byte aligned, inside the window). Values stored in it are
    /// little-endian: convert with `u32::to_le`/`u32::from_le` around every store and load.
    pub fn atomic_u32(&self, off: usize) -> Result<&AtomicU32, RingError> {
        self.check(off, 4)?;
        // SAFETY: in bounds (checked).
        let p = unsafe { self.ptr.add(off) };
        if (p as usize) % std::mem::align_of::<AtomicU32>() != 0 {
            return Err(RingError::Layout("misaligned 32-bit word in shared memory"));
        }
        // SAFETY: p is in bounds, aligned, and stays mapped while &self (which holds the owner)
        // lives. AtomicU32 is interior-mutable, so concurrent writes by the peer through its
        // own atomics are not undefined behaviour for this reference.
        Ok(unsafe { &*p.cast::<AtomicU32>() })
    }

    /// Copies `dst.len()` bytes at `off` out of shared memory (volatile reads).
    pub fn read(&self, off: usize, dst: &mut [u8]) -> Result<(), RingError> {
        self.check(off, dst.len())?;
        // SAFETY: the source range is inside the window (checked); it is only read with
        // volatile loads; dst is a private buffer that cannot overlap shared memory because
        // no references to shared memory exist.
        unsafe { volatile_copy_from(self.ptr.add(off), dst) };
        Ok(())
    }

    /// Copies `dst.len()` bytes at `off` into uninitialised private memory (so a receive
    /// buffer is not zeroed first only to be overwritten); every byte of `dst` is written.
    pub fn read_uninit(
        &self,
        off: usize,
        dst: &mut [std::mem::MaybeUninit<u8>],
    ) -> Result<(), RingError> {
        self.check(off, dst.len())?;
        // SAFETY: the source range is inside the window (checked) and disjoint from the
        // private dst; `MaybeUninit<u8>` has the layout of `u8` and writing it needs no
        // initialised value. Same copy policy as `read` (see `volatile_copy_from`).
        unsafe {
            let d = std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), dst.len());
            volatile_copy_from(self.ptr.add(off), d);
        }
        Ok(())
    }

    /// The window's first byte, for handing the window to the kernel as an I/O destination
    /// (`preadv2` straight into a reserved ring region). Getting the pointer is safe; whoever
    /// writes through it must keep to the window's length and to the ring's ownership rules.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Copies `src` into shared memory at `off` (volatile writes).
    pub fn write(&self, off: usize, src: &[u8]) -> Result<(), RingError> {
        self.check(off, src.len())?;
        // SAFETY: the destination range is inside the window (checked) and only written with
        // volatile stores; src is private memory (no references to shared memory exist).
        unsafe { volatile_copy_to(self.ptr.add(off), src) };
        Ok(())
    }

    /// Fills `[off, off + len)` with zeros.
    pub fn zero(&self, off: usize, len: usize) -> Result<(), RingError> {
        const Z: [u8; 4096] = [0; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(Z.len());
            self.write(off + done, Z.get(..n).unwrap_or(&Z))?;
            done += n;
        }
        Ok(())
    }

    /// Blocks while the word at `off` equals `expected`, at most `timeout` (a shared futex:
    /// works across processes that map the same file). Returns on a wake, a value change, a
    /// signal or the timeout; callers re-check their condition.
    pub fn futex_wait(
        &self,
        off: usize,
        expected: u32,
        timeout: Duration,
    ) -> Result<(), RingError> {
        let word = self.atomic_u32(off)?;
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT reads the aligned, mapped 32-bit word (checked by atomic_u32) and
        // the timespec, which lives on this stack frame for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
            )
        };
        if r == -1 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ETIMEDOUT) => {}
                _ => return Err(RingError::Doorbell(e)),
            }
        }
        Ok(())
    }

    /// Wakes every thread (in any process) blocked in [`SharedMem::futex_wait`] on `off`.
    pub fn futex_wake(&self, off: usize) -> Result<(), RingError> {
        let word = self.atomic_u32(off)?;
        // SAFETY: FUTEX_WAKE only uses the address of the aligned, mapped word as a key.
        let r =
            unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
        if r == -1 {
            return Err(RingError::Doorbell(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Copy from shared memory into a private buffer.
///
/// Copies of up to 8 bytes are volatile byte loads; longer ones are one `memcpy`
/// (`copy_nonoverlapping`), the policy of rust-vmm's vm-memory for guest memory: a volatile
/// word loop runs at a quarter of memcpy's speed (4.6 vs 16.5 GB/s measured here, 512 KiB),
/// and the only effect a peer writing the range meanwhile can have is garbage in `dst` — the
/// destination is private and the caller validates what it parses from it. No reference to
/// the shared bytes is ever formed, so the compiler cannot assume they are stable.
///
/// # Safety
///
/// `src..src + dst.len()` must be mapped and readable, and must not overlap `dst`.
unsafe fn volatile_copy_from(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    if n > 8 {
        // SAFETY: the source range is mapped (caller) and disjoint from the private dst.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), n) };
        return;
    }
    for (i, d) in dst.iter_mut().enumerate() {
        // SAFETY: i < n: inside the caller's source range.
        *d = unsafe { std::ptr::read_volatile(src.add(i)) };
    }
}

/// Copy from a private buffer into shared memory (the mirror of [`volatile_copy_from`]).
///
/// # Safety
///
/// `dst..dst + src.len()` must be mapped and writable, and must not overlap `src`.
unsafe fn volatile_copy_to(dst: *mut u8, src: &[u8]) {
    let n = src.len();
    if n > 8 {
        // SAFETY: the destination range is mapped (caller) and disjoint from the private src.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, n) };
        return;
    }
    for (i, b) in src.iter().enumerate() {
        // SAFETY: i < n: inside the caller's destination range.
        unsafe { std::ptr::write_volatile(dst.add(i), *b) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_mem_read_write_roundtrip_at_every_alignment() {
        let m = SharedMem::anonymous(256).unwrap();
        for off in 0..17 {
            for len in [0usize, 1, 7, 8, 9, 31, 64] {
                let src: Vec<u8> = (0..len).map(|i| (i * 7 + off) as u8).collect();
                m.write(off, &src).unwrap();
                let mut dst = vec![0u8; len];
                m.read(off, &mut dst).unwrap();
                assert_eq!(dst, src, "off {off} len {len}");
            }
        }
    }

    /// `cargo test --release -p envoy-ring copy_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing probe, not a check"]
    fn copy_speed_probe() {
        let n = 512 * 1024;
        let m = SharedMem::anonymous(n).unwrap();
        let src = vec![7u8; n];
        let mut dst = vec![0u8; n];
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            m.write(0, &src).unwrap();
            m.read(0, &mut dst).unwrap();
        }
        let gbs = 2.0 * 2000.0 * n as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            dst.copy_from_slice(&src);
            std::hint::black_box(&mut dst);
        }
        let memcpy = 2000.0 * n as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("shared-memory copy {gbs:.1} GB/s, plain memcpy {memcpy:.1} GB/s");
    }

    #[test]
    fn shared_mem_out_of_bounds_access_is_error() {
        let m = SharedMem::anonymous(64).unwrap();
        assert!(m.read(60, &mut [0u8; 8]).is_err());
        assert!(m.write(usize::MAX, &[1]).is_err());
        assert!(m.atomic_u32(62).is_err());
        assert!(m.atomic_u32(2).is_err(), "misaligned");
        assert!(m.slice(32, 33).is_err());
        let s = m.slice(32, 32).unwrap();
        s.write(0, &[9; 32]).unwrap();
        let mut b = [0u8; 1];
        m.read(63, &mut b).unwrap();
        assert_eq!(b, [9]);
    }
}
