//! A child whose image leaves pages to its parent (shared since a fork, see
//! `PageOrigin::Inherited`) gets them shared again: once the parent's memory
//! is in, the child is forked from the parent, so its private anonymous
//! areas start as the parent's, copy-on-write. The areas it had from its
//! parent are kept; everything else of the parent's is unmapped, and only
//! the pages the child no longer shared are written (its own, and zeros
//! where it had none).

use super::rounds::minus;
use super::{advice_of, build_prot, Restoree};
use crate::check::RestoreError;
use crate::ns::Sandbox;
use crate::shape::{self, Member};
use crate::shared::Registry;
use crate::Result;
use cryo_image::chain::{ResolvedPages, SourceRun};
use cryo_image::{PageOrigin, ProcessEntry, ProcessImage, Vma, VmaKind};
use cryo_injector::{Arg, Batch, Remote};
use cryo_tracer::arch::Sysno;
use cryo_tracer::{ptrace, Seized};
use std::collections::HashMap;

/// A range of addresses, [start, end).
type Range = (u64, u64);

/// Can `entry` (`p`) be forked from its restored parent? A leaf of the tree
/// (it forks nothing itself), in its parent's process group and session and
/// running its program (it inherits them), with pages left to its parent.
pub fn eligible(entry: &ProcessEntry, entries: &[ProcessEntry], p: &ProcessImage, images: &HashMap<i32, ProcessImage>) -> bool {
    let Some(parent) = entries.iter().find(|e| e.pid == entry.ppid) else { return false };
    images.get(&parent.pid).is_some_and(|q| q.exe == p.exe)
        && !entries.iter().any(|e| e.ppid == entry.pid)
        && (entry.pgid, entry.sid) == (parent.pgid, parent.sid)
        && entry.pgid != entry.pid
        && entry.sid != entry.pid
        && p.pages.iter().any(|r| r.origin == PageOrigin::Inherited)
}

impl<'a> Restoree<'a> {
    /// Fork the child `entry` (`image`) in this process, whose memory is in.
    /// It comes stopped and traced, with the parent's stdio at 0-2 and no
    /// other fd, as a created process has cryo's.
    pub fn fork_child(&mut self, entry: &'a ProcessEntry, image: &'a ProcessImage, sandbox: &mut Sandbox, reg: &mut Registry, in_ns: bool) -> Result<Member<'a>> {
        let old = entry.pid;
        let mut b = Batch::new();
        let tid = b.data(&old.to_le_bytes());
        // struct clone_args up to set_tid_size (CLONE_ARGS_SIZE_VER1); every field is 64 bits.
        let mut args = Vec::with_capacity(80);
        for v in [0, 0, 0, 0, image.exit_signal as u64, 0, 0, 0, 0, u64::from(in_ns)] {
            args.extend_from_slice(&v.to_le_bytes());
        }
        let at = b.data(&args);
        if in_ns {
            b.data_pointer(at + 64, tid, 8);
        }
        b.call(Sysno::Clone3, &[Arg::Data(at), 80.into()]);
        self.m.remote.cloned.clear();
        let out = self.run(&format!("forking process {old}"), &b)?;
        let host = self.m.remote.cloned.pop().ok_or_else(|| RestoreError::Rebuild(format!("process {old} was created but not reported to cryo")))?;
        sandbox.track(host);
        let inside = out.results[0] as i32;
        if in_ns && inside != old {
            return Err(RestoreError::Rebuild(format!("process {old} was created with pid {inside}")));
        }
        let mut seized = Seized::adopt(host)?;
        ptrace::set_options(host, shape::OPTIONS)?;
        reg.pids.insert(old, inside);
        let failed = |e: cryo_injector::InjectError| RestoreError::Rebuild(format!("process {old}: setting up: {e}"));
        // Loading a restorer needs a bootstrap gadget in private executable
        // memory: a page made with the gadget of this process's restorer
        // (the child's copy shares its memfd), unmapped with the rest of
        // what the child does not keep.
        let gp = self.m.seized.thread(self.m.remote.tid).gp().to_vec();
        let mut first = Remote::with_regs(host, host, self.parasite.gadget(), gp)?;
        let ps = cryo_tracer::arch::page_size();
        let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let page = first.syscall(&mut seized, Sysno::Mmap, [0, ps, rwx, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0]).map_err(failed)?;
        let spot = Vma { start: page, end: page + ps, prot: rwx as u32, shared: false, kind: VmaKind::Anon, offset: 0, dev: 0, inode: 0, name: String::new(), vmflags: Vec::new() };
        let mut remote = Remote::bootstrap(&mut seized, host, &[spot])?;
        for (s, fd) in self.tmp().stdio.iter().enumerate() {
            if let Some(fd) = fd {
                remote.syscall(&mut seized, Sysno::Dup3, [*fd, s as u64, 0, 0, 0, 0]).map_err(failed)?;
            }
        }
        remote.syscall(&mut seized, Sysno::CloseRange, [3, u64::from(u32::MAX), 0, 0, 0, 0]).map_err(failed)?;
        Ok(Member { entry, image: Some(image), host, seized, remote })
    }
}

