//! Turning a parked fork of cryo into the checkpointed process, one batch of
//! syscalls at a time, run by the parasite inside it.

use crate::check::RestoreError;
use crate::shape::Member;
use crate::shared::{self, Registry, Source};
use crate::{layout, Result};
use cryo_image::chain::ResolvedPages;
use cryo_image::codec::{PagesReader, FRAME_RAW};
use cryo_image::{Creds, ImageReader, PageOrigin, ProcessImage, ThreadImage, Vma, VmaKind};
use cryo_injector::{Arg, Batch, BatchOutput, Parasite, Remote};
use cryo_tracer::arch::{push_word as put_word, word, Arch, Native, Sysno};
use cryo_tracer::{proc, ptrace};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod copied;
mod fds;
pub(crate) mod forked;
mod huge;
mod inet;
mod rounds;
mod sockopts;
mod pty;
mod on_demand;
mod streamed;
pub(crate) mod sockets;
mod timers;
mod userfault;

pub use huge::{pmd_size as huge_page_size, HugePages};
pub use on_demand::{OnDemand, PagesOnDemand};
pub use streamed::{PageStream, Streamed};

/// Where a process's own pages file is (those of parent images are files).
#[derive(Clone, Copy)]
pub enum OwnPages<'a> {
    InFiles,
    /// Arriving on a stream (`cryo restart -`).
    Streamed(Streamed<'a>),
    /// Left on the host the image came from (`cryo migrate --postcopy`).
    OnDemand(OnDemand<'a>),
}

/// Bytes of socket data sent per batch (the command area holds 256 KiB).
const SOCK_CHUNK: usize = 128 << 10;

const AT_FDCWD: u64 = -100i64 as u64;
const RSEQ_FLAG_UNREGISTER: u64 = 1;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const PR_SET_NAME: u64 = 15;
const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_SET_THP_DISABLE: u64 = 41;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const SS_DISABLE: i32 = 2;
const CAP_V3: u32 = 0x2008_0522;
/// Areas mapped per batch; each takes up to three calls.
const VMAS_PER_BATCH: usize = 400;
/// preadv calls per batch, iovecs per call (IOV_MAX), bytes per call (below MAX_RW_COUNT).
const PREADV_PER_BATCH: usize = 8;
const IOV_MAX: usize = 1024;
const PREADV_MAX_BYTES: u64 = 1 << 30;


fn is_special(v: &Vma) -> bool {
    matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar | VmaKind::Vsyscall)
}

/// One process being rebuilt: the parasite runs batches of syscalls in it.
pub struct Restoree<'a> {
    pub m: Member<'a>,
    p: Arc<ProcessImage>,
    /// Its pid as the restored processes see it.
    inside: i32,
    parasite: Parasite,
    area: u64,
    blob_size: u64,
    own_vmas: Vec<Vma>,
    tmp: Option<TempFds>,
    /// Host tids of the threads created, in image order after the main one.
    threads: Vec<i32>,
    /// Memory still to fill after it runs (lazy restart).
    lazy: Option<crate::lazy::Process>,
    /// Fill whole stretches of this size with huge pages ([`huge`]).
    pub huge_pages: Option<u64>,
    /// Forked from its restored parent ([`forked`]), keeping these areas.
    pub forked: bool,
    pub kept: Vec<(u64, u64)>,
    /// Another CPU is free while its memory fills: cryo fills it with two
    /// threads, or one beside the process ([`read_pages`]).
    pub spare_cpu: bool,
    /// Where pages copied into place leave their checksums, when the pages
    /// files are checked after the fill ([`crate::digests`]).
    pub checksums: Option<Arc<cryo_image::digest::KnownParts>>,
}

impl<'a> Restoree<'a> {
    /// Load the parasite into a created process, somewhere neither cryo's
    /// memory nor the image's will be.
    pub fn load(mut m: Member<'a>, p: Arc<ProcessImage>, reg: &Registry) -> Result<Restoree<'a>> {
        let own_vmas = proc::vmas(m.host)?;
        let blob_size = Parasite::mapping_size()?;
        // Room for the vDSO and its data pages, laid out as the kernel has them.
        let kernel = own_vmas.iter().filter(|v| matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar));
        let span = kernel.clone().map(|v| v.end).max().unwrap_or(0) - kernel.clone().map(|v| v.start).min().unwrap_or(0);
        let specials: u64 = span.max(kernel.map(|v| v.len()).sum());
        let limit = if Native::IS_64BIT { 1 << 47 } else { 0xc000_0000 };
        let area = layout::free_area(&own_vmas, &p.vmas, blob_size + specials, limit)
            .ok_or_else(|| RestoreError::Rebuild(format!("process {}: no free address range for the restorer", p.pid)))?;
        let parasite = Parasite::load(&mut m.seized, &mut m.remote, Some(area))?;
        let inside = reg.pids.inside(p.pid).expect("every member has a pid");
        Ok(Restoree { m, p, inside, parasite, area, blob_size, own_vmas, tmp: None, threads: Vec::new(), lazy: None, huge_pages: None, forked: false, kept: Vec::new(), spare_cpu: false, checksums: None })
    }

    /// Its pid in the image.
    pub fn pid(&self) -> i32 {
        self.p.pid
    }

    /// Run a batch in the main thread.
    fn run(&mut self, what: &str, b: &Batch) -> Result<BatchOutput> {
        if b.is_empty() {
            return Ok(BatchOutput { results: Vec::new(), data: Vec::new() });
        }
        let pid = self.p.pid;
        self.parasite
            .run(&mut self.m.seized, &mut self.m.remote, b)
            .map_err(|e| RestoreError::Rebuild(format!("process {pid}: {what}: {e}")))
    }

    /// Run a batch in another thread of the process.
    fn run_in(&mut self, thread: &mut Remote, what: &str, b: &Batch) -> Result<BatchOutput> {
        let pid = self.p.pid;
        self.parasite
            .run(&mut self.m.seized, thread, b)
            .map_err(|e| RestoreError::Rebuild(format!("process {pid}: {what}: {e}")))
    }

    fn tmp(&self) -> &TempFds {
        self.tmp.as_ref().expect("fds prepared")
    }

    /// Stage 1: the address space, replaced wholesale by the image's areas,
    /// still empty. `own_pages` says where the image's own pages file is
    /// (parents' files are read as usual).
    pub fn map_memory(&mut self, src: &ResolvedPages, reg: &mut Registry, in_userns: bool, own_pages: OwnPages<'_>) -> Result<()> {
        let tmp = prepare(self, &on_disk(src, own_pages), in_userns)?;
        self.tmp = Some(tmp);
        let own = std::mem::take(&mut self.own_vmas);
        teardown(self, &own)?;
        let copy = match own_pages {
            OwnPages::InFiles => {
                let own = &src.files[0].path;
                let file = std::fs::File::open(own).map_err(|e| RestoreError::Io { what: format!("opening {}", own.display()), source: e })?;
                crate::check::read_vdso_copy(&self.p, file)?
            }
            _ => None,
        };
        let copy_later = !matches!(own_pages, OwnPages::InFiles);
        move_vdso(self, &own, self.area + self.blob_size, copy, copy_later)?;
        let p = self.p.clone();
        thp_disable(self)?;
        let kept = self.kept.clone();
        map_areas(self, reg, &p.vmas.iter().filter(|v| !is_special(v) && !kept.contains(&(v.start, v.end))).collect::<Vec<_>>())
    }

