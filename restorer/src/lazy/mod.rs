//! Lazy restart (`cryo restart --lazy`): the tree runs before its memory is
//! in place. The large private areas (heap and anonymous mappings) are left
//! empty and registered with a userfaultfd each process makes; cryo keeps a
//! copy of it and, once the tree runs, fills pages as they are touched and
//! pushes the rest in the background, then lets go. Pages the kernel itself
//! writes on the program's behalf without a system call (signal frames below
//! the stack pointer, rseq, the robust list, the tid cleared at exit) are
//! read in before the tree runs; system calls are watched (see `syscalls`).
//!
//! A lazily restored tree cannot live without cryo until its memory is
//! complete: it is traced with PTRACE_O_EXITKILL, so that it dies with cryo
//! rather than run on with pages missing.

mod syscalls;

use crate::check::RestoreError;
use crate::file_pages::FileBytes;
use crate::rebuild::PagesOnDemand;
use crate::Result;
use cryo_image::chain::{ResolvedPages, SourceRun};
use cryo_image::ranges;
use cryo_image::{ProcessImage, Vma, VmaKind};
use cryo_tracer::arch::{Arch, Native};
use cryo_tracer::ptrace::{self, Stop, SyscallInfo};
use cryo_tracer::uffd::{Copied, Uffd};
use nix::errno::Errno;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;
use syscalls::Needs;

/// Read in before the tree runs, around each thread's stack pointer: the
/// frames it returns into and where the kernel puts a signal frame.
const STACK_BELOW: u64 = 256 << 10;
const STACK_ABOVE: u64 = 64 << 10;
/// Brought in around a faulting page.
const FAULT_CHUNK: u64 = 256 << 10;
/// Pushed per step in the background.
const PUSH_CHUNK: u64 = 4 << 20;
/// Pushed per step from another host: a fault waits for no more than this
/// to cross the link before it is served.
const REMOTE_PUSH_CHUNK: u64 = 1 << 20;

/// Which of a process's pages are read before it runs and which come later.
pub struct Plan {
    pub eager: ResolvedPages,
    pub lazy: Vec<SourceRun>,
    /// Areas to register: (start, end, is the heap).
    pub areas: Vec<(u64, u64, bool)>,
}

/// Locked memory ("lo") is filled first: locking it again faults it all in.
fn may_be_lazy(v: &Vma) -> bool {
    !v.shared
        && matches!(v.kind, VmaKind::Anon | VmaKind::Heap)
        && v.prot & libc::PROT_EXEC as u32 == 0
        && !v.has_flag("gd")
        && !v.has_flag("lo")
}

/// Pages the kernel may write for a thread on its own (no syscall to catch).
fn kernel_touched(p: &ProcessImage) -> Vec<(u64, u64)> {
    let mut r = Vec::new();
    for t in &p.threads {
        let sp = Native::sp(&t.regsets[0].data);
        r.push((sp.saturating_sub(STACK_BELOW), sp.saturating_add(STACK_ABOVE)));
        if let Some(rs) = &t.rseq {
            r.push((rs.addr, rs.addr + rs.len as u64));
        }
        if t.robust_list != 0 {
            r.push((t.robust_list, t.robust_list + t.robust_list_len.max(64)));
        }
        if t.clear_child_tid != 0 {
            r.push((t.clear_child_tid, t.clear_child_tid + 8));
        }
        if t.sigaltstack.flags & 2 == 0 && t.sigaltstack.size > 0 {
            r.push((t.sigaltstack.sp, t.sigaltstack.sp + t.sigaltstack.size));
        }
    }
    r
}

pub fn plan(p: &ProcessImage, src: &ResolvedPages, ps: u64) -> Plan {
    split(&p.vmas, kernel_touched(p), src, ps)
}

