//! Pages a process still shares with its parent since a fork (a forked
//! server's workers, a pool of children) are stored once: the child's image
//! marks them [`PageOrigin::Inherited`] and a restart reads the parent's.
//!
//! Sharing is found by content, not by page frames, which pagemap hides from
//! unprivileged readers: a child's page of anonymous memory is compared with
//! its parent's page at the same address, where the parent's image has
//! anonymous memory too. Then the parent's restored page is the compared one
//! (or zero, if the parent's was all zero and left out). Where both are
//! read frozen, pagemap's "mapped once" bit says which pages cannot be
//! shared (written by either since the fork), and those are not read. Pages are read through
//! /proc/PID/mem: process_vm_readv pins them read-only, which makes the
//! kernel unshare (copy) every page shared copy-on-write that it reads.

use cryo_image::{PageOrigin, PageRun, Vma};
use cryo_tracer::arch::page_size;
use cryo_tracer::proc::{pagemap, MemFile, Pagemap};

/// Bytes compared at a time.
const CHUNK: u64 = 256 << 10;

/// The parent's memory as its image has it.
pub struct ParentPages {
    /// Its memory areas.
    pub vmas: Vec<Vma>,
    /// Its memory as it is dumped: the frozen process, or its snapshot.
    pub mem: MemFile,
}

fn anonymous(v: &Vma) -> bool {
    v.anonymous() && v.prot & libc::PROT_READ as u32 != 0
}

/// The pagemaps of a child and its parent, both frozen (not snapshots,
/// whose pages are all shared with their process).
pub struct Pagemaps {
    pub mine: Pagemap,
    pub parent: Pagemap,
}

/// `runs` of process `pid` (areas `vmas`, read through `mine`) with the
/// pages equal to the parent's marked inherited.
pub fn split(pid: i32, runs: Vec<PageRun>, vmas: &[Vma], mine: &MemFile, parent: &ParentPages, frozen: Option<&Pagemaps>) -> Vec<PageRun> {
    let ps = page_size();
    let mut cmp = Compare { ps, mine, parent, frozen, a: vec![0; CHUNK as usize], b: vec![0; CHUNK as usize], ents: Vec::new(), theirs: Vec::new(), read: 0 };
    let mut same = 0u64;
    let mut out: Vec<PageRun> = Vec::with_capacity(runs.len());
    for run in runs {
        let v = vmas.iter().find(|v| v.start <= run.vaddr && run.vaddr < v.end);
        if run.origin != PageOrigin::Here || !v.is_some_and(anonymous) {
            out.push(run);
            continue;
        }
        // Pieces of one run may join; pieces of two runs stay apart (each
        // run is one range of the pages file: see `Sink`).
        let first = out.len();
        let push = |out: &mut Vec<PageRun>, vaddr: u64, npages: u64, origin: PageOrigin| {
            let joins = out.len() > first && out.last().is_some_and(|l| l.origin == origin && l.vaddr + l.npages * ps == vaddr);
            match out.last_mut() {
                Some(last) if joins => last.npages += npages,
                _ => out.push(PageRun { vaddr, npages, file_offset: 0, origin }),
            }
        };
        let end = run.vaddr + run.npages * ps;
        let mut at = run.vaddr;
        while at < end {
            let Some(pv) = parent.vmas.iter().find(|p| p.end > at && p.start < end) else {
                push(&mut out, at, (end - at) / ps, PageOrigin::Here);
                break;
            };
            if pv.start > at {
                push(&mut out, at, (pv.start - at) / ps, PageOrigin::Here);
                at = pv.start;
            }
            let stop = pv.end.min(end);
            if !anonymous(pv) {
                push(&mut out, at, (stop - at) / ps, PageOrigin::Here);
                at = stop;
                continue;
            }
            while at < stop {
                let n = (stop - at).min(CHUNK);
                for (i, is_same) in cmp.chunk(at, n).into_iter().enumerate() {
                    let origin = if is_same { PageOrigin::Inherited } else { PageOrigin::Here };
                    same += u64::from(is_same);
                    push(&mut out, at + i as u64 * ps, 1, origin);
                }
                at += n;
            }
        }
    }
    if cmp.read > 0 {
        tracing::debug!("process {pid}: {} pages compared with its parent's, {same} the same", cmp.read);
    }
    out
}

struct Compare<'a> {
    ps: u64,
    mine: &'a MemFile,
    parent: &'a ParentPages,
    frozen: Option<&'a Pagemaps>,
    a: Vec<u8>,
    b: Vec<u8>,
    ents: Vec<u64>,
    theirs: Vec<u64>,
    /// Pages read to compare.
    read: u64,
}

impl Compare<'_> {
    /// For each page of [at, at + len): is it the parent's too? A page that
    /// cannot be read is taken for the process's own.
    fn chunk(&mut self, at: u64, len: u64) -> Vec<bool> {
        let pages = (len / self.ps) as usize;
        let shareable = |e: &u64| e & pagemap::PRESENT != 0 && e & pagemap::EXCLUSIVE == 0;
        let maybe: Vec<bool> = match self.frozen {
            Some(maps) if maps.mine.entries(at, at + len, self.ps, &mut self.ents).is_ok() && maps.parent.entries(at, at + len, self.ps, &mut self.theirs).is_ok() => {
                self.ents.iter().zip(&self.theirs).map(|(a, b)| shareable(a) && shareable(b)).collect()
            }
            _ => vec![true; pages],
        };
        if !maybe.contains(&true) {
            return maybe;
        }
        let n = len as usize;
        self.read += pages as u64;
        if self.mine.read(at, &mut self.a[..n]).is_err() || self.parent.mem.read(at, &mut self.b[..n]).is_err() {
            return vec![false; pages];
        }
        let ps = self.ps as usize;
        maybe.iter().enumerate().map(|(i, &m)| m && self.a[i * ps..(i + 1) * ps] == self.b[i * ps..(i + 1) * ps]).collect()
    }
}