    /// Stage 2: the pages read into place (several processes may do this at
    /// once: it involves no other process). With `rounds`, later images are
    /// to come ([`Restoree::update`]): memory stays writable and mm fields
    /// are left to [`Restoree::protect`]. With `lazy`, its large private
    /// areas are filled once it runs ([`Restoree::release`]).
    pub fn fill_memory(&mut self, src: &ResolvedPages, pages_read: &PageProgress, rounds: bool, own_pages: OwnPages<'_>, lazy: bool) -> Result<()> {
        let on_disk = on_disk(src, own_pages);
        let (pages, exe) = (self.tmp().pages.clone(), self.tmp().exe);
        let p = self.p.clone();
        if lazy {
            let plan = crate::lazy::plan(&p, src, cryo_tracer::arch::page_size());
            huge::prepare(self, &plan.eager)?;
            let on_demand = match own_pages {
                OwnPages::OnDemand(d) => {
                    on_demand::read(self, d, &plan.eager, pages_read)?;
                    true
                }
                _ => {
                    read_pages(self, &plan.eager, &pages, pages_read)?;
                    false
                }
            };
            if !plan.lazy.is_empty() {
                self.lazy = Some(userfault::register(self, src, &plan, on_demand)?);
            }
        } else if self.forked {
            // Forked from its parent: only what it no longer shared.
            forked::prepare_kept(self)?;
            let own = forked::own_pages(&p, &on_disk, &self.kept, cryo_tracer::arch::page_size());
            huge::prepare(self, &own)?;
            read_pages(self, &own, &pages, pages_read)?;
        } else {
            // All of them, whether from files or a stream.
            huge::prepare(self, src)?;
            read_pages(self, &on_disk, &pages, pages_read)?;
        }
        if let OwnPages::Streamed(s) = own_pages {
            streamed::read(self, s, pages_read)?;
        }
        if rounds {
            return Ok(());
        }
        protect_and_mm(self, exe)
    }

    /// After the last pre-copy round: protections and mm fields as the last
    /// image has them.
    pub fn protect(&mut self) -> Result<()> {
        let exe = self.tmp().exe;
        protect_and_mm(self, exe)
    }

    /// Stage 2: the fd table; shared descriptions come from their first holder.
    pub fn fds(&mut self, reg: &mut Registry, img: &ImageReader) -> Result<()> {
        fds::install(self, reg, img)
    }

    /// Stage 3: cwd, umask, signal actions, timers, limits.
    pub fn process_state(&mut self) -> Result<()> {
        process_state(self)
    }

    /// After every process has taken what it shares with others: the
    /// temporaries (cryo's stdio copies, the pages file, created pipe ends and
    /// memfds) go.
    pub fn close_temps(&mut self) -> Result<()> {
        let mut batch = Batch::new();
        batch.call(Sysno::CloseRange, &[self.tmp().base.into(), (u32::MAX as u64).into(), 0.into()]);
        self.run("closing the restorer's fds", &batch).map(drop)
    }

    /// Stage 4: threads, per-thread state and credentials, then the main
    /// thread's registers. The process stays stopped until `release`.
    pub fn finish(&mut self) -> Result<()> {
        let p = self.p.clone();
        for t in &p.threads[1..] {
            let host = create_thread(self, t)?;
            self.threads.push(host);
        }
        // After the threads: a timer may signal one of them.
        timers::restore(self)?;
        // The main thread last: its capabilities were needed for clone3 set_tid.
        let mut main = thread_state(&p.threads[0], &p.creds);
        flush_pending(&mut main);
        // Only now: it would lock what the restorer maps in the process too.
        let future = (p.mlockall != 0).then(|| main.call_may_fail(Sysno::Mlockall, &[(p.mlockall as u64).into()]));
        let out = self.run("restoring the main thread's state", &main)?;
        if let Some(c) = future.filter(|&c| cryo_parasite::abi::is_error(out.results[c])) {
            tracing::warn!("process {}: mlockall({:#x}) for later mappings could not be set again: errno {}", p.pid, p.mlockall, -out.results[c]);
        }
        // The last syscall unmaps the blob it runs from; cryo catches its exit.
        let r = self.m.remote.syscall_to_exit(&mut self.m.seized, Sysno::Munmap, [self.area, self.blob_size, 0, 0, 0, 0])?;
        if cryo_parasite::abi::is_error(r) {
            return Err(RestoreError::Rebuild(format!("process {}: unmapping the restorer: errno {}", p.pid, -r)));
        }
        load_registers(self.m.host, &p.threads[0])
    }

    /// Let the process run, and send it what was pending at the checkpoint.
    /// A process with memory still to fill runs traced, handed to `lazy`.
    pub fn release(self, lazy: &mut crate::lazy::Server) -> Result<()> {
        let host = self.m.host;
        self.m.seized.forget();
        let tids: Vec<i32> = std::iter::once(host).chain(self.threads.iter().copied()).collect();
        match self.lazy {
            Some(memory) => {
                for &tid in &tids {
                    ptrace::set_options(tid, crate::lazy::TRACE_OPTIONS)?;
                }
                lazy.add(memory, &tids);
                for &tid in tids.iter().rev() {
                    ptrace::cont_syscall(tid, 0)?;
                }
            }
            None => {
                for &tid in tids.iter().rev() {
                    ptrace::detach(tid, 0)?;
                }
            }
        }
        deliver_pending(host, &self.p, &self.threads);
        Ok(())
    }
}

/// Bytes of pages read into place across the tree, told to the caller's
/// callback (by whichever process's reading thread got them in).
pub struct PageProgress {
    report: Option<crate::Progress>,
    done: AtomicU64,
    total: u64,
    /// `done` when last told.
    told: AtomicU64,
}

impl PageProgress {
    pub fn new(report: Option<crate::Progress>, total: u64) -> PageProgress {
        PageProgress { report, done: AtomicU64::new(0), total, told: AtomicU64::new(0) }
    }

    fn report(&self, done: u64) {
        if let Some(f) = &self.report {
            f(done, self.total);
        }
    }

    /// `n` more bytes are in place: told once a MiB more is (pages written
    /// through /proc/PID/mem may come a page at a time), by one thread.
    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let told = self.told.load(Ordering::Relaxed);
        if done.saturating_sub(told) >= 1 << 20 && self.told.compare_exchange(told, done, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.report(done);
        }
    }

    /// Every page is in place (pages kept only for reference, such as the
    /// vDSO copy, are never read): the caller clears its progress display
    /// before the restored program can write to the terminal.
    pub fn finish(&self) {
        self.done.store(self.total, Ordering::Relaxed);
        self.told.store(self.total, Ordering::Relaxed);
        self.report(self.total);
    }
}

/// The pages found in files: all, or only the parents' where the image's
/// own come another way.
fn on_disk<'s>(src: &'s ResolvedPages, own_pages: OwnPages<'_>) -> Cow<'s, ResolvedPages> {
    match own_pages {
        OwnPages::InFiles => Cow::Borrowed(src),
        OwnPages::Streamed(_) | OwnPages::OnDemand(_) => Cow::Owned(streamed::parents_only(src)),
    }
}

