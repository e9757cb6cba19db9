//! Choosing the pages to store and streaming them into the image.
//!
//! Stored: every page of private anonymous memory that exists (present or
//! swapped), and the pages of private file mappings that the process wrote
//! (anonymous copies). Not stored: never-touched pages, unmodified file pages,
//! shared file mappings (the file holds them), kernel-provided vDSO/vvar.
//! Shared memory without a file to reopen (`VmaKind::Shmem`) is stored
//! whole, once per tree: the first process that maps a given range stores it.

use super::tracking::Tracked;
use cryo_tracer::arch::page_size;
use anyhow::{bail, Context, Result};
use cryo_image::{PageOrigin, PageRun, Vma, VmaKind};
use cryo_parasite::abi::IoVec;
use cryo_tracer::proc::scan::{self, Query};
use cryo_tracer::proc::{pagemap, MemFile, Pagemap};
use std::sync::atomic::{AtomicBool, Ordering};
use indicatif::ProgressBar;
use std::collections::HashSet;
use super::sink::{Piece, Seg, Sink};
use cryo_injector::parasite::Drain;

/// Pagemap entries are read this many pages at a time, so a huge sparse
/// reservation does not need a huge buffer.
const PAGEMAP_CHUNK: u64 = 1 << 16;
/// iovecs handed to the parasite per command.
const IOV_BATCH: usize = 4096;
/// Bytes handed to the parasite per command at most (a progress step).
const STREAM_PIECE: u64 = 64 << 20;

/// Shared memory ranges already stored by a process of the tree:
/// (device, inode, offset, length).
pub type SharedSeen = HashSet<(u64, u64, u64, u64)>;

/// Which of a process's page runs a streaming pass writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Part {
    All,
    /// What must be read while the process is frozen even when a snapshot
    /// holds the rest: shared memory (a copy-on-write fork shares it with
    /// the running tree, so it would not stay as it was at the freeze) and
    /// what vmsplice cannot read (read through /proc/PID/mem).
    Frozen,
    /// Private readable memory: the copy-on-write snapshot has it as it was.
    Private,
}

fn vmsplice_readable(v: &Vma) -> bool {
    v.prot & libc::PROT_READ as u32 != 0 && v.kind != VmaKind::Vdso
}

impl Part {
    pub fn holds(self, v: &Vma) -> bool {
        let frozen = v.kind == VmaKind::Shmem || !vmsplice_readable(v);
        match self {
            Part::All => true,
            Part::Frozen => frozen,
            Part::Private => !frozen,
        }
    }
}

/// The runs that take room in the pages file and lie in areas of `part`,
/// each with its number (the chosen run, see [`Seg::group`]) and its area.
fn stored<'a>(runs: &'a [PageRun], vmas: &'a [Vma], part: Part) -> impl Iterator<Item = (usize, &'a PageRun, &'a Vma)> {
    runs.iter().enumerate().filter(|(_, r)| r.origin.in_pages_file()).filter_map(move |(group, run)| {
        let vma = vmas.iter().find(|v| v.start <= run.vaddr && run.vaddr < v.end).expect("run lies in a vma");
        part.holds(vma).then_some((group, run, vma))
    })
}

/// Bytes the runs take in the pages file.
pub fn bytes(runs: &[PageRun]) -> u64 {
    runs.iter().filter(|r| r.origin.in_pages_file()).map(|r| r.npages * page_size()).sum()
}

/// Bytes of pages handed to the sink's thread at a time: small enough to
/// stay in the CPU cache between the read and the write.
pub const PIECE: usize = 256 << 10;

/// Send the runs of `part` to `sink`: readable memory through `splice`
/// (vmsplice by a parasite into the page pipe, which the given drain
/// empties), the rest read through `mem`.
/// Where pages come from: a parasite in the process (or its snapshot) that
/// vmsplices them into the page pipe and can say which are all zero.
pub trait PageSource {
    fn stream(&mut self, iovs: &[IoVec], drain: &mut Drain) -> Result<()>;
    fn zero_pages(&mut self, iovs: &[IoVec]) -> Result<Vec<bool>>;
}

