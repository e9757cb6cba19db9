//! userfaultfd's ABI, and a userfaultfd a target made as cryo holds it (a
//! copy taken with pidfd_getfd): its ioctls act on the memory of the process
//! that made it, whoever calls them. Used for write tracking (checkpoint
//! --track) and lazy restart.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};

pub const UFFD_USER_MODE_ONLY: u64 = 1;
pub const UFFD_API: u64 = 0xAA;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
pub const UFFDIO_API: u64 = 0xC018_AA3F;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
pub const UFFDIO_REGISTER: u64 = 0xC020_AA00;
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
pub const UFFDIO_REGISTER_MODE_WP: u64 = 2;
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `_IOR(0xAA, 0x02, struct uffdio_range)`.
const UFFDIO_WAKE: u64 = 0x8010_AA02;
/// `_IOWR(0xAA, 0x03, struct uffdio_copy)`.
const UFFDIO_COPY: u64 = 0xC028_AA03;
/// `_IOWR(0xAA, 0x04, struct uffdio_zeropage)`.
const UFFDIO_ZEROPAGE: u64 = 0xC020_AA04;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `struct uffd_msg`.
const MSG_SIZE: usize = 32;

pub struct Uffd(pub OwnedFd);

/// Whether this process may make a userfaultfd (user-mode-only, Linux 5.11+).
pub fn available() -> bool {
    // SAFETY: userfaultfd takes no memory arguments; the fd is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, (UFFD_USER_MODE_ONLY as libc::c_long) | libc::O_CLOEXEC as libc::c_long) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just made here and nothing else holds it.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

/// How far an UFFDIO_COPY got.
pub enum Copied {
    All,
    /// Stopped at a page that is already there, after this many bytes.
    Exists(u64),
    /// The range is no longer registered (unmapped or moved meanwhile).
    Gone,
    /// The process's memory is gone (it exited or ran execve).
    MmGone,
}

impl Uffd {
    /// ioctl with an argument struct of u64 words, read back after the call.
    fn ioctl(&self, req: u64, words: &mut [u64]) -> Result<(), Errno> {
        // SAFETY: `words` is the argument struct `req` takes (its size is encoded
        // in `req` and matches each caller's array), alive for the call.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), req as _, words.as_mut_ptr()) };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }

    /// Copy `len` bytes from this process's `src` to `dst` in the target and
    /// wake whoever waits there.
    pub fn copy(&self, dst: u64, src: *const u8, len: u64) -> Result<Copied, Errno> {
        loop {
            let mut a = [dst, src as u64, len, 0, 0];
            match self.ioctl(UFFDIO_COPY, &mut a) {
                Ok(()) => return Ok(Copied::All),
                Err(Errno::EAGAIN) if a[4] as i64 > 0 => {
                    // Partly done while the process's mappings changed: go on from there.
                    let n = a[4];
                    return match self.copy(dst + n, src.wrapping_add(n as usize), len - n)? {
                        Copied::Exists(m) => Ok(Copied::Exists(n + m)),
                        other => Ok(other),
                    };
                }
                Err(Errno::EAGAIN) => continue,
                Err(Errno::EEXIST) => return Ok(Copied::Exists((a[4] as i64).max(0) as u64)),
                Err(Errno::ENOENT) => return Ok(Copied::Gone),
                Err(Errno::ESRCH) => return Ok(Copied::MmGone),
                Err(e) => return Err(e),
            }
        }
    }

    /// A page that no image holds: zeros, as the kernel would have given it.
    pub fn zeropage(&self, dst: u64, len: u64) -> Result<(), Errno> {
        let mut a = [dst, len, 0, 0];
        match self.ioctl(UFFDIO_ZEROPAGE, &mut a) {
            Ok(()) | Err(Errno::EEXIST) | Err(Errno::ENOENT) | Err(Errno::ESRCH) => {}
            Err(Errno::EAGAIN) => return self.zeropage(dst, len),
            Err(e) => return Err(e),
        }
        // The page may have come while the fault was queued.
        let mut r = [dst, len];
        match self.ioctl(UFFDIO_WAKE, &mut r) {
            Ok(()) | Err(Errno::ENOENT) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Addresses of the page faults waiting now (none if nothing waits).
    pub fn faults(&self, out: &mut Vec<u64>) -> Result<(), Errno> {
        let mut buf = [0u8; MSG_SIZE * 16];
        loop {
            // SAFETY: buf is writable for its whole length.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return match Errno::last() {
                    Errno::EAGAIN => Ok(()),
                    Errno::EINTR => continue,
                    e => Err(e),
                };
            }
            for m in buf[..n as usize].chunks_exact(MSG_SIZE) {
                if m[0] == UFFD_EVENT_PAGEFAULT {
                    out.push(u64::from_le_bytes(m[16..24].try_into().expect("8 bytes")));
                }
            }
            if (n as usize) < buf.len() {
                return Ok(());
            }
        }
    }
}