/// Standard signals the rebuild itself caused (a zombie child's SIGCHLD) are
/// taken out; the image's pending set is sent again on release.
fn flush_pending(batch: &mut Batch) {
    let mut set = 0u64;
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            set |= 1 << (sig - 1);
        }
    }
    let set = batch.data(&set.to_le_bytes());
    let zero = batch.reserve(2 * word());
    for _ in 1..32 {
        batch.call_may_fail(Sysno::RtSigtimedwait, &[Arg::Data(set), 0.into(), Arg::Data(zero), 8.into()]);
    }
}

/// fds cryo's helpers hold in the process while it is rebuilt.
struct TempFds {
    /// Lowest fd above every fd of the image: temporaries live from here up.
    base: u64,
    stdio: [Option<u64>; 3],
    /// The pages files of the image and of its parents (`ResolvedPages::files`).
    pages: Vec<u64>,
    exe: Option<u64>,
}

fn prepare(b: &mut Restoree, src: &ResolvedPages, in_userns: bool) -> Result<TempFds> {
    let p = b.p.clone();
    let base = p.fds.iter().map(|f| f.fd as u64 + 1).max().unwrap_or(3).max(3);
    let mut batch = Batch::new();
    // The fork's own rseq area (cryo's glibc) is about to be unmapped.
    if let Some(r) = ptrace::get_rseq(b.m.host)? {
        batch.call(Sysno::Rseq, &[r.addr.into(), (r.len as u64).into(), RSEQ_FLAG_UNREGISTER.into(), (r.sig as u64).into()]);
    }
    let stdio: Vec<usize> =
        (0..3u64).map(|s| batch.call_may_fail(Sysno::Fcntl, &[s.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()])).collect();
    let pages: Vec<usize> = src.files.iter().map(|f| open_high(&mut batch, &f.path.to_string_lossy(), base)).collect();
    // A forked child's exe is its parent's already (and PR_SET_MM_MAP
    // refuses to replace an exe file that is still mapped: EBUSY).
    let exe = (in_userns && !b.forked).then(|| open_high(&mut batch, &p.exe, base));
    batch.call(Sysno::CloseRange, &[0.into(), (base - 1).into(), 0.into()]);
    let out = b.run("preparing fds", &batch)?;
    let ok = |i: usize| (!cryo_parasite::abi::is_error(out.results[i])).then_some(out.results[i] as u64);
    Ok(TempFds { base, stdio: [ok(stdio[0]), ok(stdio[1]), ok(stdio[2])], pages: pages.iter().map(|&i| out.results[i] as u64).collect(), exe: exe.map(|i| out.results[i] as u64) })
}

/// Open `path` read-only at an fd of at least `base`; returns the call
/// giving the fd.
fn open_high(batch: &mut Batch, path: &str, base: u64) -> usize {
    let path = batch.cstr(path);
    let o = batch.call(Sysno::Openat, &[AT_FDCWD.into(), Arg::Data(path), ((libc::O_RDONLY | libc::O_CLOEXEC) as u64).into(), 0.into()]);
    let h = batch.call(Sysno::Fcntl, &[Arg::Result(o), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[Arg::Result(o)]);
    h
}

/// Unmap everything of cryo's in the process (or of its parent's, for a
/// forked child: but the areas it keeps), except the blob and the kernel's
/// special mappings (moved next).
fn teardown(b: &mut Restoree, own: &[Vma]) -> Result<()> {
    let mut batch = Batch::new();
    let mut kept = b.kept.clone();
    kept.sort_unstable();
    for v in own.iter().filter(|v| !is_special(v)) {
        for (start, end) in rounds::minus((v.start, v.end), &kept) {
            batch.call(Sysno::Munmap, &[start.into(), (end - start).into()]);
        }
    }
    b.run("unmapping the restorer's own memory", &batch).map(drop)
}

/// This kernel's vDSO and data pages go to `temp`, laid out as they were;
/// the image's vDSO, redirected to them, goes where it was.
fn redirect_vdso(b: &mut Restoree, own: &[Vma], temp: u64, copy: &[u8], mine: &[u8]) -> Result<()> {
    let kernel: Vec<&Vma> = own.iter().filter(|v| matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar)).collect();
    let base = kernel.iter().map(|v| v.start).min().unwrap_or(0);
    let mut batch = Batch::new();
    let mut new_base = 0;
    for v in &kernel {
        let to = temp + (v.start - base);
        if v.kind == VmaKind::Vdso {
            new_base = to;
        }
        if v.start != to {
            batch.call(Sysno::Mremap, &[v.start.into(), v.len().into(), v.len().into(), (MREMAP_MAYMOVE | MREMAP_FIXED).into(), to.into()]);
        }
    }
    let theirs = b.p.vmas.iter().find(|v| v.kind == VmaKind::Vdso).cloned().ok_or_else(|| RestoreError::Corrupt("a vDSO copy without a vDSO".into()))?;
    let code = crate::vdso::redirect(copy, mine, new_base)?;
    if code.len() as u64 != theirs.len() {
        return Err(RestoreError::Corrupt(format!("the vDSO's copy holds {} bytes for an area of {}", code.len(), theirs.len())));
    }
    let anon = (libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    batch.call(Sysno::Mmap, &[theirs.start.into(), theirs.len().into(), ((libc::PROT_READ | libc::PROT_WRITE) as u64).into(), anon.into(), u64::MAX.into(), 0.into()]);
    b.run("moving this kernel's vDSO aside", &batch)?;
    b.m.remote.mem.write(theirs.start, &code)?;
    // Executable only now: on ARM that makes the kernel flush the caches for it.
    let mut batch = Batch::new();
    batch.call(Sysno::Mprotect, &[theirs.start.into(), theirs.len().into(), (theirs.prot as u64).into()]);
    b.run("protecting the image's vDSO", &batch)?;
    tracing::info!("process {}: the vDSO of the image jumps to this kernel's, at {new_base:#x}", b.p.pid);
    Ok(())
}

/// Once the image's vDSO `copy` arrived with the pages: keep this kernel's
/// vDSO where `move_vdso` put it if the copy is the same, else redirect.
pub(crate) fn settle_vdso(b: &mut Restoree, copy: &[u8]) -> Result<()> {
    let (_, mine) = crate::check::own_vdso()?;
    let now: Vec<Vma> = proc::vmas(b.m.host)?.into_iter().filter(|v| matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar)).collect();
    let theirs = b.p.vmas.iter().find(|v| v.kind == VmaKind::Vdso).map(|v| v.start);
    let in_place = now.iter().any(|v| v.kind == VmaKind::Vdso && Some(v.start) == theirs);
    if in_place && copy == mine && std::env::var_os(crate::vdso::FORCE_ENV).is_none() {
        return Ok(());
    }
    let temp = b.area + b.blob_size;
    redirect_vdso(b, &now, temp, copy, &mine)
}

/// PR_SET_THP_DISABLE before any page is filled: huge pages where the
/// process wanted none would stay. Bit 1 (only where madvised, Linux 6.18)
/// goes as the flags argument.
fn thp_disable(b: &mut Restoree) -> Result<()> {
    let mode = b.p.thp_disable as u64;
    if mode == 0 {
        return Ok(());
    }
    let mut batch = Batch::new();
    batch.call(Sysno::Prctl, &[PR_SET_THP_DISABLE.into(), 1.into(), (mode & !1).into(), 0.into(), 0.into()]);
    b.run("turning huge pages off (PR_SET_THP_DISABLE)", &batch).map(drop)
}

