//! Pre-copy rounds: a process rebuilt from one image, not yet running, is
//! brought up to a later incremental image of it. Its memory stays where it
//! is: only areas that appeared, moved or changed kind are mapped anew, those
//! gone are unmapped, pages the new image stores are read over the old ones,
//! and pages it neither stores nor keeps from its parent are dropped. So the
//! last round, taken while the original is frozen, costs the pages written
//! since the round before, not the whole memory.

use super::{build_prot, is_special, map_areas, open_high, read_pages, PageProgress, Restoree};
use crate::check::RestoreError;
use crate::shared::Registry;
use crate::Result;
use cryo_image::chain::ResolvedPages;
use cryo_image::{PageOrigin, ProcessImage, Vma, VmaKind};
use cryo_injector::Batch;
use cryo_tracer::arch::Sysno;
use std::sync::Arc;

type Range = (u64, u64);

/// Whether the memory of `old` may stay as `new`'s where both lie: the same
/// object at the same offsets, and for a shared file mapping the same
/// protection (its fd was opened for that).
fn same_object(old: &Vma, new: &Vma) -> bool {
    let offset_base = |v: &Vma| v.offset.wrapping_sub(v.start);
    let file_backed = matches!(new.kind, VmaKind::File | VmaKind::Shmem);
    old.kind == new.kind
        && old.shared == new.shared
        && old.name == new.name
        && old.dev == new.dev
        && old.inode == new.inode
        && (!file_backed || offset_base(old) == offset_base(new))
        && (!new.shared || old.prot == new.prot)
        && old.has_flag("gd") == new.has_flag("gd")
}

/// Sorted, disjoint ranges where `old` and `new` map the same object.
fn kept(old: &[Vma], new: &[Vma]) -> Vec<Range> {
    let mut out = Vec::new();
    for n in new.iter().filter(|v| !is_special(v)) {
        for o in old.iter().filter(|v| !is_special(v) && same_object(v, n)) {
            let (s, e) = (o.start.max(n.start), o.end.min(n.end));
            if s < e {
                out.push((s, e));
            }
        }
    }
    out.sort_unstable();
    out
}

