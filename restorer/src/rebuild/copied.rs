//! Pages copied into place by cryo rather than read by the process.
//!
//! A read into fresh memory has the kernel fault in, allocate and zero each
//! page before the image's bytes go over it. UFFDIO_COPY allocates each page
//! and copies into it at once: no fault, no zeroing. The process registers its
//! private anonymous areas with a userfaultfd for missing pages
//! ([`super::userfault::make`]); cryo maps each piece of the pages file (the
//! page-cache pages themselves, no copy) and copies from there into the
//! process, on as many threads as the fill may take CPUs. Measured on this
//! machine (a C program, 1 GiB, two threads): 0.16–0.19 s against 0.22–0.27 s
//! for MADV_POPULATE_WRITE and pread.
//!
//! The areas stay registered until cryo drops the userfaultfd, at the end of
//! the fill. Meanwhile nothing else may write a missing page there: with
//! UFFD_USER_MODE_ONLY a write by the kernel (a read(), /proc/PID/mem) into
//! one fails with EFAULT. So the pages no file holds whole (compressed ones)
//! go in first, and the process reads only pages outside these areas.

use super::{open_cached, PageProgress, Restoree};
use crate::check::RestoreError;
use crate::file_pages::FileBytes;
use crate::Result;
use cryo_image::chain::{ResolvedPages, SourceRun};
use cryo_image::digest::{Crc, KnownParts};
use cryo_image::ranges;
use cryo_image::{Vma, VmaKind};
use cryo_tracer::proc;
use cryo_tracer::uffd::{Copied, Uffd};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Less than this is not worth making a userfaultfd for.
const MIN_BYTES: u64 = 4 << 20;
/// Mapped and copied at a time: the threads share the work in pieces of
/// this size, and cryo's resident memory grows by this much per thread (the
/// mapped file pages count): small, so that when memory runs out the
/// out-of-memory killer finds the process being filled the larger, and cryo
/// lives to say so. 1, 2 and 8 MiB copied 1 GiB equally fast.
const PIECE: u64 = 2 << 20;

/// Private anonymous memory; not a stack, which grows down (a missing page
/// there must fault as usual the moment the areas are released).
fn may_be_copied(v: &Vma) -> bool {
    !v.shared && matches!(v.kind, VmaKind::Anon | VmaKind::Heap) && !v.has_flag("gd")
}

/// Who fills what.
pub(super) struct Plan {
    /// The areas registered with the userfaultfd.
    pub areas: Vec<(u64, u64)>,
    /// Pages cryo copies, all inside `areas`.
    pub copied: Vec<SourceRun>,
    /// What the process reads itself (and compressed pages, written already).
    pub rest: ResolvedPages,
}

impl Plan {
    fn copied_bytes(&self, ps: u64) -> u64 {
        self.copied.iter().map(|r| r.npages * ps).sum()
    }
}

/// The pages of `src` that cryo copies, if enough to be worth it: not where
/// huge pages were put (they are present already), nor in areas kept from a
/// parent the process was forked from.
pub(super) fn plan(b: &Restoree, src: &ResolvedPages, ps: u64) -> Option<Plan> {
    if b.huge_pages.is_some() {
        return None;
    }
    let areas = ranges::normalized(
        b.p.vmas.iter().filter(|v| may_be_copied(v) && !b.kept.contains(&(v.start, v.end))).map(|v| (v.start, v.end)).collect(),
        ps,
    );
    let (files, compressed): (Vec<&SourceRun>, Vec<&SourceRun>) = src.runs.iter().partition(|r| src.files[r.file].compression.is_none());
    let (copied, read) = ranges::cut(files, &areas, ps);
    // Only the areas that get pages: registering costs a call each.
    let areas = ranges::holding(&areas, &copied);
    let rest = ResolvedPages { files: src.files.clone(), runs: compressed.into_iter().cloned().chain(read).collect() };
    let plan = Plan { areas, copied, rest };
    (plan.copied_bytes(ps) >= MIN_BYTES).then_some(plan)
}

/// The userfaultfd for `plan`, or None where the kernel has none to give:
/// the process then reads all its pages, as before Linux 5.11.
pub(super) fn register(b: &mut Restoree, plan: &Plan) -> Result<Option<Uffd>> {
    // A test's CRYO_FAULT=restart-uffd: as if the kernel had refused.
    let made = match cryo_tracer::fault::inject("restart-uffd") {
        Ok(()) => super::userfault::make(b, &plan.areas)?,
        Err(e) => Err(e.to_string()),
    };
    Ok(made.map_err(|why| tracing::debug!("process {}: pages are read, not copied into place ({why})", b.p.pid)).ok())
}

/// One UFFDIO_COPY's worth: `len` bytes from `file` at `offset` to `vaddr`.
struct Piece {
    vaddr: u64,
    len: u64,
    file: usize,
    offset: u64,
}

fn pieces(runs: &[SourceRun], ps: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    for r in runs {
        let len = r.npages * ps;
        let mut at = 0;
        while at < len {
            let n = (len - at).min(PIECE);
            out.push(Piece { vaddr: r.vaddr + at, len: n, file: r.file, offset: r.file_offset + at });
            at += n;
        }
    }
    out
}