/// Put the vDSO and vvar pages where the image had them: the program holds
/// pointers into them. Each moves through a temporary spot first, so old and
/// new places may overlap. Where the image's vDSO (`copy`) is another
/// kernel's, it is redirected to this one's instead ([`crate::vdso`]). With
/// `copy_later` (the copy comes with the pages, on a stream) the vDSO is put
/// in place as if it were this kernel's, or aside where it cannot be, and
/// [`settle_vdso`] finishes once the copy is there.
fn move_vdso(b: &mut Restoree, own: &[Vma], temp: u64, copy: Option<Vec<u8>>, copy_later: bool) -> Result<()> {
    if let Some(copy) = copy {
        let (_, mine) = crate::check::own_vdso()?;
        if copy != mine || std::env::var_os(crate::vdso::FORCE_ENV).is_some() {
            return redirect_vdso(b, own, temp, &copy, &mine);
        }
    }
    let image = &b.p.vmas;
    let kernel = |v: &&Vma| matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar);
    let same_layout = own.iter().filter(kernel).all(|mine| image.iter().any(|v| v.name == mine.name && v.len() == mine.len()))
        && image.iter().filter(kernel).all(|v| own.iter().any(|o| o.name == v.name));
    if !same_layout && copy_later {
        // Another kernel's, surely: aside until the copy arrives (`settle_vdso`).
        let base = own.iter().filter(kernel).map(|v| v.start).min().unwrap_or(0);
        let mut batch = Batch::new();
        for v in own.iter().filter(kernel) {
            batch.call(Sysno::Mremap, &[v.start.into(), v.len().into(), v.len().into(), (MREMAP_MAYMOVE | MREMAP_FIXED).into(), (temp + (v.start - base)).into()]);
        }
        return b.run("moving this kernel's vDSO aside", &batch).map(drop);
    }
    let mut batch = Batch::new();
    let mut moves = Vec::new();
    let mut spot = temp;
    for mine in own.iter().filter(kernel) {
        match image.iter().find(|v| v.name == mine.name) {
            Some(theirs) if theirs.len() == mine.len() => {
                batch.call(Sysno::Mremap, &[mine.start.into(), mine.len().into(), mine.len().into(), (MREMAP_MAYMOVE | MREMAP_FIXED).into(), spot.into()]);
                moves.push((spot, theirs.start, mine.len()));
                spot += mine.len();
            }
            Some(theirs) => {
                return Err(RestoreError::Rebuild(format!(
                    "{} is {} bytes here and {} in the image: the image comes from a different kernel, which cryo cannot restore on yet",
                    mine.name,
                    mine.len(),
                    theirs.len()
                )))
            }
            None => {
                batch.call(Sysno::Munmap, &[mine.start.into(), mine.len().into()]);
            }
        }
    }
    for (from, to, len) in moves {
        batch.call(Sysno::Mremap, &[from.into(), len.into(), len.into(), (MREMAP_MAYMOVE | MREMAP_FIXED).into(), to.into()]);
    }
    if let Some(v) = image.iter().find(|v| matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar) && !own.iter().any(|o| o.name == v.name)) {
        return Err(RestoreError::Rebuild(format!("this kernel has no {} mapping, which the image needs", v.name)));
    }
    b.run("moving the vDSO", &batch).map(drop)
}

fn has_pages(p: &ProcessImage, v: &Vma) -> bool {
    p.pages.iter().any(|r| r.origin != PageOrigin::Reference && r.vaddr >= v.start && r.vaddr < v.end)
}

/// Protection while pages are read in: writable where pages go, and not yet
/// executable there where the instruction cache does not follow data writes
/// (ARM): the mprotect that adds PROT_EXEC afterwards makes the kernel clean
/// and invalidate the caches for the freshly written pages.
fn build_prot(p: &ProcessImage, v: &Vma) -> u32 {
    if has_pages(p, v) {
        let not_yet = if Native::needs_icache_flush() { libc::PROT_EXEC as u32 } else { 0 };
        (v.prot | libc::PROT_WRITE as u32) & !not_yet
    } else {
        v.prot
    }
}

/// Map `areas` (of the process's image, or pieces of them) where they belong.
fn map_areas(b: &mut Restoree, reg: &mut Registry, areas: &[&Vma]) -> Result<()> {
    let p = b.p.clone();
    let base = b.tmp().base;
    for chunk in areas.chunks(VMAS_PER_BATCH) {
        let mut batch = Batch::new();
        // Shared memory objects this batch creates: key, call giving the memfd.
        let mut created: Vec<((u64, u64), usize)> = Vec::new();
        for v in chunk {
            let prot = build_prot(&p, v) as u64;
            let mut flags = libc::MAP_FIXED as u64 | if v.shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE } as u64;
            if v.has_flag("gd") {
                flags |= libc::MAP_GROWSDOWN as u64;
            }
            let fd = match v.kind {
                VmaKind::File => {
                    let path = batch.cstr(&v.name);
                    let mode = if v.shared && v.prot & libc::PROT_WRITE as u32 != 0 { libc::O_RDWR } else { libc::O_RDONLY };
                    Some(batch.call(Sysno::Openat, &[AT_FDCWD.into(), Arg::Data(path), ((mode | libc::O_CLOEXEC) as u64).into(), 0.into()]))
                }
                VmaKind::Shmem if v.shared => {
                    let key = shared::shmem_key(v);
                    if let Some(&(_, fd)) = created.iter().find(|c| c.0 == key) {
                        batch.call(Sysno::Mmap, &[v.start.into(), v.len().into(), prot.into(), flags.into(), Arg::Result(fd), Native::mmap_offset_arg(v.offset).into()]);
                        continue;
                    }
                    match reg.shmem.get(&key) {
                        Some(&src) => Some(fetch_fd(&mut batch, src, b.inside)),
                        None => {
                            let fd = create_memfd(&mut batch, v, reg.shmem_size.get(&key).copied().unwrap_or(v.offset + v.len()), base);
                            created.push((key, fd));
                            batch.call(Sysno::Mmap, &[v.start.into(), v.len().into(), prot.into(), flags.into(), Arg::Result(fd), Native::mmap_offset_arg(v.offset).into()]);
                            continue;
                        }
                    }
                }
                _ => None,
            };
            match fd {
                Some(fd) => {
                    batch.call(Sysno::Mmap, &[v.start.into(), v.len().into(), prot.into(), flags.into(), Arg::Result(fd), Native::mmap_offset_arg(v.offset).into()]);
                    batch.call(Sysno::Close, &[Arg::Result(fd)]);
                }
                None => {
                    flags |= libc::MAP_ANONYMOUS as u64;
                    batch.call(Sysno::Mmap, &[v.start.into(), v.len().into(), prot.into(), flags.into(), u64::MAX.into(), 0.into()]);
                }
            }
        }
        for v in chunk {
            for advice in advice_of(v) {
                batch.call_may_fail(Sysno::Madvise, &[v.start.into(), v.len().into(), advice.into()]);
            }
        }
        let out = b.run("mapping memory", &batch)?;
        for (key, call) in created {
            reg.shmem.insert(key, Source { pid: b.inside, fd: out.results[call] as i32 });
        }
    }
    Ok(())
}

