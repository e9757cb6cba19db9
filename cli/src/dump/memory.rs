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
use anyhow::{bail, Result};
use cryo_image::{PageOrigin, PageRun, Vma, VmaKind};
use cryo_parasite::abi::IoVec;
use cryo_tracer::proc::{pagemap, MemFile, Pagemap};
use indicatif::ProgressBar;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

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
    fn holds(self, v: &Vma) -> bool {
        let frozen = v.kind == VmaKind::Shmem || !vmsplice_readable(v);
        match self {
            Part::All => true,
            Part::Frozen => frozen,
            Part::Private => !frozen,
        }
    }
}

/// Bytes the runs take in the pages file.
pub fn bytes(runs: &[PageRun]) -> u64 {
    runs.iter().filter(|r| r.origin != PageOrigin::Parent).map(|r| r.npages * page_size()).sum()
}

/// Write the runs of `part` into `out` at their file offsets: readable memory
/// through `splice` (vmsplice by a parasite), the rest through `mem`.
pub fn stream(
    runs: &[PageRun],
    vmas: &[Vma],
    part: Part,
    mem: &MemFile,
    out: &File,
    progress: &ProgressBar,
    mut splice: impl FnMut(&[IoVec], &mut u64) -> Result<()>,
) -> Result<()> {
    let ps = page_size();
    let mut iovs: Vec<IoVec> = Vec::new();
    // File offset where the queued iovecs start, and their bytes.
    let mut at_offset = 0u64;
    let mut queued = 0u64;
    let mut flush = |iovs: &mut Vec<IoVec>, at_offset: u64, queued: &mut u64| -> Result<()> {
        if iovs.is_empty() {
            return Ok(());
        }
        let mut off = at_offset;
        splice(iovs, &mut off)?;
        progress.inc(*queued);
        iovs.clear();
        *queued = 0;
        Ok(())
    };
    for run in runs.iter().filter(|r| r.origin != PageOrigin::Parent) {
        let vma = vmas.iter().find(|v| v.start <= run.vaddr && run.vaddr < v.end).expect("run lies in a vma");
        if !part.holds(vma) {
            continue;
        }
        let len = run.npages * ps;
        if !vmsplice_readable(vma) {
            // vmsplice needs read access and ordinary pages; /proc/PID/mem does not.
            let mut off = run.file_offset;
            copy_unreadable(mem, run.vaddr, len, out, &mut off)?;
            progress.inc(len);
            continue;
        }
        if at_offset + queued != run.file_offset {
            flush(&mut iovs, at_offset, &mut queued)?;
            at_offset = run.file_offset;
        }
        // Pieces of a bounded size, so progress shows within one big area.
        let mut at = 0;
        while at < len {
            let piece = (len - at).min(STREAM_PIECE);
            iovs.push(IoVec { base: run.vaddr + at, len: piece });
            queued += piece;
            at += piece;
            if iovs.len() >= IOV_BATCH || queued >= STREAM_PIECE {
                let next = at_offset + queued;
                flush(&mut iovs, at_offset, &mut queued)?;
                at_offset = next;
            }
        }
    }
    flush(&mut iovs, at_offset, &mut queued)
}

fn copy_unreadable(mem: &MemFile, addr: u64, len: u64, out: &File, offset: &mut u64) -> Result<()> {
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        mem.read(addr + done, &mut buf[..n])?;
        out.write_all_at(&buf[..n], *offset)?;
        *offset += n as u64;
        done += n as u64;
    }
    Ok(())
}

/// The page runs to store, in address order, with their offsets in the pages file.
/// With `tracked`, pages unchanged since the parent image are marked
/// [`PageOrigin::Parent`] and take no room in the pages file.
pub fn select(pid: i32, vmas: &[Vma], mem: &MemFile, shared: &mut SharedSeen, tracked: Option<&Tracked>) -> Result<Vec<PageRun>> {
    let ps = page_size();
    let pm = Pagemap::open(pid)?;
    let mut runs: Vec<PageRun> = Vec::new();
    let mut file_offset = 0u64;
    let mut ents = Vec::new();
    for v in vmas {
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
        let mut addr = v.start;
        while addr < v.end {
            let end = v.end.min(addr + PAGEMAP_CHUNK * ps);
            pm.entries(addr, end, ps, &mut ents)?;
            for (i, e) in ents.iter().enumerate() {
                let keep = if file_backed {
                    (e & pagemap::PRESENT != 0 && e & pagemap::FILE_SHARED == 0) || e & pagemap::SWAPPED != 0
                } else {
                    e & (pagemap::PRESENT | pagemap::SWAPPED) != 0
                };
                if !keep {
                    continue;
                }
                let page = addr + i as u64 * ps;
                let origin = if tracked.is_some_and(|t| t.unchanged(page)) { PageOrigin::Parent } else { PageOrigin::Here };
                let in_this_vma = runs.len() > first_run;
                match runs.last_mut() {
                    Some(r) if in_this_vma && r.origin == origin && r.vaddr + r.npages * ps == page => r.npages += 1,
                    _ => runs.push(PageRun { vaddr: page, npages: 1, file_offset: 0, origin }),
                }
            }
            addr = end;
        }
        // Keep an ELF mapping's first page for build-ids (cores, inspect).
        if file_backed && v.offset == 0 && v.prot & libc::PROT_READ as u32 != 0 && runs[first_run..].first().is_none_or(|r| r.vaddr != v.start) {
            let mut magic = [0u8; 4];
            if mem.read(v.start, &mut magic).is_ok() && &magic == b"\x7fELF" {
                runs.insert(first_run, PageRun { vaddr: v.start, npages: 1, file_offset: 0, origin: PageOrigin::Reference });
            }
        }
    }
    for r in runs.iter_mut().filter(|r| r.origin != PageOrigin::Parent) {
        r.file_offset = file_offset;
        file_offset += r.npages * ps;
    }
    Ok(runs)
}