fn split(vmas: &[Vma], kernel_touched: Vec<(u64, u64)>, src: &ResolvedPages, ps: u64) -> Plan {
    let areas = ranges::normalized(vmas.iter().filter(|v| may_be_lazy(v)).map(|v| (v.start, v.end)).collect(), ps);
    let eager_only = ranges::normalized(kernel_touched, ps);
    // Lazy pages are copied from a mapping of their file: page-aligned.
    let (movable, fixed): (Vec<&SourceRun>, Vec<&SourceRun>) =
        src.runs.iter().partition(|r| src.files[r.file].compression.is_none() && r.file_offset % ps == 0);
    let (in_areas, outside) = ranges::cut(movable, &areas, ps);
    let (must, lazy) = ranges::cut(&in_areas, &eager_only, ps);
    let mut runs: Vec<SourceRun> = fixed.into_iter().cloned().chain(outside).chain(must).collect();
    runs.sort_by_key(|r| (r.file, r.file_offset));
    let eager = ResolvedPages { files: src.files.clone(), runs };
    let heap: Vec<(u64, u64)> = vmas.iter().filter(|v| v.kind == VmaKind::Heap).map(|v| (v.start, v.end)).collect();
    let areas = ranges::holding(&areas, &lazy).into_iter().map(|(s, e)| (s, e, heap.iter().any(|h| h.0 < e && s < h.1))).collect();
    Plan { eager, lazy, areas }
}

#[derive(Clone, Copy)]
struct Piece {
    end: u64,
    file: usize,
    offset: u64,
}

/// A process whose memory cryo is still completing.
pub struct Process {
    /// Its host pid, for messages.
    pub host: i32,
    uffd: Option<Uffd>,
    /// The pages files, open here; none where they stay on the image's host.
    files: Vec<Option<File>>,
    paths: Vec<PathBuf>,
    /// What pages fetched from the image's host pass through.
    fetched: Vec<u8>,
    pending: BTreeMap<u64, Piece>,
    areas: Vec<(u64, u64, bool)>,
}

impl Process {
    /// With `on_demand`, its pages files stay on the image's host (see [`Server::new`]).
    pub fn new(host: i32, uffd: Uffd, src: &ResolvedPages, plan: &Plan, on_demand: bool, ps: u64) -> Result<Process> {
        let files = src
            .files
            .iter()
            .map(|f| match on_demand {
                true => Ok(None),
                false => File::open(&f.path).map(Some).map_err(|e| RestoreError::Io { what: format!("opening {}", f.path.display()), source: e }),
            })
            .collect::<Result<Vec<_>>>()?;
        let paths = src.files.iter().map(|f| f.path.clone()).collect();
        let pending = plan.lazy.iter().map(|r| (r.vaddr, Piece { end: r.vaddr + r.npages * ps, file: r.file, offset: r.file_offset })).collect();
        Ok(Process { host, uffd: Some(uffd), files, paths, fetched: Vec::new(), pending, areas: plan.areas.clone() })
    }

    fn done(&self) -> bool {
        self.uffd.is_none()
    }

    /// Every pending page that [lo, hi) touches into place.
    fn load(&mut self, lo: u64, hi: u64, remote: Remote<'_>) -> Result<u64> {
        let ps = cryo_tracer::arch::page_size();
        let (lo, hi) = (lo & !(ps - 1), hi.checked_add(ps - 1).map_or(u64::MAX, |h| h & !(ps - 1)));
        let mut starts: Vec<u64> = self.pending.range(..=lo).next_back().filter(|(_, p)| p.end > lo).map(|(&s, _)| s).into_iter().collect();
        if lo < u64::MAX {
            starts.extend(self.pending.range(lo + 1..hi.max(lo + 1)).map(|(&s, _)| s));
        }
        let mut bytes = 0;
        for s in starts {
            let p = self.pending.remove(&s).expect("listed");
            let (from, to) = (s.max(lo), p.end.min(hi));
            if s < from {
                self.pending.insert(s, Piece { end: from, ..p });
            }
            if to < p.end {
                self.pending.insert(to, Piece { offset: p.offset + (to - s), ..p });
            }
            let mut at = from;
            while at < to {
                let n = (to - at).min(PUSH_CHUNK);
                self.copy(at, n, p.file, p.offset + (at - s), remote)?;
                at += n;
            }
            bytes += to - from;
        }
        self.close_if_complete();
        Ok(bytes)
    }