/// The madvise() advice an area had, from its VmFlags: what forks see of
/// it (a program may rely on MADV_WIPEONFORK to keep a random generator's
/// state from its children), what cores hold, huge pages and KSM. Given
/// before the pages are read in, so huge pages are used where the program
/// asked for them. Advice this kernel refuses is left out.
fn advice_of(v: &Vma) -> impl Iterator<Item = u64> + '_ {
    const ADVICE: [(&str, libc::c_int); 6] = [
        ("dc", libc::MADV_DONTFORK),
        ("wf", libc::MADV_WIPEONFORK),
        ("dd", libc::MADV_DONTDUMP),
        ("hg", libc::MADV_HUGEPAGE),
        ("nh", libc::MADV_NOHUGEPAGE),
        ("mg", libc::MADV_MERGEABLE),
    ];
    ADVICE.into_iter().filter(|(flag, _)| v.has_flag(flag)).map(|(_, advice)| advice as u64)
}

/// A new memfd for a shared memory object, sized and kept above the image's
/// fds (until `close_temps`) for the other processes that map it.
fn create_memfd(batch: &mut Batch, v: &Vma, size: u64, base: u64) -> usize {
    let name = v.name.trim_end_matches(" (deleted)").trim_start_matches('/').trim_start_matches("memfd:");
    let name = batch.cstr(if name.is_empty() { "cryo-shmem" } else { name });
    // Sealing allowed: an fd of the same memfd may bring seals back (fds stage).
    let m = batch.call(Sysno::MemfdCreate, &[Arg::Data(name), ((libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) as u64).into()]);
    let fd = batch.call(Sysno::Fcntl, &[Arg::Result(m), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[Arg::Result(m)]);
    batch.call(Sysno::Ftruncate, &[Arg::Result(fd), size.into()]);
    fd
}

/// A reference to the open file `src` holds, taken with pidfd_getfd (or dup
/// within one process). Returns the call whose result is the new fd; the
/// caller closes it.
fn fetch_fd(batch: &mut Batch, src: Source, me: i32) -> usize {
    if src.pid == me {
        return batch.call(Sysno::Fcntl, &[(src.fd as u64).into(), (libc::F_DUPFD_CLOEXEC as u64).into(), 0.into()]);
    }
    let pidfd = batch.call(Sysno::PidfdOpen, &[(src.pid as u64).into(), 0.into()]);
    let fd = batch.call(Sysno::PidfdGetfd, &[Arg::Result(pidfd), (src.fd as u64).into(), 0.into()]);
    batch.call(Sysno::Close, &[Arg::Result(pidfd)]);
    fd
}

/// One preadv: iovecs covering a contiguous stretch of the pages file.
pub(crate) struct Read {
    pub file: usize,
    pub file_offset: u64,
    pub iovs: Vec<(u64, u64)>,
    pub bytes: u64,
}

impl Read {
    /// This read cut in two at `at` bytes (a multiple of the page size).
    fn split_at(self, at: u64) -> (Read, Read) {
        let mut head = Read { file: self.file, file_offset: self.file_offset, iovs: Vec::new(), bytes: at };
        let mut rest = Read { file: self.file, file_offset: self.file_offset + at, iovs: Vec::new(), bytes: self.bytes - at };
        let mut done = 0;
        for (addr, len) in self.iovs {
            if done + len <= at {
                head.iovs.push((addr, len));
            } else if done >= at {
                rest.iovs.push((addr, len));
            } else {
                let k = at - done;
                head.iovs.push((addr, k));
                rest.iovs.push((addr + k, len - k));
            }
            done += len;
        }
        (head, rest)
    }
}

pub(crate) fn plan_reads(src: &ResolvedPages, ps: u64) -> Vec<Read> {
    let mut reads: Vec<Read> = Vec::new();
    for r in src.runs.iter().filter(|r| src.files[r.file].compression.is_none()) {
        let mut addr = r.vaddr;
        let mut off = r.file_offset;
        let mut left = r.npages * ps;
        while left > 0 {
            let fits = reads.last().is_some_and(|last| {
                last.file == r.file && last.file_offset + last.bytes == off && last.iovs.len() < IOV_MAX && last.bytes < PREADV_MAX_BYTES
            });
            if !fits {
                reads.push(Read { file: r.file, file_offset: off, iovs: Vec::new(), bytes: 0 });
            }
            let last = reads.last_mut().expect("just pushed");
            let n = left.min(PREADV_MAX_BYTES - last.bytes);
            last.iovs.push((addr, n));
            last.bytes += n;
            addr += n;
            off += n;
            left -= n;
        }
    }
    reads
}

/// Pages of compressed files: cryo decompresses them a frame at a time and
/// writes them into the process through /proc/PID/mem.
fn write_compressed_pages(b: &mut Restoree, src: &ResolvedPages, progress: &PageProgress) -> Result<()> {
    let ps = cryo_tracer::arch::page_size();
    for (i, f) in src.files.iter().enumerate().filter(|(_, f)| f.compression.is_some()) {
        let file = std::fs::File::open(&f.path).map_err(|e| RestoreError::Io { what: format!("opening {}", f.path.display()), source: e })?;
        let mut reader = PagesReader::new(file, f.compression.clone());
        let mut runs: Vec<_> = src.runs.iter().filter(|r| r.file == i).collect();
        runs.sort_by_key(|r| r.file_offset);
        let mut buf = vec![0u8; FRAME_RAW as usize];
        for r in runs {
            write_through_mem(b, r.vaddr, r.npages * ps, &mut buf, progress, |chunk, at| {
                reader
                    .read_exact_at(chunk, r.file_offset + at)
                    .map_err(|e| RestoreError::Io { what: format!("reading {}", f.path.display()), source: e })
            })?;
        }
    }
    Ok(())
}

/// Writes `len` bytes at `vaddr` into the process through /proc/PID/mem, a
/// `buf` at a time, each filled by `fill` (given its offset in the run):
/// for pages that do not come from a file the process can read itself.
fn write_through_mem(
    b: &mut Restoree,
    vaddr: u64,
    len: u64,
    buf: &mut [u8],
    progress: &PageProgress,
    fill: impl FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<()> {
    write_into(&b.m.remote.mem, vaddr, len, buf, progress, fill)
}

/// [`write_through_mem`] through a given /proc/PID/mem.
fn write_into(
    mem: &proc::MemFile,
    vaddr: u64,
    len: u64,
    buf: &mut [u8],
    progress: &PageProgress,
    mut fill: impl FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<()> {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64);
        let chunk = &mut buf[..n as usize];
        fill(chunk, done)?;
        mem.write(vaddr + done, chunk)?;
        done += n;
        progress.advance(n);
    }
    Ok(())
}

/// MADV_POPULATE_WRITE (Linux 5.14): fault pages in ahead, in one go.
const MADV_POPULATE_WRITE: u64 = 23;

/// Reads are cut into pieces of this size at most when a helper thread
/// shares them with the process: the two meet in the middle of the queue,
/// wherever that lies, a piece apart at most.
const SHARED_PIECE: u64 = 8 << 20;
/// Pieces the process takes from the queue at a time (one parasite batch).
const PIECES_PER_BATCH: usize = 4;
/// Less than this is not worth a thread: two pieces.
const HELPER_MIN_BYTES: u64 = 2 * SHARED_PIECE;
/// The helper's bytes read and written at a time.
const HELPER_BUFFER: usize = 4 << 20;

/// The pages of `src` put into place. Private anonymous memory is copied
/// there by cryo ([`copied`]: one thread, two with [`Restoree::spare_cpu`])
/// while the process reads the rest. Where the kernel gives no userfaultfd,
/// the process reads everything itself (preadv in large batches, after
/// MADV_POPULATE_WRITE); with [`Restoree::spare_cpu`]
/// a thread of cryo writes pages at the same time, through /proc/PID/mem,
/// which keeps a second CPU busy with the kernel's work on fresh pages (the
/// fault, the zeroing, the copy): the process takes reads from the front
/// of a queue, the thread from its back. The thread's way copies twice, the
/// process's once; measured on 1 GiB here (six alternating restarts), a
/// restart took 0.29–0.33 s against 0.39–0.60 s with the process alone.
fn read_pages(b: &mut Restoree, src: &ResolvedPages, fds: &[u64], progress: &PageProgress) -> Result<()> {
    write_compressed_pages(b, src, progress)?;
    let ps = cryo_tracer::arch::page_size();
    if let Some(plan) = copied::plan(b, src, ps) {
        if let Some(uffd) = copied::register(b, &plan)? {
            let c = copied::Copier { pid: b.p.pid, uffd, mem: proc::MemFile::open(b.m.host)?, src, progress, checksums: b.checksums.clone() };
            let threads = if b.spare_cpu { 2 } else { 1 };
            let reads = plan_reads(&plan.rest, ps);
            return copied::copy(c, &plan.copied, threads, || preadv_in_process(b, src, &reads, fds, progress));
        }
    }
    let reads = plan_reads(src, ps);
    let total: u64 = reads.iter().map(|r| r.bytes).sum();
    if !b.spare_cpu || total < HELPER_MIN_BYTES {
        return preadv_in_process(b, src, &reads, fds, progress);
    }
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(pieces(reads, SHARED_PIECE)));
    let next = |front: bool, n: usize| -> Vec<Read> {
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        std::iter::from_fn(|| if front { q.pop_front() } else { q.pop_back() }).take(n).collect()
    };
    let mem = proc::MemFile::open(b.m.host)?;
    let pid = b.p.pid;
    std::thread::scope(|s| {
        let helper = s.spawn(|| {
            let mut files = HashMap::new();
            let mut buf = vec![0u8; HELPER_BUFFER];
            let mut written = 0;
            loop {
                let piece = next(false, 1);
                if piece.is_empty() {
                    tracing::debug!("process {pid}: {} of {} MiB written by a helper thread", written >> 20, total >> 20);
                    return Ok(());
                }
                write_reads(&mem, src, &piece, &mut files, &mut buf, progress)?;
                written += piece[0].bytes;
            }
        });
        let mine = (|| loop {
            let batch = next(true, PIECES_PER_BATCH);
            if batch.is_empty() {
                return Ok(());
            }
            preadv_in_process(b, src, &batch, fds, progress)?;
        })();
        if mine.is_err() {
            // The helper stops at its next piece.
            queue.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        let helped = helper.join().unwrap_or_else(|_| Err(RestoreError::Rebuild("the thread writing pages panicked".into())));
        mine.and(helped)
    })
}

/// `reads` cut into pieces of `max` bytes at most (a multiple of the page
/// size), in the same order.
fn pieces(reads: Vec<Read>, max: u64) -> Vec<Read> {
    let mut out = Vec::new();
    for mut r in reads {
        while r.bytes > max {
            let (head, rest) = r.split_at(max);
            out.push(head);
            r = rest;
        }
        out.push(r);
    }
    out
}

/// [`read_pages`]' helper: `reads` from the pages files (opened once, in
/// `files`) into the process through /proc/PID/mem, `buf` at a time.
fn write_reads(
    mem: &proc::MemFile,
    src: &ResolvedPages,
    reads: &[Read],
    files: &mut HashMap<usize, std::fs::File>,
    buf: &mut [u8],
    progress: &PageProgress,
) -> Result<()> {
    for r in reads {
        let path = &src.files[r.file].path;
        let file = open_cached(files, src, r.file)?;
        let mut offset = r.file_offset;
        for &(addr, len) in &r.iovs {
            write_into(mem, addr, len, buf, progress, |chunk, at| {
                std::os::unix::fs::FileExt::read_exact_at(&*file, chunk, offset + at)
                    .map_err(|e| RestoreError::Io { what: format!("reading {} at {}", path.display(), offset + at), source: e })
            })?;
            offset += len;
        }
    }
    Ok(())
}

/// Pages file `i` of `src`, opened once into `files`.
fn open_cached<'f>(files: &'f mut HashMap<usize, std::fs::File>, src: &ResolvedPages, i: usize) -> Result<&'f std::fs::File> {
    Ok(match files.entry(i) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let path = &src.files[i].path;
            e.insert(std::fs::File::open(path).map_err(|e| RestoreError::Io { what: format!("opening {}", path.display()), source: e })?)
        }
    })
}

