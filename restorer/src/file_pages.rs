//! A piece of a pages file in cryo's memory, as the source of UFFDIO_COPY:
//! mapped where it can be, so that its pages go from the page cache into the
//! process in one copy.

use nix::errno::Errno;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// A read-only mapping of part of a pages file.
pub(crate) struct FileMap {
    ptr: *const u8,
    len: usize,
}

impl FileMap {
    fn new(f: &File, offset: u64, len: u64) -> Result<FileMap, Errno> {
        // SAFETY: a fresh private read-only mapping of a file cryo holds open;
        // nothing else refers to this address range, and Drop unmaps it.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len as usize, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_POPULATE, f.as_raw_fd(), offset as libc::off_t)
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(FileMap { ptr: p as *const u8, len: len as usize })
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// `len` bytes of a pages file at `offset`, in cryo's memory.
pub(crate) enum FileBytes<'b> {
    Mapped(FileMap),
    Read(&'b [u8]),
}

impl FileBytes<'_> {
    /// Mapped, or read into `buf`: a 32-bit off_t (glibc on ARMv7) cannot map
    /// offsets past 2 GiB, and a mapping needs a page-aligned offset.
    pub(crate) fn of<'b>(f: &File, offset: u64, len: u64, buf: &'b mut Vec<u8>) -> Result<FileBytes<'b>, Errno> {
        let ps = cryo_tracer::arch::page_size();
        if offset <= libc::off_t::MAX as u64 && offset.is_multiple_of(ps) {
            return FileMap::new(f, offset, len).map(FileBytes::Mapped);
        }
        buf.resize(len as usize, 0);
        f.read_exact_at(buf, offset).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(FileBytes::Read(buf))
    }

    pub(crate) fn ptr(&self) -> *const u8 {
        match self {
            FileBytes::Mapped(m) => m.ptr,
            FileBytes::Read(b) => b.as_ptr(),
        }
    }

    /// Its bytes from `from` on, `len` of them.
    pub(crate) fn bytes(&self, from: u64, len: u64) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => {
                // SAFETY: the mapping is `m.len` readable bytes, alive as
                // long as `self`, of an image file no one writes (the user's,
                // its length checked against its header). Were another
                // program to truncate it meanwhile, the read would fault
                // (SIGBUS), as in any program reading a mapped file.
                let all = unsafe { std::slice::from_raw_parts(m.ptr, m.len) };
                &all[from as usize..(from + len) as usize]
            }
            FileBytes::Read(b) => &b[from as usize..(from + len) as usize],
        }
    }
}