pub fn stream(
    runs: &[PageRun],
    vmas: &[Vma],
    part: Part,
    mem: &MemFile,
    sink: &mut Sink,
    progress: &ProgressBar,
    src: &mut dyn PageSource,
) -> Result<()> {
    let ps = page_size();
    let mut iovs: Vec<IoVec> = Vec::new();
    // Per iovec: its chosen run, origin, and whether zero pages may be dropped.
    let mut origins: Vec<(usize, PageOrigin, bool)> = Vec::new();
    let mut queued = 0u64;
    let mut flush = |iovs: &mut Vec<IoVec>, origins: &mut Vec<(usize, PageOrigin, bool)>, sink: &mut Sink| -> Result<()> {
        if iovs.is_empty() {
            return Ok(());
        }
        if sink.splice_target().is_some() {
            splice_batch(iovs, origins, sink, progress, &mut *src, ps)?;
        } else {
            let buf = sink.buffer();
            let mut into = PipeReader { iovs, origins, at: 0, off: 0, buf, filled: 0, ps, sink, progress };
            src.stream(iovs, &mut |rd, max| into.drain(rd, max))?;
        }
        iovs.clear();
        origins.clear();
        Ok(())
    };
    for (group, run, vma) in stored(runs, vmas, part) {
        let len = run.npages * ps;
        let dedupe = droppable_if_zero(vma, run);
        if !vmsplice_readable(vma) {
            // vmsplice needs read access and ordinary pages; /proc/PID/mem does not.
            copy_unreadable(mem, group, run, sink, dedupe)?;
            progress.inc(len);
            continue;
        }
        // Pieces of a bounded size, so progress shows within one big area.
        let mut at = 0;
        while at < len {
            let piece = (len - at).min(STREAM_PIECE);
            iovs.push(IoVec { base: run.vaddr + at, len: piece });
            origins.push((group, run.origin, dedupe));
            queued += piece;
            at += piece;
            if iovs.len() >= IOV_BATCH || queued >= STREAM_PIECE {
                flush(&mut iovs, &mut origins, sink)?;
                queued = 0;
            }
        }
    }
    flush(&mut iovs, &mut origins, sink)
}

/// Raw mode: ask which pages are all zero, note the others as the next
/// runs of the pages file, and splice exactly those into it.
fn splice_batch(iovs: &[IoVec], origins: &[(usize, PageOrigin, bool)], sink: &mut Sink, progress: &ProgressBar, src: &mut dyn PageSource, ps: u64) -> Result<()> {
    let looked: Vec<IoVec> = iovs.iter().zip(origins).filter(|(_, o)| o.2).map(|(v, _)| *v).collect();
    let zero = if looked.is_empty() { Vec::new() } else { src.zero_pages(&looked)? };
    let mut zero = zero.into_iter();
    let (file, start) = sink.splice_target().expect("raw mode");
    let mut out: Vec<IoVec> = Vec::new();
    let mut skipped = 0;
    for (v, &(group, origin, dedupe)) in iovs.iter().zip(origins) {
        let mut page = v.base;
        while page < v.base + v.len {
            if dedupe && zero.next() == Some(true) {
                skipped += 1;
            } else {
                match out.last_mut() {
                    Some(last) if last.base + last.len == page => last.len += ps,
                    _ => out.push(IoVec { base: page, len: ps }),
                }
                sink.spliced(group, page, ps, origin);
            }
            page += ps;
        }
    }
    sink.skipped_zero_pages(skipped);
    sink.reserve(start, out.iter().map(|v| v.len).sum());
    let mut offset = start;
    let mut end = start;
    let mut splice = cryo_injector::parasite::splice_into(&file, &mut offset);
    // The checksum follows each splice, reading what it just wrote.
    src.stream(&out, &mut |rd, max| {
        let n = splice(rd, max)?;
        end += n;
        if n > 0 {
            sink.written_to(end);
        }
        Ok(n)
    })?;
    progress.inc(iovs.iter().map(|v| v.len).sum());
    Ok(())
}

/// Empties the page pipe into the sink, knowing which address each byte
/// came from: the pages arrive in the order of the iovecs.
struct PipeReader<'a> {
    iovs: &'a [IoVec],
    origins: &'a [(usize, PageOrigin, bool)],
    /// The iovec the next byte belongs to, and how far into it.
    at: usize,
    off: u64,
    buf: Vec<u8>,
    filled: usize,
    ps: u64,
    sink: &'a mut Sink,
    progress: &'a ProgressBar,
}