/// Reads run by the process itself, a batch of preadv calls at a time.
fn preadv_in_process(b: &mut Restoree, src: &ResolvedPages, reads: &[Read], fds: &[u64], progress: &PageProgress) -> Result<()> {
    let mut next = 0;
    while next < reads.len() {
        let mut batch = Batch::new();
        let mut calls = Vec::new();
        while let Some(r) = reads.get(next) {
            if calls.len() == PREADV_PER_BATCH || (!calls.is_empty() && !fits_with(&batch, r)) {
                break;
            }
            // The pages are allocated in one pass before they are filled:
            // cheaper than a fault per page during the read. Older kernels
            // refuse the advice, and fault as before.
            for &(a, l) in &r.iovs {
                batch.call_may_fail(Sysno::Madvise, &[a.into(), l.into(), MADV_POPULATE_WRITE.into()]);
            }
            let mut iov = Vec::with_capacity(r.iovs.len() * 2 * word());
            for &(a, l) in &r.iovs {
                put_word(&mut iov, a);
                put_word(&mut iov, l);
            }
            let at = batch.data(&iov);
            let lo = if Native::IS_64BIT { r.file_offset } else { r.file_offset & 0xffff_ffff };
            let i = batch.call(Sysno::Preadv, &[fds[r.file].into(), Arg::Data(at), (r.iovs.len() as u64).into(), lo.into(), (r.file_offset >> 32).into()]);
            calls.push((i, r.bytes, r.file_offset, r.file));
            next += 1;
        }
        let out = b.run("reading pages into place", &batch)?;
        for (i, want, off, file) in calls {
            if out.results[i] as u64 != want {
                return Err(RestoreError::Rebuild(format!(
                    "{}: read {} of {want} bytes at offset {off}",
                    src.files[file].path.display(),
                    out.results[i]
                )));
            }
            progress.advance(want);
        }
    }
    Ok(())
}

/// Does the batch have room for one more read (its madvise calls, its
/// preadv and its iovec array)?
fn fits_with(batch: &Batch, r: &Read) -> bool {
    // +8: the iovec array is 8-aligned in the data area.
    Parasite::fits_counts(batch.len() + r.iovs.len() + 1, batch.data_len() + r.iovs.len() * 2 * word() + 8)
}

