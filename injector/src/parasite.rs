//! The parasite blob inside a target: loading it into a memfd mapped shared by
//! the tracer and the target, running commands, streaming pages, unloading.

use crate::batch::{Batch, BatchOutput};
use crate::blob::BlobLayout;
use crate::remote::Remote;
use crate::{InjectError, Result};
use cryo_parasite::abi::{self, CmdHeader, IoVec, SyscallEntry};
use cryo_tracer::arch::{Arch, Native, Sysno};
use cryo_tracer::{fault, proc, ptrace, Seized};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

pub struct Parasite {
    pub base: u64,
    pub size: u64,
    /// The tracer's view of the same memory.
    local: SharedMap,
    entry: u64,
    cmd_off: usize,
    stack_top: u64,
    gadget: u64,
    /// Pipes for pages: the target holds the write ends, we the read ends.
    pipe: Option<PagePipes>,
    /// The mlockall(2) flags for mappings yet to come (MCL_FUTURE,
    /// MCL_ONFAULT) the target had, as its mapping of the blob showed.
    pub mlockall: u32,
}

/// The two page pipes the parasite fills in turn (see `abi::CMD_VMSPLICE`):
/// the tracer's read ends, and the numbers of the write ends in the target
/// (a fork of the target has them too).
pub struct PagePipes {
    rd: [OwnedFd; 2],
    pub wr: [u64; 2],
}

impl PagePipes {
    /// Second handles on the read ends.
    pub fn try_clone(&self) -> Option<PagePipes> {
        Some(PagePipes { rd: [self.rd[0].try_clone().ok()?, self.rd[1].try_clone().ok()?], wr: self.wr })
    }

    fn read_ends(&self) -> [i32; 2] {
        [self.rd[0].as_raw_fd(), self.rd[1].as_raw_fd()]
    }
}