/// The child's areas to keep from its parent: private anonymous areas of
/// its image that hold pages left to the parent, which the parent's image
/// has at the same place (without MADV_WIPEONFORK or MADV_DONTFORK, which
/// forks do not copy), and which the fork copied (`now`: the child's map).
pub fn kept_areas(p: &ProcessImage, parent: &ProcessImage, now: &[Vma]) -> Vec<Range> {
    p.vmas
        .iter()
        .filter(|v| v.anonymous() && p.pages.iter().any(|r| r.origin == PageOrigin::Inherited && r.vaddr >= v.start && r.vaddr < v.end))
        .filter(|v| parent.vmas.iter().any(|q| (q.start, q.end, q.kind) == (v.start, v.end, v.kind) && q.anonymous() && !q.has_flag("wf") && !q.has_flag("dc")))
        .filter(|v| now.iter().any(|n| n.start <= v.start && v.end <= n.end && n.inode == 0 && !n.shared))
        .map(|v| (v.start, v.end))
        .collect()
}

/// The pages of `src` to write into a child forked from its parent: all but
/// those left to the parent in the areas kept from it.
pub fn own_pages(p: &ProcessImage, src: &ResolvedPages, kept: &[Range], ps: u64) -> ResolvedPages {
    let mut shared: Vec<Range> = p
        .pages
        .iter()
        .filter(|r| r.origin == PageOrigin::Inherited && kept.iter().any(|k| k.0 <= r.vaddr && r.vaddr < k.1))
        .map(|r| (r.vaddr, r.vaddr + r.npages * ps))
        .collect();
    shared.sort_unstable();
    let mut runs = Vec::new();
    for r in &src.runs {
        for (a, b) in minus((r.vaddr, r.vaddr + r.npages * ps), &shared) {
            runs.push(SourceRun { vaddr: a, npages: (b - a) / ps, file: r.file, file_offset: r.file_offset + (a - r.vaddr) });
        }
    }
    ResolvedPages { files: src.files.clone(), runs }
}

/// Ranges of the kept areas where the child's image has no page: they must
/// read as zero (never touched, or all zero), not as the parent's.
pub fn zero_gaps(p: &ProcessImage, kept: &[Range], ps: u64) -> Vec<Range> {
    let mut had: Vec<Range> = p.pages.iter().filter(|r| r.origin != PageOrigin::Reference).map(|r| (r.vaddr, r.vaddr + r.npages * ps)).collect();
    had.sort_unstable();
    kept.iter().flat_map(|&k| minus(k, &had)).collect()
}

/// Before the child's pages are written: kept areas writable where pages
/// go, with the child's own advice, and zero where it had no page.
pub fn prepare_kept(b: &mut Restoree) -> Result<()> {
    let p = b.p.clone();
    let ps = cryo_tracer::arch::page_size();
    let mut batch = Batch::new();
    for v in p.vmas.iter().filter(|v| b.kept.contains(&(v.start, v.end))) {
        batch.call(Sysno::Mprotect, &[v.start.into(), v.len().into(), (build_prot(&p, v) as u64).into()]);
        for advice in advice_of(v) {
            batch.call_may_fail(Sysno::Madvise, &[v.start.into(), v.len().into(), advice.into()]);
        }
    }
    for (a, e) in zero_gaps(&p, &b.kept, ps) {
        batch.call(Sysno::Madvise, &[a.into(), (e - a).into(), (libc::MADV_DONTNEED as u64).into()]);
    }
    b.run("emptying what the child did not share", &batch).map(drop)
}