impl PipeReader<'_> {
    fn drain(&mut self, rd: i32, max: u64) -> std::io::Result<u64> {
        let want = (self.buf.len() - self.filled).min(max as usize);
        // SAFETY: reading into the unfilled part of our own buffer, at most its length.
        let n = unsafe { libc::read(rd, self.buf[self.filled..].as_mut_ptr().cast(), want) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) { Ok(0) } else { Err(e) };
        }
        self.filled += n as usize;
        let whole = self.filled / self.ps as usize * self.ps as usize;
        let rest = self.filled - whole;
        // Send once the buffer is full, or when the pipe gave all it will.
        let last = n as u64 == max;
        if whole > 0 && (self.filled == self.buf.len() || last) {
            let mut segs = Vec::new();
            let mut done = 0usize;
            while done < whole {
                let v = self.iovs[self.at];
                let take = ((v.len - self.off) as usize).min(whole - done);
                let (group, origin, dedupe) = self.origins[self.at];
                segs.push(Seg { group, vaddr: v.base + self.off, len: take, origin, dedupe });
                done += take;
                self.off += take as u64;
                if self.off == v.len {
                    self.at += 1;
                    self.off = 0;
                }
            }
            let mut next = self.sink.buffer();
            next[..rest].copy_from_slice(&self.buf[whole..self.filled]);
            let full = std::mem::replace(&mut self.buf, next);
            self.filled = rest;
            self.sink.send(Piece { buf: full, segs }).map_err(std::io::Error::other)?;
            self.progress.inc(whole as u64);
        }
        Ok(n as u64)
    }
}

/// A page that is all zero need not be stored where a page the image does
/// not have reads as zero on restart: anonymous memory. In a private file
/// mapping it would read as the file's bytes instead; pages kept for
/// debuggers (`Reference`) stay too.
fn droppable_if_zero(v: &Vma, run: &PageRun) -> bool {
    // Shared memory is left alone: the parasite would look at the pages of
    // its object beyond the end of a file, which fault (SIGBUS).
    run.origin == PageOrigin::Here && v.anonymous()
}

fn copy_unreadable(mem: &MemFile, group: usize, run: &PageRun, sink: &mut Sink, dedupe: bool) -> Result<()> {
    let len = run.npages * page_size();
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        mem.read(run.vaddr + done, &mut buf[..n])?;
        sink.push(group, run.vaddr + done, &buf[..n], run.origin, dedupe)?;
        done += n as u64;
    }
    Ok(())
}

/// Remote iovecs per process_vm_readv (IOV_MAX).
const READV_IOVS: usize = 1024;

/// Read the runs of `part` of frozen process `pid` into the pieces of a
/// sink that looks at them and writes them behind ([`Sink::threaded`]):
/// faster than splicing, where the copy into the file reads the process's
/// memory and the checksum reads the file again.
///
/// The areas in `unshared` (none of their pages mapped by another process
/// when smaps was read) are read with process_vm_readv. Elsewhere it would
/// copy pages shared copy-on-write into the process (it pins them, and the
/// kernel unshares a pinned shared page), so the rest is read through
/// /proc/PID/mem, which does not: all of a copy-on-write snapshot's memory
/// (`unshared` empty). Pieces gather small runs, so a scattered heap takes
/// few calls.
pub fn read_frozen(runs: &[PageRun], vmas: &[Vma], part: Part, from: &Stopped, sink: &mut Sink, progress: &ProgressBar) -> Result<()> {
    let ps = page_size();
    let Stopped { pid, mem, unshared, stage } = *from;
    let mut batch = Batch { buf: sink.buffer(), filled: 0, segs: Vec::new(), remote: Vec::new(), pin: false, pid, mem };
    let (mut pinned, mut copied) = (0u64, 0u64);
    // A stage point every STREAM_PIECE, as where pages are spliced.
    let mut unchecked = 0u64;
    let mut gate = |n: u64| -> Result<()> {
        if unchecked == 0 {
            cryo_tracer::fault::check(stage)?;
        }
        unchecked += n;
        if unchecked >= STREAM_PIECE {
            unchecked = 0;
        }
        Ok(())
    };
    for (group, run, vma) in stored(runs, vmas, part) {
        let len = run.npages * ps;
        let dedupe = droppable_if_zero(vma, run);
        // /proc/PID/mem also reads what the process cannot (FOLL_FORCE).
        let pin = vmsplice_readable(vma) && unshared.binary_search(&(vma.start, vma.end)).is_ok();
        if pin != batch.pin {
            batch.send(sink)?;
            batch.pin = pin;
        }
        let mut at = 0;
        while at < len {
            let n = (len - at).min((batch.buf.len() - batch.filled) as u64);
            gate(n)?;
            batch.segs.push(Seg { group, vaddr: run.vaddr + at, len: n as usize, origin: run.origin, dedupe });
            batch.remote.push(libc::iovec { iov_base: (run.vaddr + at) as usize as *mut libc::c_void, iov_len: n as usize });
            batch.filled += n as usize;
            at += n;
            if batch.filled == batch.buf.len() || batch.remote.len() == READV_IOVS {
                batch.send(sink)?;
            }
        }
        *(if pin { &mut pinned } else { &mut copied }) += len;
        progress.inc(len);
    }
    batch.send(sink)?;
    tracing::debug!("process {pid}: {} MiB read with process_vm_readv, {} MiB through /proc/PID/mem", pinned >> 20, copied >> 20);
    Ok(())
}