/// The parts of `r` outside every range of `sorted`.
pub(super) fn minus(r: Range, sorted: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut at = r.0;
    for &(s, e) in sorted.iter().filter(|&&(s, e)| e > r.0 && s < r.1) {
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < r.1 {
        out.push((at, r.1));
    }
    out
}

/// The parts of `r` inside ranges of `sorted`.
fn within(r: Range, sorted: &[Range]) -> Vec<Range> {
    sorted.iter().filter_map(|&(s, e)| (s.max(r.0) < e.min(r.1)).then_some((s.max(r.0), e.min(r.1)))).collect()
}

/// `v` cut down to `r` (which lies inside it).
fn piece(v: &Vma, r: Range) -> Vma {
    let mut p = v.clone();
    p.offset = v.offset + (r.0 - v.start);
    p.start = r.0;
    p.end = r.1;
    p
}

fn runs_of(p: &ProcessImage, origin: PageOrigin, ps: u64) -> Vec<Range> {
    let mut out: Vec<Range> = p.pages.iter().filter(|r| r.origin == origin).map(|r| (r.vaddr, r.vaddr + r.npages * ps)).collect();
    out.sort_unstable();
    out
}

impl Restoree<'_> {
    /// Bring memory from the image this process was rebuilt from (or last
    /// brought up to) to `next`, whose pages unchanged since then are marked
    /// as in its parent; `own` is `next`'s own pages file and runs.
    pub fn update(&mut self, next: ProcessImage, own: &ResolvedPages, reg: &mut Registry, progress: &PageProgress) -> Result<()> {
        let ps = cryo_tracer::arch::page_size();
        let pid = next.pid;
        let old = std::mem::replace(&mut self.p, Arc::new(next));
        let p = self.p.clone();
        let changed = |what: String| RestoreError::Rebuild(format!("process {pid}: {what} between pre-copy rounds"));
        for v in p.vmas.iter().filter(|v| is_special(v)) {
            if !old.vmas.iter().any(|o| o.kind == v.kind && o.start == v.start && o.end == v.end) {
                return Err(changed(format!("{} moved", v.name)));
            }
        }
        let kept = kept(&old.vmas, &p.vmas);
        let parent = runs_of(&p, PageOrigin::Parent, ps);
        if let Some(r) = parent.iter().find(|&&r| !minus(r, &kept).is_empty()) {
            return Err(changed(format!("pages at {:#x} are said unchanged, but their area was not there", r.0)));
        }
        self.raise_temps(&p)?;

        let mut batch = Batch::new();
        for o in old.vmas.iter().filter(|v| !is_special(v)) {
            for (s, e) in minus((o.start, o.end), &kept) {
                batch.call(Sysno::Munmap, &[s.into(), (e - s).into()]);
            }
        }
        self.run("unmapping areas gone since the last round", &batch)?;
        let fresh: Vec<Vma> =
            p.vmas.iter().filter(|v| !is_special(v)).flat_map(|v| minus((v.start, v.end), &kept).into_iter().map(move |r| piece(v, r))).collect();
        let blob = (self.area, self.area + self.blob_size);
        if let Some(v) = fresh.iter().find(|v| v.start < blob.1 && blob.0 < v.end) {
            return Err(changed(format!("memory at {:#x} is now where the restorer runs", v.start)));
        }
        map_areas(self, reg, &fresh.iter().collect::<Vec<_>>())?;

        let here = runs_of(&p, PageOrigin::Here, ps);
        let mut keep_or_write = parent.clone();
        keep_or_write.extend(&here);
        keep_or_write.sort_unstable();
        let mut batch = Batch::new();
        for v in p.vmas.iter().filter(|v| !is_special(v)) {
            for r in within((v.start, v.end), &kept) {
                batch.call(Sysno::Mprotect, &[r.0.into(), (r.1 - r.0).into(), (build_prot(&p, v) as u64).into()]);
                // Shared memory holds what another process may still
                // store; private memory the image neither keeps nor stores
                // is zero or the file's again.
                if !v.shared {
                    for (s, e) in minus(r, &keep_or_write) {
                        batch.call(Sysno::Madvise, &[s.into(), (e - s).into(), (libc::MADV_DONTNEED as u64).into()]);
                    }
                }
            }
        }
        self.run("adjusting memory kept from the last round", &batch)?;

        let mut batch = Batch::new();
        let base = self.tmp().base;
        let fd = open_high(&mut batch, &own.files[0].path.to_string_lossy(), base);
        let out = self.run("opening the round's pages", &batch)?;
        let fd = out.results[fd] as u64;
        read_pages(self, own, &[fd], progress)?;
        let mut batch = Batch::new();
        batch.call(Sysno::Close, &[fd.into()]);
        self.run("closing the round's pages", &batch).map(drop)
    }

    /// The restorer's own fds sit above the image's; a later image may hold
    /// higher ones, so they move up. The earlier rounds' pages files close.
    fn raise_temps(&mut self, p: &ProcessImage) -> Result<()> {
        let need = p.fds.iter().map(|f| f.fd as u64 + 1).max().unwrap_or(3).max(3);
        let tmp = self.tmp.as_mut().expect("fds prepared");
        let mut batch = Batch::new();
        for fd in tmp.pages.drain(..) {
            batch.call(Sysno::Close, &[fd.into()]);
        }
        let mut moved = Vec::new();
        if need > tmp.base {
            for (i, fd) in tmp.stdio.iter().chain(std::iter::once(&tmp.exe)).enumerate() {
                if let Some(fd) = *fd {
                    moved.push((i, batch.call(Sysno::Fcntl, &[fd.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), need.into()])));
                    batch.call(Sysno::Close, &[fd.into()]);
                }
            }
            tmp.base = need;
        }
        let out = self.run("moving the restorer's fds above the image's", &batch)?;
        let tmp = self.tmp.as_mut().expect("fds prepared");
        for (i, call) in moved {
            let fd = Some(out.results[call] as u64);
            match i {
                0..=2 => tmp.stdio[i] = fd,
                _ => tmp.exe = fd,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_arithmetic() {
        let sorted = [(10, 20), (30, 40)];
        assert_eq!(minus((0, 50), &sorted), vec![(0, 10), (20, 30), (40, 50)]);
        assert_eq!(minus((12, 18), &sorted), vec![]);
        assert_eq!(minus((15, 35), &sorted), vec![(20, 30)]);
        assert_eq!(within((15, 35), &sorted), vec![(15, 20), (30, 35)]);
        assert_eq!(within((0, 5), &sorted), vec![]);
    }

    fn anon(start: u64, end: u64, name: &str) -> Vma {
        Vma { start, end, prot: 3, shared: false, kind: VmaKind::Anon, offset: 0, dev: 0, inode: 0, name: name.into(), vmflags: vec![] }
    }

    #[test]
    fn a_grown_heap_keeps_its_old_part() {
        let old = [anon(0x1000, 0x5000, "[heap]"), anon(0x9000, 0xa000, "")];
        let new = [anon(0x1000, 0x8000, "[heap]"), anon(0x20000, 0x21000, "")];
        assert_eq!(kept(&old, &new), vec![(0x1000, 0x5000)]);
    }
}