    fn copy(&mut self, dst: u64, len: u64, file: usize, offset: u64, remote: Remote<'_>) -> Result<()> {
        if self.uffd.is_none() {
            return Ok(());
        }
        let host = self.host;
        let piece = match (&self.files[file], remote) {
            (Some(f), _) => FileBytes::of(f, offset, len, &mut self.fetched).map_err(|e| failed(host, &format!("reading its pages file at {offset:#x}"), e))?,
            (None, Some(remote)) => {
                self.fetched.resize(len as usize, 0);
                remote.read(&self.paths[file], offset, &mut self.fetched)?;
                FileBytes::Read(&self.fetched)
            }
            (None, None) => unreachable!("pages on demand come with their source"),
        };
        let src = piece.ptr();
        let Some(uffd) = &self.uffd else { return Ok(()) };
        let ps = cryo_tracer::arch::page_size();
        let mut done = 0;
        while done < len {
            match uffd.copy(dst + done, src.wrapping_add(done as usize), len - done).map_err(|e| failed(host, "UFFDIO_COPY", e))? {
                Copied::All => break,
                // A page that came meanwhile: leave it.
                Copied::Exists(n) => done += n + ps,
                Copied::Gone => {
                    tracing::debug!("lazy: process {}: {:#x}+{:#x} no longer mapped", self.host, dst + done, len - done);
                    break;
                }
                Copied::MmGone => {
                    self.pending.clear();
                    break;
                }
            }
        }
        Ok(())
    }

    /// Once nothing is pending, the userfaultfd goes: its areas fault as any
    /// memory again (the pages no image holds are zeros).
    fn close_if_complete(&mut self) {
        if self.pending.is_empty() {
            self.uffd = None;
        }
    }

    /// Returns the bytes of pages brought in (zeros not counted).
    fn serve_fault(&mut self, addr: u64, ps: u64, remote: Remote<'_>) -> Result<u64> {
        let page = addr & !(ps - 1);
        let pending = self.pending.range(..=page).next_back().is_some_and(|(_, p)| p.end > page);
        if pending {
            let lo = page & !(FAULT_CHUNK - 1);
            return self.load(lo, lo + FAULT_CHUNK, remote);
        }
        let Some(uffd) = &self.uffd else { return Ok(0) };
        // Zeros up to the next pending page, within the area and the chunk.
        let area_end = self.areas.iter().find(|a| a.0 <= page && page < a.1).map_or(page + ps, |a| a.1);
        let next = self.pending.range(page..).next().map_or(u64::MAX, |(&s, _)| s);
        let end = area_end.min(next).min((page & !(FAULT_CHUNK - 1)) + FAULT_CHUNK).max(page + ps);
        uffd.zeropage(page, end - page).map_err(|e| failed(self.host, "UFFDIO_ZEROPAGE", e))?;
        Ok(0)
    }

    fn needs(&mut self, n: Needs, remote: Remote<'_>) -> Result<u64> {
        Ok(match n {
            Needs::All => self.load(0, u64::MAX, remote)?,
            Needs::Ranges(r) => {
                let mut bytes = 0;
                for (lo, hi) in r {
                    bytes += self.load(lo, hi, remote)?;
                }
                bytes
            }
            Needs::HeapFrom(a) => {
                let heaps: Vec<_> = self.areas.iter().filter(|h| h.2 && h.1 > a).map(|h| (h.0.max(a), h.1)).collect();
                let mut bytes = 0;
                for (lo, hi) in heaps {
                    bytes += self.load(lo, hi, remote)?;
                }
                bytes
            }
            Needs::CloneArgs(_) => unreachable!("resolved by the caller"),
        })
    }
}

fn failed(host: i32, what: &str, e: Errno) -> RestoreError {
    RestoreError::Rebuild(format!("lazy restart of process {host}: {what}: {e}"))
}

struct Thread {
    process: usize,
    /// The syscall it is in, from its entry stop.
    entry: Option<(u64, [u64; 6])>,
}