fn protect_and_mm(b: &mut Restoree, exe_fd: Option<u64>) -> Result<()> {
    let p = b.p.clone();
    let mut batch = Batch::new();
    for v in p.vmas.iter().filter(|v| !is_special(v) && build_prot(&p, v) != v.prot) {
        batch.call(Sysno::Mprotect, &[v.start.into(), v.len().into(), (v.prot as u64).into()]);
    }
    b.run("setting memory protections", &batch)?;

    let mm = &p.mm;
    let mut map = Vec::with_capacity(104);
    for v in [mm.start_code, mm.end_code, mm.start_data, mm.end_data, mm.start_brk, mm.brk, mm.start_stack, mm.arg_start, mm.arg_end, mm.env_start, mm.env_end] {
        map.extend_from_slice(&v.to_le_bytes());
    }
    let mut batch = Batch::new();
    let auxv = batch.data(&mm.auxv);
    let auxv_ptr_at = map.len();
    // No compat translation for this struct: the pointer is as wide as the kernel's.
    let machine = nix::sys::utsname::uname().map(|u| u.machine().to_string_lossy().into_owned()).unwrap_or_default();
    map.resize(map.len() + Native::kernel_pointer_bytes(&machine), 0);
    map.extend_from_slice(&(mm.auxv.len() as u32).to_le_bytes());
    map.extend_from_slice(&(exe_fd.map_or(u32::MAX, |f| f as u32)).to_le_bytes());
    map.resize(104, 0);
    let map_at = batch.data(&map);
    batch.data_pointer(map_at + auxv_ptr_at, auxv, word());
    batch.call(Sysno::Prctl, &[PR_SET_MM.into(), PR_SET_MM_MAP.into(), Arg::Data(map_at), 104u64.into(), 0.into()]);
    b.run("restoring mm fields (prctl PR_SET_MM_MAP)", &batch).map(drop)
}

fn process_state(b: &mut Restoree) -> Result<()> {
    let p = b.p.clone();
    let mut batch = Batch::new();
    let cwd = batch.cstr(&p.cwd);
    batch.call(Sysno::Chdir, &[Arg::Data(cwd)]);
    batch.call(Sysno::Umask, &[(p.umask as u64).into()]);
    // The image's areas are all mapped by now: the personality only
    // concerns mappings made later (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE).
    let persona = batch.call_may_fail(Sysno::Personality, &[p.personality.into()]);
    if p.child_subreaper {
        batch.call(Sysno::Prctl, &[PR_SET_CHILD_SUBREAPER.into(), 1.into()]);
    }
    for (i, sa) in p.sigactions.iter().enumerate() {
        let sig = i as u64 + 1;
        if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
            continue;
        }
        let mut act = Vec::new();
        put_word(&mut act, sa.handler);
        put_word(&mut act, sa.flags);
        put_word(&mut act, sa.restorer);
        act.extend_from_slice(&sa.mask.to_le_bytes());
        let at = batch.data(&act);
        batch.call(Sysno::RtSigaction, &[sig.into(), Arg::Data(at), 0.into(), 8.into()]);
    }
    for (which, it) in p.itimers.iter().enumerate() {
        let mut v = Vec::new();
        for x in [it.interval_us / 1_000_000, it.interval_us % 1_000_000, it.value_us / 1_000_000, it.value_us % 1_000_000] {
            put_word(&mut v, x);
        }
        let at = batch.data(&v);
        batch.call(Sysno::Setitimer, &[(which as u64).into(), Arg::Data(at), 0.into()]);
    }
    // Limits the unprivileged restorer cannot raise back stay as they are.
    let mut limits = Vec::new();
    for l in &p.rlimits {
        let mut v = l.cur.to_le_bytes().to_vec();
        v.extend_from_slice(&l.max.to_le_bytes());
        let at = batch.data(&v);
        limits.push((batch.call_may_fail(Sysno::Prlimit64, &[0.into(), (l.resource as u64).into(), Arg::Data(at), 0.into()]), l));
    }
    // Locked memory, under the limit just restored, its pages already in.
    let mut locks = Vec::new();
    for v in p.vmas.iter().filter(|v| v.has_flag("lo")) {
        let flags = if v.has_flag("lf") { libc::MLOCK_ONFAULT as u64 } else { 0 };
        locks.push((batch.call_may_fail(Sysno::Mlock2, &[v.start.into(), v.len().into(), flags.into()]), v));
    }
    let out = b.run("restoring signal actions, timers, limits, locked memory, cwd and umask", &batch)?;
    if cryo_parasite::abi::is_error(out.results[persona]) {
        tracing::warn!("personality {:#x} could not be set again: errno {}", p.personality, -out.results[persona]);
    }
    for (i, l) in limits {
        if cryo_parasite::abi::is_error(out.results[i]) {
            tracing::warn!("resource limit {} ({} / {}) could not be restored: errno {}", l.resource, l.cur, l.max, -out.results[i]);
        }
    }
    for (i, v) in locks {
        if cryo_parasite::abi::is_error(out.results[i]) {
            tracing::warn!(
                "process {}: memory at {:#x} ({} KiB) was locked and could not be locked again (errno {}; RLIMIT_MEMLOCK, `ulimit -l`); it runs unlocked",
                p.pid,
                v.start,
                v.len() >> 10,
                -out.results[i]
            );
        }
    }
    Ok(())
}

/// What each thread must set up itself: name, robust list, clear_child_tid,
/// signal stack, rseq, and (last) its capabilities.
fn thread_state(t: &ThreadImage, c: &Creds) -> Batch {
    let w = word();
    let mut batch = Batch::new();
    let comm: String = t.comm.chars().take(15).collect();
    let comm = batch.cstr(&comm);
    batch.call(Sysno::Prctl, &[PR_SET_NAME.into(), Arg::Data(comm)]);
    let robust_len = if t.robust_list_len == 0 { 3 * w as u64 } else { t.robust_list_len };
    batch.call(Sysno::SetRobustList, &[t.robust_list.into(), robust_len.into()]);
    batch.call(Sysno::SetTidAddress, &[t.clear_child_tid.into()]);
    let ss = t.sigaltstack;
    let mut st = Vec::new();
    let (sp, flags, size) = if ss.sp == 0 || ss.flags & SS_DISABLE != 0 { (0, SS_DISABLE, 0) } else { (ss.sp, 0, ss.size) };
    put_word(&mut st, sp);
    st.extend_from_slice(&flags.to_le_bytes());
    if Native::IS_64BIT {
        st.extend_from_slice(&[0; 4]);
    }
    put_word(&mut st, size);
    let at = batch.data(&st);
    batch.call(Sysno::Sigaltstack, &[Arg::Data(at), 0.into()]);
    if let Some(r) = t.rseq {
        batch.call(Sysno::Rseq, &[r.addr.into(), (r.len as u64).into(), 0.into(), (r.sig as u64).into()]);
    }
    // Where no register set carries the TLS register (32-bit ARM), the thread sets it.
    let sets: Vec<(u32, &[u8])> = t.regsets.iter().map(|r| (r.note_type, r.data.as_slice())).collect();
    if let (Some(_), Some(tls)) = (Native::sysno(Sysno::SetTls), Native::tls(&sets)) {
        batch.call(Sysno::SetTls, &[tls.into()]);
    }
    // Credentials last: the capabilities the user namespace gave the fork go.
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&CAP_V3.to_le_bytes());
    hdr.extend_from_slice(&0u32.to_le_bytes());
    let hdr = batch.data(&hdr);
    let mut data = Vec::new();
    for half in [0, 32] {
        for set in [c.cap_eff, c.cap_prm, c.cap_inh] {
            data.extend_from_slice(&((set >> half) as u32).to_le_bytes());
        }
    }
    let data = batch.data(&data);
    batch.call_may_fail(Sysno::Capset, &[Arg::Data(hdr), Arg::Data(data)]);
    batch
}