/// A stopped process (or snapshot) whose memory [`read_frozen`] reads.
#[derive(Clone, Copy)]
pub struct Stopped<'a> {
    pub pid: i32,
    pub mem: &'a MemFile,
    /// Areas read with process_vm_readv (see [`read_frozen`]).
    pub unshared: &'a [(u64, u64)],
    /// The stage point (cryo_tracer::fault) passed every STREAM_PIECE.
    pub stage: &'static str,
}

/// A piece being gathered by [`read_frozen`]: where its bytes lie in the
/// process, and whether to read them with process_vm_readv (`pin`) or
/// through /proc/PID/mem.
struct Batch<'m> {
    buf: Vec<u8>,
    filled: usize,
    segs: Vec<Seg>,
    remote: Vec<libc::iovec>,
    pin: bool,
    pid: i32,
    mem: &'m MemFile,
}

impl Batch<'_> {
    fn send(&mut self, sink: &mut Sink) -> Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let pid = self.pid;
        let whole = self.pin && match readv(pid, &mut self.buf[..self.filled], &self.remote) {
            Ok(n) if n == self.filled => true,
            // A kernel without it (CONFIG_CROSS_MEMORY_ATTACH), or an area
            // that ends before its mapping: /proc/PID/mem says which.
            got => {
                tracing::debug!("process {pid}: process_vm_readv of {} bytes: {got:?}; reading through /proc/PID/mem", self.filled);
                false
            }
        };
        if !whole {
            let mut at = 0;
            for v in &self.remote {
                self.mem.read(v.iov_base as u64, &mut self.buf[at..at + v.iov_len])?;
                at += v.iov_len;
            }
        }
        let buf = std::mem::replace(&mut self.buf, sink.buffer());
        self.filled = 0;
        self.remote.clear();
        sink.send(Piece { buf, segs: std::mem::take(&mut self.segs) })
    }
}