/// A MAP_SHARED mapping of the parasite's memfd in the tracer.
struct SharedMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping belongs to this struct alone (nothing else in cryo
// holds its address) and writing needs `&mut self`, so moving it to another
// thread (a parallel snapshot write) cannot make two threads use it at once.
unsafe impl Send for SharedMap {}

impl SharedMap {
    fn map(file: &File, len: usize) -> std::io::Result<SharedMap> {
        // SAFETY: mapping a file we own, at an address the kernel picks; the
        // mapping is only accessed through this struct within `len`.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, file.as_raw_fd(), 0)
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedMap { ptr: p.cast(), len })
    }

    fn write(&mut self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        // SAFETY: bounds checked above; the region is our own live mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) }
    }

    fn read(&self, off: usize, out: &mut [u8]) {
        assert!(off + out.len() <= self.len);
        // SAFETY: bounds checked above; the region is our own live mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr(), out.len()) }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: the ABI structs are repr(C) plain integers without padding bytes
    // that matter; viewing them as bytes is sound.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn from_bytes<T: Copy + Default>(b: &[u8], n: usize) -> Vec<T> {
    let mut out = vec![T::default(); n];
    let len = std::mem::size_of::<T>() * n;
    // SAFETY: `out` has room for `len` bytes and T is a plain-integer repr(C) struct.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), out.as_mut_ptr().cast::<u8>(), len) };
    out
}

const PIPE_SIZE: i32 = 1 << 20;

impl Parasite {
    /// Bytes the parasite occupies in a target's address space.
    pub fn mapping_size() -> Result<u64> {
        Ok(BlobLayout::parasite(Native::RELATIVE_RELOC)?.region_size())
    }

    /// Load the blob into the target through the bootstrap gadget. With `at`,
    /// the blob is placed there (MAP_FIXED_NOREPLACE), else where the kernel likes.
    pub fn load(seized: &mut Seized, remote: &mut Remote, at: Option<u64>) -> Result<Parasite> {
        let pid = seized.pid;
        fault::check("parasite-load")?;
        let layout = BlobLayout::parasite(Native::RELATIVE_RELOC)?;
        let cmd_off = layout.cmd_offset() as usize;
        let gadget_off = layout.gadget_offset() as usize;
        let size = layout.region_size() as usize;

        let name = remote.boot_scratch(b"cryo-parasite\0")?;
        let fd = remote.syscall(seized, Sysno::MemfdCreate, [name, libc::MFD_CLOEXEC as u64, 0, 0, 0, 0])?;
        let locked_before = proc::status(pid).map(|s| s.locked_kb);
        let result = Self::map_into(seized, remote, pid, fd, size, at);
        // The mapping keeps the memfd alive; the target's fd goes either way.
        let _ = remote.syscall_unchecked(seized, Sysno::Close, [fd, 0, 0, 0, 0, 0]);
        let (base, memfd) = result?;
        let mlockall = match locked_before {
            Ok(kb) => mlockall_of(pid, base, size as u64, kb),
            Err(_) => 0,
        };

        let mut local = match SharedMap::map(&memfd, size) {
            Ok(m) => m,
            Err(e) => {
                let _ = remote.syscall_unchecked(seized, Sysno::Munmap, [base, size as u64, 0, 0, 0, 0]);
                return Err(InjectError::io("mapping the parasite memfd", e));
            }
        };
        let image = layout.relocated(base);
        local.write(0, &image);
        local.write(gadget_off, Native::SYSCALL_GADGET);
        let mut p = Parasite {
            base,
            size: size as u64,
            local,
            entry: base + layout.entry_offset,
            cmd_off,
            stack_top: base + layout.stack_top_offset(),
            gadget: base + gadget_off as u64,
            pipe: None,
            mlockall,
        };
        if Native::needs_icache_flush() {
            // Stores through cryo's own mapping can leave the target CPU's
            // instruction cache stale (ARM); the same bytes written once more
            // through /proc/PID/mem make the kernel clean and invalidate the
            // caches for the target's executable mapping.
            let flushed = remote.mem.write(base, &image).and_then(|()| remote.mem.write(p.gadget, Native::SYSCALL_GADGET));
            if let Err(e) = flushed {
                let _ = p.unload(seized, remote);
                return Err(e.into());
            }
        }
        if let Err(e) = remote.switch_gadget(p.gadget) {
            let _ = p.unload(seized, remote);
            return Err(e);
        }
        Ok(p)
    }

    fn map_into(seized: &mut Seized, remote: &mut Remote, pid: i32, fd: u64, size: usize, at: Option<u64>) -> Result<(u64, File)> {
        let path = format!("/proc/{pid}/fd/{fd}");
        let memfd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| InjectError::io(format!("opening the parasite memfd {path}"), e))?;
        memfd.set_len(size as u64).map_err(|e| InjectError::io("sizing the parasite memfd", e))?;
        let prot = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let mut flags = libc::MAP_SHARED as u64;
        if at.is_some() {
            flags |= libc::MAP_FIXED_NOREPLACE as u64;
        }
        let base = remote.syscall_raw(seized, Sysno::Mmap, [at.unwrap_or(0), size as u64, prot, flags, fd, 0])?;
        if abi::is_error(base) {
            let errno = nix::errno::Errno::from_raw(-base as i32);
            let hint = match errno {
                nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => " (is vm.memfd_noexec set, or an LSM forbidding executable memfd mappings?)",
                nix::errno::Errno::EAGAIN => {
                    " (does the process lock all its memory, mlockall(MCL_FUTURE), up to its RLIMIT_MEMLOCK? raising that limit by a few MiB lets cryo in)"
                }
                _ => "",
            };
            return Err(InjectError::Load { pid, what: format!("mmap of the parasite memfd: {errno}{hint}") });
        }
        if at.is_some_and(|a| a != base as u64) {
            // A kernel before 4.17 takes MAP_FIXED_NOREPLACE for a hint.
            let _ = remote.syscall_unchecked(seized, Sysno::Munmap, [base as u64, size as u64, 0, 0, 0, 0]);
            return Err(InjectError::Load { pid, what: format!("mmap placed the parasite at {base:#x}, not {:#x}", at.unwrap()) });
        }
        Ok((base as u64, memfd))
    }

    /// Run the parasite's entry with the command now in the command area.
    fn start(&self, seized: &mut Seized, remote: &Remote) -> Result<()> {
        let mut gp = remote.base_gp().to_vec();
        Native::prepare_call(&mut gp, self.entry, self.base + self.cmd_off as u64, self.stack_top);
        seized.mark_modified(remote.tid)?;
        ptrace::set_regset(remote.tid, crate::remote::cryo_arch_gp_note(), &gp)?;
        ptrace::cont(remote.tid, 0)?;
        Ok(())
    }

    fn header(&self) -> CmdHeader {
        let mut b = [0u8; std::mem::size_of::<CmdHeader>()];
        self.local.read(self.cmd_off, &mut b);
        from_bytes::<CmdHeader>(&b, 1)[0]
    }

    fn write_command(&mut self, cmd: u32, count: u64, [arg0, arg1]: [u64; 2], records: &[u8]) {
        let hdr = CmdHeader { magic: abi::CMD_MAGIC, cmd, count, arg0, arg1, status: 0, done: 0 };
        self.local.write(self.cmd_off, as_bytes(&[hdr]));
        self.local.write(self.cmd_off + std::mem::size_of::<CmdHeader>(), records);
    }

    /// Address of the parasite's "syscall; trap" gadget.
    pub fn gadget(&self) -> u64 {
        self.gadget
    }

    /// Capacity check for a batch: entries plus data must fit the command area.
    pub fn fits(batch: &Batch) -> bool {
        Self::fits_counts(batch.len(), batch.data.len())
    }

    /// Would a batch of `calls` syscalls and `data` bytes of data fit?
    pub fn fits_counts(calls: usize, data: usize) -> bool {
        std::mem::size_of::<CmdHeader>() + calls * std::mem::size_of::<SyscallEntry>() + data + 8 <= abi::CMD_AREA_SIZE
    }

    /// Run a batch of syscalls inside the target. Stops at the first failing
    /// call (unless marked may-fail) and reports which one.
    pub fn run(&mut self, seized: &mut Seized, remote: &mut Remote, batch: &Batch) -> Result<BatchOutput> {
        fault::check("parasite-cmd")?;
        for _ in &batch.calls {
            fault::check("syscall")?;
        }
        self.run_batch(seized, remote, batch)
    }

    /// [`Parasite::run`] for a batch that takes back what an earlier one left
    /// in the target (an fd, a child): it runs even after cryo was asked to
    /// stop, which is when it matters most (a SIGKILL of `cryo` between the
    /// two would otherwise leave the target holding them).
    pub fn run_undo(&mut self, seized: &mut Seized, remote: &mut Remote, batch: &Batch) -> Result<BatchOutput> {
        fault::inject("parasite-undo")?;
        self.run_batch(seized, remote, batch)
    }

    fn run_batch(&mut self, seized: &mut Seized, remote: &mut Remote, batch: &Batch) -> Result<BatchOutput> {
        let pid = seized.pid;
        if !Self::fits(batch) {
            return Err(InjectError::Command { pid, what: format!("batch of {} calls is too large", batch.len()) });
        }
        let hdr_len = std::mem::size_of::<CmdHeader>();
        let ents_len = batch.len() * std::mem::size_of::<SyscallEntry>();
        let data_off = (hdr_len + ents_len).next_multiple_of(8);
        let data_addr = self.base + (self.cmd_off + data_off) as u64;
        let entries = batch.entries(data_addr);
        self.write_command(abi::CMD_SYSCALLS, entries.len() as u64, [0, 0], as_bytes(&entries));
        self.local.write(self.cmd_off + data_off, &batch.data_at(data_addr));
        self.start(seized, remote)?;
        remote.wait_trap(seized)?;
        let hdr = self.header();
        let mut raw = vec![0u8; ents_len];
        self.local.read(self.cmd_off + hdr_len, &mut raw);
        let done: Vec<SyscallEntry> = from_bytes(&raw, batch.len());
        let mut data = vec![0u8; batch.data.len()];
        self.local.read(self.cmd_off + data_off, &mut data);
        if hdr.status != 0 {
            let idx = (hdr.done as usize).saturating_sub(1).min(batch.len().saturating_sub(1));
            let call = batch.calls.get(idx).map(|c| c.0).unwrap_or(Sysno::Getpid);
            if hdr.status == abi::STATUS_BAD_COMMAND && hdr.done == 0 {
                return Err(InjectError::Command { pid, what: "the parasite rejected the command".into() });
            }
            return Err(InjectError::Syscall { pid, call, errno: nix::errno::Errno::from_raw(-hdr.status as i32) });
        }
        Ok(BatchOutput { results: done.iter().map(|e| e.result).collect(), data })
    }

    /// Create the page pipes: the target keeps the write ends, the tracer
    /// takes the read ends with pidfd_getfd. On any failure the target keeps
    /// none of them.
    pub fn open_pipe(&mut self, seized: &mut Seized, remote: &mut Remote) -> Result<()> {
        let pid = seized.pid;
        let mut b = Batch::new();
        let fds = [b.reserve(8), b.reserve(8)];
        // May fail, so that a pipe made before a failing one is known and closed.
        let calls = fds.map(|f| b.call_may_fail(Sysno::Pipe2, &[crate::Arg::Data(f), (libc::O_CLOEXEC as u64).into()]));
        let out = self.run(seized, remote, &b)?;
        let ends: Vec<(u64, u64)> = fds
            .iter()
            .zip(calls)
            .filter(|&(_, c)| out.results[c] == 0)
            .map(|(&f, _)| (out.u32_at(f) as u64, out.u32_at(f + 4) as u64))
            .collect();
        let mut failure = calls
            .iter()
            .map(|&c| out.results[c])
            .find(|&r| r != 0)
            .map(|r| InjectError::Syscall { pid, call: Sysno::Pipe2, errno: nix::errno::Errno::from_raw(-r as i32) });
        let mut local = Vec::new();
        for &(rd, _) in &ends {
            if failure.is_some() {
                break;
            }
            match cryo_tracer::files::take_fd(pid, rd as i32) {
                Ok(fd) => local.push(fd),
                Err(e) => failure = Some(InjectError::io(format!("pidfd_getfd of a page pipe in {pid}"), e)),
            }
        }
        if failure.is_none() {
            // Where a test pauses or fails a checkpoint with the target holding both ends.
            failure = fault::inject("page-pipes").err().map(InjectError::from);
        }
        let mut close = Batch::new();
        for &(rd, wr) in &ends {
            close.call_may_fail(Sysno::Close, &[rd.into()]);
            if failure.is_some() {
                close.call_may_fail(Sysno::Close, &[wr.into()]);
            }
        }
        let closed = self.run_undo(seized, remote, &close);
        if let Some(e) = failure {
            return Err(e);
        }
        for rd in &local {
            // SAFETY: fcntl on an fd we own; a failure only leaves the default size.
            unsafe { libc::fcntl(rd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        }
        let rd: [OwnedFd; 2] = local.try_into().map_err(|_| InjectError::Command { pid, what: "a page pipe is missing".into() })?;
        // Kept even if closing the read ends failed, so that unloading closes the write ends.
        self.pipe = Some(PagePipes { rd, wr: [ends[0].1, ends[1].1] });
        closed.map(|_| ())
    }

    /// Stream the memory in `iovs` into `out` at `*offset` through the page
    /// pipe: the parasite vmsplices, the tracer splices into the file at the
    /// same time, so neither holds the pages in a buffer.
    pub fn stream_pages(&mut self, seized: &mut Seized, remote: &mut Remote, iovs: &[IoVec], drain: &mut Drain) -> Result<()> {
        let pid = seized.pid;
        fault::check("pages")?;
        let Some(pipes) = self.pipe.take() else {
            return Err(InjectError::Command { pid, what: "page pipe not open".into() });
        };
        let r = self.stream_through(seized, remote, &pipes, iovs, drain);
        self.pipe = Some(pipes);
        r
    }

    /// Which pages of `iovs` (page-aligned, present, readable memory of the
    /// process `remote` runs in) hold only zeros: one bool per page, in order.
    /// The parasite looks at them in place, so they need not be copied out.
    pub fn zero_pages(&mut self, seized: &mut Seized, remote: &mut Remote, iovs: &[IoVec], page_size: u64) -> Result<Vec<bool>> {
        let pid = seized.pid;
        let pages: u64 = iovs.iter().map(|v| v.len / page_size).sum();
        let records = std::mem::size_of::<CmdHeader>() + std::mem::size_of_val(iovs);
        if iovs.len() > abi::MAX_IOVECS || records + pages.div_ceil(8) as usize > abi::CMD_AREA_SIZE {
            return Err(InjectError::Command { pid, what: format!("{} iovecs of {pages} pages are too many to look at at once", iovs.len()) });
        }
        self.write_command(abi::CMD_ZERO_PAGES, iovs.len() as u64, [page_size, 0], as_bytes(iovs));
        self.start(seized, remote)?;
        remote.wait_trap(seized)?;
        let hdr = self.header();
        if hdr.status != 0 {
            return Err(InjectError::Command { pid, what: format!("looking for zero pages: {}", nix::errno::Errno::from_raw(-hdr.status as i32)) });
        }
        let mut bitmap = vec![0u8; pages.div_ceil(8) as usize];
        self.local.read(self.cmd_off + records, &mut bitmap);
        Ok((0..pages as usize).map(|i| bitmap[i / 8] & (1 << (i % 8)) != 0).collect())
    }

    /// The page pipes, with second handles on the read ends.
    pub fn page_pipe(&self) -> Option<PagePipes> {
        self.pipe.as_ref()?.try_clone()
    }

    /// [`Parasite::stream_pages`] through given pipes (whose write ends are
    /// in the process `remote` runs in). The parasite fills them in turn, a
    /// slice at a time: while the drain empties one, the next slice goes into
    /// the other.
    pub fn stream_through(&mut self, seized: &mut Seized, remote: &mut Remote, pipes: &PagePipes, iovs: &[IoVec], drain: &mut Drain) -> Result<()> {
        let pid = seized.pid;
        let rd = pipes.read_ends();
        for chunk in iovs.chunks(abi::MAX_IOVECS.min(4096)) {
            let total: u64 = chunk.iter().map(|v| v.len).sum();
            self.write_command(abi::CMD_VMSPLICE, chunk.len() as u64, [pipes.wr[0], abi::VMSPLICE_TWO | pipes.wr[1]], as_bytes(chunk));
            self.start(seized, remote)?;
            let mut moved = 0u64;
            let mut trapped = false;
            while moved < total {
                // The pipe the next byte is in, and how many follow it there.
                let slice = moved / abi::PIPE_SLICE;
                let max = (total - moved).min((slice + 1) * abi::PIPE_SLICE - moved);
                let n = match drain_some(rd[(slice % 2) as usize], max, drain) {
                    Ok(n) => n,
                    Err(e) => {
                        // The parasite may be blocked in vmsplice on the full pipe:
                        // let it finish its command before anything else is done
                        // to the thread (closing the pipe instead would leave it a SIGPIPE).
                        if !trapped {
                            let _ = self.drain_until_trap(seized, remote, rd);
                        }
                        return Err(InjectError::io(format!("writing pages of {pid} to the image"), e));
                    }
                };
                moved += n;
                if n == 0 {
                    if trapped {
                        // The parasite stopped early (failed): nothing more comes.
                        break;
                    }
                    // Nothing in the pipe: has the parasite stopped?
                    if let Some(stop) = ptrace::wait_flags(remote.tid, libc::WNOHANG)? {
                        trapped = remote.on_stop(seized, stop)?.is_some();
                    }
                }
            }
            if !trapped {
                remote.wait_trap(seized)?;
            }
            let hdr = self.header();
            if hdr.status != 0 || moved != total {
                return Err(InjectError::Command {
                    pid,
                    what: format!(
                        "vmsplice of pages stopped after {} of {total} bytes: {}",
                        hdr.done,
                        nix::errno::Errno::from_raw(-hdr.status as i32)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Read and drop what the parasite still puts into the page pipes until
    /// it reaches its trap.
    fn drain_until_trap(&mut self, seized: &mut Seized, remote: &mut Remote, rd: [i32; 2]) -> Result<()> {
        let mut sink = vec![0u8; 1 << 20];
        loop {
            let mut pfds = rd.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
            // SAFETY: two valid pollfds.
            if unsafe { libc::poll(pfds.as_mut_ptr(), 2, 5) } > 0 {
                for p in pfds.iter().filter(|p| p.revents & libc::POLLIN != 0) {
                    // SAFETY: reading into our own buffer of that length.
                    unsafe { libc::read(p.fd, sink.as_mut_ptr().cast(), sink.len()) };
                }
                continue;
            }
            if let Some(stop) = ptrace::wait_flags(remote.tid, libc::WNOHANG)? {
                if remote.on_stop(seized, stop)?.is_some() {
                    return Ok(());
                }
            }
        }
    }

    /// Unmap the blob and close the pipe in the target. The last syscall runs
    /// from the gadget being unmapped, so it stops at the syscall's exit.
    pub fn unload(&mut self, seized: &mut Seized, remote: &mut Remote) -> Result<()> {
        let cure_fault = fault::inject("cure");
        if let Some(pipes) = self.pipe.take() {
            for wr in pipes.wr {
                remote.syscall_unchecked(seized, Sysno::Close, [wr, 0, 0, 0, 0, 0])?;
            }
        }
        let r = remote.syscall_to_exit(seized, Sysno::Munmap, [self.base, self.size, 0, 0, 0, 0])?;
        if abi::is_error(r) {
            return Err(InjectError::Syscall { pid: seized.pid, call: Sysno::Munmap, errno: nix::errno::Errno::from_raw(-r as i32) });
        }
        cure_fault?;
        Ok(())
    }
}

/// Takes up to `max` bytes that are waiting in the page pipe `rd` (the
/// order is the order of the iovecs streamed) and returns how many it took,
/// 0 if none were there. The caller decides where they go: spliced into a
/// file, or read and looked at.
pub type Drain<'a> = dyn FnMut(i32, u64) -> std::io::Result<u64> + 'a;

/// A drain that splices the pipe's pages into `out` at `*offset` (moving
/// it on): the pages go to the file without passing through cryo's memory.
pub fn splice_into<'a>(out: &'a File, offset: &'a mut u64) -> impl FnMut(i32, u64) -> std::io::Result<u64> + 'a {
    move |rd, max| {
        let mut off = *offset as libc::loff_t;
        let len = max.min(PIPE_SIZE as u64 * 4) as usize;
        // SAFETY: both fds are open; `off` is a valid in/out offset.
        let n = unsafe { libc::splice(rd, std::ptr::null_mut(), out.as_raw_fd(), &mut off, len, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        *offset = off as u64;
        Ok(n as u64)
    }
}

/// Wait up to a few ms for pages in the pipe, then drain them.
fn drain_some(rd: i32, max: u64, drain: &mut Drain) -> std::io::Result<u64> {
    let mut pfd = libc::pollfd { fd: rd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, Duration::from_millis(5).as_millis() as i32) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
    }
    if r == 0 {
        return Ok(0);
    }
    drain(rd, max)
}

/// mlockall(MCL_FUTURE) cannot be read from outside, but it shows on the
/// blob's fresh mapping at `base`: the mapping counts as locked (VmLck grew
/// by its size), and unless MCL_ONFAULT the kernel filled it in at once,
/// before anything touched it through the target's page tables.
fn mlockall_of(pid: i32, base: u64, size: u64, locked_before_kb: u64) -> u32 {
    let grew = proc::status(pid).map_or(0, |s| s.locked_kb.saturating_sub(locked_before_kb));
    if grew < size / 1024 {
        return 0;
    }
    let ps = cryo_tracer::arch::page_size();
    let mut ent = Vec::new();
    let filled = proc::Pagemap::open(pid).and_then(|pm| pm.entries(base, base + ps, ps, &mut ent)).is_ok_and(|()| ent.first().is_some_and(|e| e & proc::pagemap::PRESENT != 0));
    libc::MCL_FUTURE as u32 | if filled { 0 } else { libc::MCL_ONFAULT as u32 }
}