/// Create one more thread with its old tid; it is attached at birth, sets up
/// its own state through the parasite, and gets its registers. Returns its host tid.
fn create_thread(b: &mut Restoree, t: &ThreadImage) -> Result<i32> {
    const THREAD_FLAGS: u64 = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    let mut batch = Batch::new();
    let set_tid = batch.data(&t.tid.to_le_bytes());
    // struct clone_args up to set_tid_size: ten u64s, whatever the word size.
    let mut args = Vec::new();
    for v in [THREAD_FLAGS, 0, 0, 0, 0, 0, 0, 0, 0, 1] {
        args.extend_from_slice(&v.to_le_bytes());
    }
    let at = batch.data(&args);
    batch.data_pointer(at + 8 * 8, set_tid, 8);
    batch.call(Sysno::Clone3, &[Arg::Data(at), (args.len() as u64).into()]);
    b.m.remote.cloned.clear();
    b.run(&format!("creating thread {}", t.tid), &batch)?;
    let host = b
        .m
        .remote
        .cloned
        .pop()
        .ok_or_else(|| RestoreError::Rebuild(format!("thread {} was created but not reported to cryo", t.tid)))?;
    match ptrace::wait(host)? {
        ptrace::Stop::Event { .. } | ptrace::Stop::Signal(libc::SIGSTOP) => {}
        other => return Err(RestoreError::Rebuild(format!("new thread {}: unexpected {other:?}", t.tid))),
    }
    let gp = ptrace::get_regset(host, t.regsets[0].note_type, Native::GP_SIZE)
        .map_err(|e| cryo_tracer::TracerError::ptrace("PTRACE_GETREGSET", host, e))?;
    let mut remote = Remote::with_regs(b.m.host, host, b.parasite.gadget(), gp)?;
    let batch = thread_state(t, &b.p.creds);
    b.run_in(&mut remote, &format!("restoring thread {}", t.tid), &batch)?;
    load_registers(host, t)?;
    Ok(host)
}

fn load_registers(tid: i32, t: &ThreadImage) -> Result<()> {
    for rs in t.regsets.iter().skip(1) {
        ptrace::set_regset(tid, rs.note_type, &rs.data)?;
    }
    let mut gp = t.regsets[0].data.clone();
    Native::restart_fixup(&mut gp);
    Native::clear_syscall(&mut gp);
    ptrace::set_regset(tid, t.regsets[0].note_type, &gp)?;
    ptrace::set_sigmask(tid, t.sigmask)?;
    Ok(())
}

/// Signals that were pending at the checkpoint are sent again: the
/// process-wide ones to the process, the others to their thread.
fn deliver_pending(host_pid: i32, p: &ProcessImage, host_tids: &[i32]) {
    send_pending(host_pid, None, p.shared_pending, &p.shared_pending_info);
    let tids = std::iter::once(host_pid).chain(host_tids.iter().copied());
    for (t, tid) in p.threads.iter().zip(tids) {
        send_pending(host_pid, Some(tid), t.pending, &t.pending_info);
    }
}

/// Queues again the signals of `mask` for process `pid` (or its thread
/// `tid`): each with the siginfo it was queued with where another process
/// may queue that siginfo (sigqueue, timers, AIO, message queues, SIGIO:
/// si_code < 0 but not tkill's), else as kill()/tgkill() send it. A
/// real-time signal comes back once per instance that was queued.
fn send_pending(pid: i32, tid: Option<i32>, mask: u64, infos: &[Vec<u8>]) {
    let sendable = |sig: i32| sig != libc::SIGKILL && sig != libc::SIGSTOP;
    for sig in (1..=64).filter(|&s| sendable(s) && mask & (1u64 << (s - 1)) != 0) {
        let queued: Vec<&Vec<u8>> = infos.iter().filter(|i| siginfo_field(i, 0) == Some(sig)).collect();
        // A standard signal is pending at most once.
        let instances = if sig < 32 { queued.len().min(1) } else { queued.len() };
        if instances == 0 {
            send_plain(pid, tid, sig);
        }
        for info in &queued[..instances] {
            let code = siginfo_field(info, 2).unwrap_or(0);
            if code >= 0 || code == libc::SI_TKILL || !queue_siginfo(pid, tid, sig, info) {
                send_plain(pid, tid, sig);
            }
        }
    }
}

/// The int at `index` of a raw siginfo_t (0: si_signo, 2: si_code).
fn siginfo_field(info: &[u8], index: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(info.get(index * 4..index * 4 + 4)?.try_into().ok()?))
}

fn send_plain(pid: i32, tid: Option<i32>, sig: i32) {
    match tid {
        // SAFETY: tgkill has no memory arguments.
        Some(tid) => unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) },
        // SAFETY: kill has no memory arguments.
        None => unsafe { libc::kill(pid, sig) as libc::c_long },
    };
}

/// rt_sigqueueinfo / rt_tgsigqueueinfo with a recorded siginfo.
fn queue_siginfo(pid: i32, tid: Option<i32>, sig: i32, info: &[u8]) -> bool {
    if info.len() != cryo_tracer::ptrace::SIGINFO_SIZE {
        return false;
    }
    // siginfo_t is 8-aligned.
    let mut buf = [0u64; cryo_tracer::ptrace::SIGINFO_SIZE / 8];
    for (w, b) in buf.iter_mut().zip(info.chunks_exact(8)) {
        *w = u64::from_ne_bytes(b.try_into().expect("8 bytes"));
    }
    let r = match tid {
        // SAFETY: `buf` is a siginfo_t-sized, aligned buffer alive across the call.
        Some(tid) => unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, buf.as_ptr()) },
        // SAFETY: as above.
        None => unsafe { libc::syscall(libc::SYS_rt_sigqueueinfo, pid, sig, buf.as_ptr()) },
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file_offset: u64, iovs: &[(u64, u64)]) -> Read {
        Read { file: 0, file_offset, iovs: iovs.to_vec(), bytes: iovs.iter().map(|i| i.1).sum() }
    }

    /// Every byte stays at the same address and file offset, in order,
    /// and no piece is larger than asked.
    #[test]
    fn reads_cut_into_pieces_keep_every_byte_in_place() {
        let reads = || vec![read(0, &[(0x10000, 0x3000), (0x20000, 0x1000)]), read(0x4000, &[(0x30000, 0x5000)])];
        let flat = |rs: &[Read]| -> Vec<(u64, u64)> {
            let mut out = Vec::new();
            for r in rs {
                let mut off = r.file_offset;
                for &(a, l) in &r.iovs {
                    for p in (0..l).step_by(0x1000) {
                        out.push((a + p, off + p));
                    }
                    off += l;
                }
                assert_eq!(r.bytes, r.iovs.iter().map(|i| i.1).sum::<u64>());
            }
            out
        };
        for max in [0x1000, 0x2000, 0x3000, 0x5000, 0x9000] {
            let cut = pieces(reads(), max);
            assert!(cut.iter().all(|r| r.bytes <= max && r.bytes > 0), "pieces of {max:#x}");
            assert_eq!(flat(&cut), flat(&reads()), "pieces of {max:#x}");
        }
        assert_eq!(pieces(reads(), 0x1000).len(), 9);
    }
}