/// process_vm_readv of `remote` (addresses in process `pid`) into `local`.
fn readv(pid: i32, local: &mut [u8], remote: &[libc::iovec]) -> std::io::Result<usize> {
    let local = libc::iovec { iov_base: local.as_mut_ptr().cast(), iov_len: local.len() };
    // SAFETY: the kernel writes at most `local.len()` bytes into our own
    // buffer, which outlives the call; `remote` names the other process's
    // memory, which the kernel checks.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), remote.len() as libc::c_ulong, 0) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Copy `runs` of a process that runs on (a pre-copy's first pass) into the
/// pieces of a threaded `sink`, whose thread writes one while the next is
/// read. Read through /proc/PID/mem: unlike process_vm_readv it takes no
/// copy-on-write sharing away (see inherited.rs). A page the process writes
/// while it is read is stored again by the final pass, which finds it
/// written; a piece it unmapped meanwhile is left out, and the final pass
/// stores what lies there by then.
pub fn copy_running(runs: &[PageRun], vmas: &[Vma], mem: &MemFile, sink: &mut Sink, progress: &ProgressBar) -> Result<()> {
    for (group, run, vma) in stored(runs, vmas, Part::All) {
        let dedupe = droppable_if_zero(vma, run);
        let len = run.npages * page_size();
        let mut done = 0;
        while done < len {
            let mut buf = sink.buffer();
            let n = buf.len().min((len - done) as usize);
            let vaddr = run.vaddr + done;
            match mem.read(vaddr, &mut buf[..n]) {
                Ok(()) => sink.send(Piece { buf, segs: vec![Seg { group, vaddr, len: n, origin: run.origin, dedupe }] })?,
                Err(e) => tracing::debug!("not copied while the process runs: {e}"),
            }
            done += n as u64;
        }
        progress.inc(len);
    }
    Ok(())
}

/// A pages file that is not written: its runs, length, and the zero pages
/// left out of it.
pub struct Layout {
    pub runs: Vec<PageRun>,
    pub len: u64,
    pub zero_pages: u64,
}

/// The pages file `runs` would make, zero pages left out as in a written
/// one (the parasite says which), without reading a page: for pages that
/// stay in the frozen process until they are sent (`checkpoint --kill -o -`).
pub fn layout(runs: &[PageRun], vmas: &[Vma], src: &mut dyn PageSource) -> Result<Layout> {
    let ps = page_size();
    let mut out = Layout { runs: Vec::new(), len: 0, zero_pages: 0 };
    for run in runs.iter().filter(|r| r.origin.in_pages_file()) {
        let vma = vmas.iter().find(|v| v.start <= run.vaddr && run.vaddr < v.end).expect("run lies in a vma");
        let mut zero = Vec::with_capacity(run.npages as usize);
        if droppable_if_zero(vma, run) && vmsplice_readable(vma) {
            let mut at = 0;
            while at < run.npages * ps {
                let piece = (run.npages * ps - at).min(STREAM_PIECE);
                zero.extend(src.zero_pages(&[IoVec { base: run.vaddr + at, len: piece }])?);
                at += piece;
            }
        }
        // A run of the file never spans two chosen runs (as in `Sink`).
        let mut split = true;
        for i in 0..run.npages {
            if zero.get(i as usize) == Some(&true) {
                out.zero_pages += 1;
                split = true;
                continue;
            }
            let vaddr = run.vaddr + i * ps;
            match out.runs.last_mut() {
                Some(r) if !split => r.npages += 1,
                _ => out.runs.push(PageRun { vaddr, npages: 1, file_offset: out.len, origin: run.origin }),
            }
            split = false;
            out.len += ps;
        }
    }
    Ok(out)
}

/// Kernels without PAGEMAP_SCAN (before 6.7) are asked once.
static NO_SCAN: AtomicBool = AtomicBool::new(false);

/// The pages of a private area that hold data of the process: in anonymous
/// memory the pages that exist (present or swapped) but for the shared zero
/// page; in a file mapping the pages it wrote (anonymous copies). PAGEMAP_SCAN
/// gives them as ranges; older kernels have the pagemap read page by page.
fn stored_ranges(pm: &Pagemap, v: &Vma, ents: &mut Vec<u64>) -> Result<Vec<(u64, u64)>> {
    let file_backed = v.kind == VmaKind::File;
    if !NO_SCAN.load(Ordering::Relaxed) {
        let scanned = if file_backed {
            let written = Query { all: scan::PAGE_IS_PRESENT | scan::PAGE_IS_FILE, inverted: scan::PAGE_IS_FILE, any: 0 };
            let swapped = Query { all: scan::PAGE_IS_SWAPPED, ..Default::default() };
            scan::ranges_where(pm, v.start, v.end, written, 0).and_then(|mut a| {
                a.extend(scan::ranges_where(pm, v.start, v.end, swapped, 0)?);
                a.sort();
                Ok(a)
            })
        } else {
            let data = Query { all: scan::PAGE_IS_PFNZERO, inverted: scan::PAGE_IS_PFNZERO, any: scan::PAGE_IS_PRESENT | scan::PAGE_IS_SWAPPED };
            scan::ranges_where(pm, v.start, v.end, data, 0)
        };
        match scanned {
            Ok(r) => return Ok(r),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => NO_SCAN.store(true, Ordering::Relaxed),
            Err(e) => return Err(e).with_context(|| format!("PAGEMAP_SCAN of {:#x}-{:#x}", v.start, v.end)),
        }
    }
    let ps = page_size();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut addr = v.start;
    while addr < v.end {
        let end = v.end.min(addr + PAGEMAP_CHUNK * ps);
        pm.entries(addr, end, ps, ents)?;
        for (i, e) in ents.iter().enumerate() {
            let keep = if file_backed {
                (e & pagemap::PRESENT != 0 && e & pagemap::FILE_SHARED == 0) || e & pagemap::SWAPPED != 0
            } else {
                e & (pagemap::PRESENT | pagemap::SWAPPED) != 0
            };
            if keep {
                let page = addr + i as u64 * ps;
                match out.last_mut() {
                    Some(last) if last.1 == page => last.1 += ps,
                    _ => out.push((page, page + ps)),
                }
            }
        }
        addr = end;
    }
    Ok(out)
}

/// The page runs to store, in address order (their offsets in the pages
/// file come as they are written: see [`Sink`]).
/// With `tracked`, pages unchanged since the parent image are marked
/// [`PageOrigin::Parent`] and take no room in the pages file.
/// Only the areas of `part` are looked at: in low-freeze mode the private
/// ones are chosen from the snapshot, whose page tables are the target's
/// as they were at the fork, after the target was let go.
pub fn select(pid: i32, vmas: &[Vma], part: Part, mem: &MemFile, shared: &mut SharedSeen, tracked: Option<&Tracked>) -> Result<Vec<PageRun>> {
    let ps = page_size();
    let pm = Pagemap::open(pid)?;
    let mut runs: Vec<PageRun> = Vec::new();
    let mut ents = Vec::new();
    for v in vmas.iter().filter(|v| part.holds(v)) {
        if v.kind == VmaKind::Vdso {
            // Not restored (the kernel provides it), but debuggers read it from cores.
            runs.push(PageRun { vaddr: v.start, npages: v.len() / ps, file_offset: 0, origin: PageOrigin::Reference });
            continue;
        }
        if matches!(v.kind, VmaKind::Vvar | VmaKind::Vsyscall) {
            continue;
        }
        if v.has_flag("io") || v.has_flag("pf") {
            bail!("process {pid} maps device memory at {:#x} ({}), which cannot be checkpointed", v.start, v.name);
        }
        let file_backed = v.kind == VmaKind::File;
        if file_backed && v.shared {
            continue;
        }
        if v.kind == VmaKind::Shmem {
            // The object's pages, whether or not this process touched them;
            // a private mapping of a deleted file needs even the untouched ones.
            if !v.shared || shared.insert((v.dev, v.inode, v.offset, v.len())) {
                runs.push(PageRun { vaddr: v.start, npages: v.len() / ps, file_offset: 0, origin: PageOrigin::Here });
            }
            continue;
        }
        let first_run = runs.len();
        let pieces = match tracked.and_then(|t| t.pages_in(v)) {
            Some(known) => known,
            None => {
                // The pages that hold data, in pieces that are unchanged
                // since the parent image or not.
                let mut pieces = Vec::new();
                for (start, end) in stored_ranges(&pm, v, &mut ents)? {
                    let mut at = start;
                    while at < end {
                        let (unchanged, until) = tracked.map_or((false, u64::MAX), |t| t.unchanged_until(at));
                        let stop = until.min(end);
                        pieces.push((at, stop, if unchanged { PageOrigin::Parent } else { PageOrigin::Here }));
                        at = stop;
                    }
                }
                pieces
            }
        };
        for (at, stop, origin) in pieces {
            let npages = (stop - at) / ps;
            let in_this_vma = runs.len() > first_run;
            match runs.last_mut() {
                Some(r) if in_this_vma && r.origin == origin && r.vaddr + r.npages * ps == at => r.npages += npages,
                _ => runs.push(PageRun { vaddr: at, npages, file_offset: 0, origin }),
            }
        }
        // Keep an ELF mapping's first page for build-ids (cores, inspect).
        if file_backed && v.offset == 0 && v.prot & libc::PROT_READ as u32 != 0 && runs[first_run..].first().is_none_or(|r| r.vaddr != v.start) {
            let mut magic = [0u8; 4];
            if mem.read(v.start, &mut magic).is_ok() && &magic == b"\x7fELF" {
                runs.insert(first_run, PageRun { vaddr: v.start, npages: 1, file_offset: 0, origin: PageOrigin::Reference });
            }
        }
    }
    Ok(runs)
}