/// What the copying threads share.
pub(super) struct Copier<'a> {
    pub pid: i32,
    pub uffd: Uffd,
    /// For a page that is somehow there already.
    pub mem: proc::MemFile,
    pub src: &'a ResolvedPages,
    pub progress: &'a PageProgress,
    /// Where to say what each piece's bytes sum to, while they are at hand.
    pub checksums: Option<Arc<KnownParts>>,
}

/// `runs` copied into the process by `threads` threads of cryo, while
/// `alongside` (the process reading the rest) runs on this one. The
/// userfaultfd goes at the end, whatever happened: the areas are ordinary
/// memory again.
pub(super) fn copy(c: Copier<'_>, runs: &[SourceRun], threads: usize, alongside: impl FnOnce() -> Result<()>) -> Result<()> {
    let ps = cryo_tracer::arch::page_size();
    let work = pieces(runs, ps);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let r = copy_pieces(&c, &work, &next, &stop, ps);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        let mine = alongside();
        if mine.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        workers.into_iter().fold(mine, |acc, w| {
            let r = w.join().unwrap_or_else(|_| Err(RestoreError::Rebuild("a thread copying pages panicked".into())));
            acc.and(r)
        })
    });
    let copied: u64 = runs.iter().map(|r| r.npages * ps).sum();
    let by = if threads > 1 { format!("{threads} threads") } else { "a thread".into() };
    tracing::debug!("process {}: {} MiB copied into place by {by} of cryo", c.pid, copied >> 20);
    result
}

/// One thread's share: pieces taken from `work` in turn until none is left
/// or another thread failed.
fn copy_pieces(c: &Copier<'_>, work: &[Piece], next: &AtomicUsize, stop: &AtomicBool, ps: u64) -> Result<()> {
    let mut files = HashMap::new();
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(p) = work.get(next.fetch_add(1, Ordering::Relaxed)) else { return Ok(()) };
        // Where a signal to cryo (or a test) stops the restart mid-copy.
        crate::stage("restart-copy")?;
        let path = &c.src.files[p.file].path;
        let file = open_cached(&mut files, c.src, p.file)?;
        let bytes = FileBytes::of(file, p.offset, p.len, &mut buf)
            .map_err(|e| RestoreError::Io { what: format!("reading {} at {:#x}", path.display(), p.offset), source: e.into() })?;
        let mut sum = c.checksums.as_ref().map(|_| Crc::new());
        let mut done = 0;
        while done < p.len {
            let end = p.len.min(done + SUMMED);
            copy_part(c, p, &bytes, done, end, ps)?;
            if let Some(h) = &mut sum {
                h.update(bytes.bytes(done, end - done));
            }
            done = end;
        }
        if let (Some(k), Some(h)) = (&c.checksums, sum) {
            k.add(path, p.offset, p.len, h.finalize());
        }
        c.progress.advance(p.len);
    }
    Ok(())
}

/// Bytes copied before they are summed: the copy has just read them, and
/// this much stays in the CPU's cache (summing each piece of 2 MiB after its
/// copy read it from memory again: 1 GiB restarted in 0.23 s against 0.21
/// s, medians of ten).
const SUMMED: u64 = 256 << 10;

/// Bytes `from..to` of piece `p` into the process.
fn copy_part(c: &Copier<'_>, p: &Piece, bytes: &FileBytes<'_>, from: u64, to: u64, ps: u64) -> Result<()> {
    let failed = |what: String| RestoreError::Rebuild(format!("process {}: copying pages to {:#x}: {what}", c.pid, p.vaddr + from));
    let mut done = from;
    while done < to {
        match c.uffd.copy(p.vaddr + done, bytes.ptr().wrapping_add(done as usize), to - done).map_err(|e| failed(format!("UFFDIO_COPY: {e}")))? {
            Copied::All => break,
            Copied::Exists(n) => {
                // Nothing else fills these areas; should a page be there, it is written over.
                let at = done + n;
                c.mem.write(p.vaddr + at, bytes.bytes(at, ps))?;
                done = at + ps;
            }
            Copied::Gone | Copied::MmGone => return Err(failed("the memory went away".into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_each_run_in_order_and_no_more() {
        let ps = 4096;
        let big = PIECE / ps * 2 + 3;
        let runs = [SourceRun { vaddr: 0x100000, npages: big, file: 1, file_offset: 0x2000 }, SourceRun { vaddr: 0x9000_0000, npages: 1, file: 0, file_offset: 0 }];
        let ps_ = pieces(&runs, ps);
        assert_eq!(ps_.len(), 4);
        assert!(ps_.iter().all(|p| p.len <= PIECE && p.len % ps == 0));
        let mut at = (0x100000, 0x2000);
        for p in &ps_[..3] {
            assert_eq!((p.vaddr, p.offset, p.file), (at.0, at.1, 1));
            at = (at.0 + p.len, at.1 + p.len);
        }
        assert_eq!(at.0, 0x100000 + big * ps);
        assert_eq!((ps_[3].vaddr, ps_[3].len, ps_[3].file), (0x9000_0000, ps, 0));
    }
}