#[derive(Default)]
struct Stats {
    faults: u64,
    fault_bytes: u64,
    syscalls: u64,
    syscall_bytes: u64,
    reissued: u64,
    pushed: u64,
}

/// Where pages that are not in files here come from.
type Remote<'a> = Option<&'a dyn PagesOnDemand>;

/// The tree as released by a lazy restart: traced at its syscalls, with
/// some memory still to come.
pub struct Server<'a> {
    remote: Remote<'a>,
    processes: Vec<Process>,
    threads: HashMap<i32, Thread>,
    /// Threads created since, whose first stop is still to come.
    fresh: HashSet<i32>,
    stats: Stats,
}

/// Options for the threads of a lazily restored process while cryo completes it.
pub const TRACE_OPTIONS: libc::c_int = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEEXEC | libc::PTRACE_O_EXITKILL;

impl<'a> Server<'a> {
    /// `remote`: where the pages of processes made `on_demand` are.
    pub fn new(remote: Remote<'a>) -> Server<'a> {
        Server { remote, processes: Vec::new(), threads: HashMap::new(), fresh: HashSet::new(), stats: Stats::default() }
    }

    /// A process released with its threads stopped at syscall tracing.
    pub fn add(&mut self, p: Process, tids: &[i32]) {
        let i = self.processes.len();
        self.processes.push(p);
        for &t in tids {
            self.threads.insert(t, Thread { process: i, entry: None });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Serve faults and syscalls and push the rest until every page is in,
    /// then let the tree go. On an error the tree is killed: it cannot run
    /// on with part of its memory missing.
    pub fn run(mut self) -> Result<()> {
        match self.serve() {
            Ok(()) => {
                self.let_go();
                Ok(())
            }
            Err(e) => {
                self.kill();
                Err(e)
            }
        }
    }

    fn serve(&mut self) -> Result<()> {
        let t = Instant::now();
        let ps = cryo_tracer::arch::page_size();
        let push = std::env::var("CRYO_LAZY_PUSH").map_or(true, |v| v != "0");
        let mut faults = Vec::new();
        let mut next_push = 0;
        cryo_tracer::fault::inject("restart-lazy")?;
        while !self.processes.iter().all(Process::done) && !self.threads.is_empty() {
            if cryo_tracer::fault::aborted().is_some() {
                // Asked to stop: the memory is completed at once, and the tree runs on.
                for p in &mut self.processes {
                    self.stats.pushed += p.load(0, u64::MAX, self.remote)?;
                }
                continue;
            }
            let mut busy = false;
            let tids: Vec<i32> = self.threads.keys().copied().collect();
            for tid in tids {
                match ptrace::wait_flags(tid, libc::WNOHANG) {
                    Ok(Some(stop)) => {
                        busy = true;
                        self.on_stop(tid, stop)?;
                    }
                    Ok(None) => {}
                    Err(_) => {
                        self.threads.remove(&tid);
                    }
                }
            }
            for p in self.processes.iter_mut().filter(|p| !p.done()) {
                faults.clear();
                if let Some(u) = &p.uffd {
                    u.faults(&mut faults).map_err(|e| failed(p.host, "reading its userfaultfd", e))?;
                }
                for &a in &faults {
                    busy = true;
                    self.stats.faults += 1;
                    self.stats.fault_bytes += p.serve_fault(a, ps, self.remote)?;
                }
            }
            if push {
                let n = self.processes.len();
                if let Some(i) = (0..n).map(|k| (next_push + k) % n).find(|&i| !self.processes[i].done()) {
                    let p = &mut self.processes[i];
                    if let Some((&s, _)) = p.pending.iter().next() {
                        let step = if self.remote.is_some() { REMOTE_PUSH_CHUNK } else { PUSH_CHUNK };
                        self.stats.pushed += p.load(s, s.saturating_add(step), self.remote)?;
                    }
                    next_push = i + 1;
                }
            } else if !busy {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        for p in &mut self.processes {
            p.uffd = None;
        }
        let s = &self.stats;
        tracing::debug!(
            "lazy: every page in after {:.1} ms: {} faults ({} KiB), {} syscalls needed pages first ({} KiB), {} re-run after EFAULT, {} MiB pushed",
            t.elapsed().as_secs_f64() * 1000.0,
            s.faults,
            s.fault_bytes >> 10,
            s.syscalls,
            s.syscall_bytes >> 10,
            s.reissued,
            s.pushed >> 20
        );
        Ok(())
    }

    /// SIGKILL to every thread, each waited for (as its tracer, cryo must
    /// collect its end before its parent can).
    fn kill(&mut self) {
        for &tid in self.threads.keys() {
            // SAFETY: tkill has no memory arguments.
            unsafe { libc::syscall(libc::SYS_tkill, tid, libc::SIGKILL) };
        }
        for &tid in self.threads.keys() {
            while let Ok(s) = ptrace::wait(tid) {
                if matches!(s, Stop::Exited(_) | Stop::Killed(_)) {
                    break;
                }
            }
        }
    }

    fn on_stop(&mut self, tid: i32, stop: Stop) -> Result<()> {
        let resumed = match stop {
            Stop::Exited(_) | Stop::Killed(_) => {
                tracing::debug!("lazy: thread {tid} ended: {stop:?}");
                self.threads.remove(&tid);
                return Ok(());
            }
            Stop::Syscall => self.on_syscall(tid).and_then(|()| ptrace::cont_syscall(tid, 0).map_err(RestoreError::from)),
            Stop::Signal(sig) => {
                tracing::debug!("lazy: thread {tid}: signal {sig}");
                // The kernel is about to write a signal frame below the stack pointer.
                if let Ok(info) = ptrace::syscall_info(tid) {
                    let sp = info.sp();
                    self.needs(tid, Needs::Ranges(vec![(sp.saturating_sub(STACK_BELOW / 4), sp)]))?;
                }
                ptrace::cont_syscall(tid, sig).map_err(RestoreError::from)
            }
            Stop::Event { sig } if !self.fresh.remove(&tid) && matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) => {
                ptrace::listen(tid).map_err(RestoreError::from)
            }
            Stop::Event { .. } => ptrace::cont_syscall(tid, 0).map_err(RestoreError::from),
            Stop::OtherEvent(e) => {
                if e == libc::PTRACE_EVENT_CLONE {
                    if let Ok(new) = ptrace::event_msg(tid) {
                        let process = self.threads[&tid].process;
                        self.threads.insert(new as i32, Thread { process, entry: None });
                        self.fresh.insert(new as i32);
                    }
                } else if e == libc::PTRACE_EVENT_EXEC {
                    // A new program: the memory cryo was completing is gone.
                    let p = &mut self.processes[self.threads[&tid].process];
                    p.pending.clear();
                    p.close_if_complete();
                }
                ptrace::cont_syscall(tid, 0).map_err(RestoreError::from)
            }
        };
        match resumed {
            // Killed meanwhile: its exit is reported next.
            Err(RestoreError::Tracer(cryo_tracer::TracerError::Exited { .. })) => Ok(()),
            other => other,
        }
    }

    fn needs(&mut self, tid: i32, n: Needs) -> Result<()> {
        let p = &mut self.processes[self.threads[&tid].process];
        if p.done() {
            return Ok(());
        }
        let n = match n {
            Needs::CloneArgs(at) => {
                // Its own page first: cryo reads it from outside, which a missing page would fail.
                p.load(at, at + 64, self.remote)?;
                match read_words(p.host, at) {
                    Some(w) => syscalls::clone3(&w),
                    None => Needs::All,
                }
            }
            n => n,
        };
        let bytes = p.needs(n, self.remote)?;
        if bytes > 0 {
            self.stats.syscalls += 1;
            self.stats.syscall_bytes += bytes;
        }
        Ok(())
    }

    fn on_syscall(&mut self, tid: i32) -> Result<()> {
        let Ok(info) = ptrace::syscall_info(tid) else { return Ok(()) };
        match info {
            SyscallInfo::Entry { nr, args, .. } => {
                self.threads.get_mut(&tid).expect("traced").entry = Some((nr, args));
                self.needs(tid, syscalls::at_entry(nr, &args))
            }
            SyscallInfo::Exit { rval, .. } => {
                let entry = self.threads.get_mut(&tid).expect("traced").entry.take();
                let p = &mut self.processes[self.threads[&tid].process];
                match entry {
                    Some((nr, args)) if rval == syscalls::EFAULT && !p.done() => {
                        p.load(0, u64::MAX, self.remote)?;
                        let note = Native::REGSETS[0].note_type;
                        let mut gp = ptrace::get_regset(tid, note, Native::GP_SIZE).map_err(|e| cryo_tracer::TracerError::ptrace("PTRACE_GETREGSET", tid, e))?;
                        Native::reissue_syscall(&mut gp, nr, &args);
                        ptrace::set_regset(tid, note, &gp)?;
                        self.stats.reissued += 1;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
            SyscallInfo::None { .. } => Ok(()),
        }
    }

    /// Every page is in: stop tracing the tree.
    fn let_go(&mut self) {
        let mut left: Vec<i32> = self.threads.keys().copied().collect();
        let fresh = &mut self.fresh;
        while let Some(tid) = left.pop() {
            let _ = ptrace::interrupt(tid);
            loop {
                let sig = match ptrace::wait(tid) {
                    Err(_) | Ok(Stop::Exited(_)) | Ok(Stop::Killed(_)) => break,
                    Ok(Stop::Signal(sig)) => sig,
                    Ok(Stop::OtherEvent(e)) => {
                        if e == libc::PTRACE_EVENT_CLONE {
                            if let Ok(new) = ptrace::event_msg(tid) {
                                left.push(new as i32);
                                fresh.insert(new as i32);
                            }
                        }
                        0
                    }
                    Ok(_) => 0,
                };
                if ptrace::detach(tid, sig).is_ok() {
                    break;
                }
            }
        }
    }
}

/// The first eight words of a target's memory at `at`.
fn read_words(pid: i32, at: u64) -> Option<[u64; 8]> {
    let mut b = [0u8; 64];
    cryo_tracer::proc::MemFile::open(pid).and_then(|m| m.read(at, &mut b)).ok()?;
    let mut w = [0u64; 8];
    for (i, c) in b.chunks_exact(8).enumerate() {
        w[i] = u64::from_le_bytes(c.try_into().expect("8 bytes"));
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_image::chain::PagesFile;

    #[test]
    fn kernel_touched_pages_and_other_areas_stay_eager() {
        let ps = 4096;
        let vma = |start: u64, end: u64, kind: VmaKind| Vma {
            start,
            end,
            prot: 3,
            shared: false,
            kind,
            offset: 0,
            dev: 0,
            inode: 0,
            name: String::new(),
            vmflags: Vec::new(),
        };
        let vmas = vec![vma(0x10_0000, 0x20_0000, VmaKind::Heap), vma(0x40_0000, 0x50_0000, VmaKind::File)];
        // The word of a tid cleared at exit.
        let touched = vec![(0x18_0010, 0x18_0018)];
        let src = ResolvedPages {
            files: vec![PagesFile { path: "x".into(), compression: None, len: 0, crc: None }],
            runs: vec![
                SourceRun { vaddr: 0x10_0000, npages: 0x100, file: 0, file_offset: 0 },
                SourceRun { vaddr: 0x40_0000, npages: 1, file: 0, file_offset: 0x10_0000 },
            ],
        };
        let plan = split(&vmas, touched, &src, ps);
        let lazy: Vec<_> = plan.lazy.iter().map(|r| (r.vaddr, r.npages, r.file_offset)).collect();
        assert_eq!(lazy, vec![(0x10_0000, 0x80, 0), (0x18_1000, 0x7f, 0x8_1000)], "the heap but the page of the tid cleared at exit");
        let eager: Vec<_> = plan.eager.runs.iter().map(|r| (r.vaddr, r.npages)).collect();
        assert!(eager.contains(&(0x18_0000, 1)) && eager.contains(&(0x40_0000, 1)), "{eager:x?}");
        assert_eq!(plan.areas, vec![(0x10_0000, 0x20_0000, true)]);
    }
}
