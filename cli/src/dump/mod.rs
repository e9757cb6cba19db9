//! `cryo checkpoint`: freeze, collect, stream pages, cure, release or kill.
//!
//! The target comes first: every step that touches it is undone on any
//! error (the parasite unmapped, the gadget bytes and registers put back,
//! held signals re-sent, threads detached) and the image is written so that
//! it only becomes complete after the target was cured.

mod fds;
mod inherited;
mod lock;
mod memory;
mod parent;
mod pids;
pub mod precopy;
mod sink;
mod state;
pub(crate) mod tracking;

use anyhow::{Context, Result};
use cryo_image::{DumpStats, FdImage, ImageWriter, Inventory, PageOrigin, PageRun, ProcessEntry, ProcessImage, ProcessState, RegSet, ThreadImage, Vma};
use cryo_injector::{Parasite, Remote, Snapshot};
use cryo_tracer::proc::MemFile;
use cryo_image::codec::Codec;
use sink::Sink;
use cryo_tracer::arch::{page_size, Arch, Native};
use cryo_tracer::pidfd::Pidfd;
use cryo_tracer::{fault, proc, ptrace, relay, Seized, Tree};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Called with the complete image while a `--kill` tree is still frozen:
/// an error releases the tree unharmed instead of killing it (streaming and
/// migration send the image here).
pub type Hold<'a> = &'a dyn Fn(&Held) -> Result<()>;

pub struct Held<'a> {
    pub dir: &'a std::path::Path,
    /// When the freeze began.
    pub frozen: Instant,
    /// With [`Options::pages_in_tree`], where the image's pages are.
    pub memory: Option<&'a dyn cryo_image::stream::LiveMemory>,
}

pub struct Options<'a> {
    pub pid: i32,
    pub out: PathBuf,
    pub kill: bool,
    /// Restore TCP connections to outside the tree as reset connections
    /// instead of refusing the checkpoint.
    pub tcp_close: bool,
    pub hold: Option<Hold<'a>>,
    /// Write memory while the tree is stopped, never from a copy-on-write
    /// snapshot (always so with `kill`).
    pub direct: bool,
    /// Store only the pages written since this image (incremental).
    pub parent: Option<PathBuf>,
    /// Leave write tracking in the tree, so that a later checkpoint can
    /// name this one as its parent.
    pub track: bool,
    /// Compress the pages files.
    pub compress: Option<Codec>,
    /// Called with `kill` once the tree was sent SIGKILL (it can no longer
    /// run), before waiting for it to be gone.
    pub killed: Option<&'a dyn Fn()>,
    /// Write no pages files: only lay them out (the runs, zero pages left
    /// out); the hold reads them from the tree, frozen until it dies, and
    /// their checksums are made as they are sent (needs `kill` and a hold;
    /// no compression).
    pub pages_in_tree: bool,
    /// Store the pages a child shares with its parent since a fork once
    /// (see inherited.rs): the image must then be restarted from its
    /// directory, not from a stream.
    pub inherit: bool,
    /// Processes dumped, and snapshots written, at once at most (None: see
    /// `relay::width_for`).
    pub jobs: Option<usize>,
    /// A pass of `checkpoint --precopy` (see precopy.rs).
    pub pre_copy: PreCopy,
}

/// The passes of a pre-copy.
#[derive(Default)]
pub enum PreCopy {
    #[default]
    No,
    /// Write tracking started in the frozen tree, its memory copied once it
    /// runs again (an image with `live_pages`, only ever a parent).
    First,
    /// Incremental against the first pass (`Options::parent`), which the
    /// image takes in as its subdirectory [`precopy::SUBDIR`]; the write
    /// tracking of these processes (host pids) is closed while they are
    /// frozen, as the first pass started it for this checkpoint only.
    Final { untrack: Vec<i32> },
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub pid: i32,
    pub frozen_us: u64,
    pub total_us: u64,
    pub pages: u64,
    pub image: PathBuf,
    /// Processes whose private memory was written from a snapshot after the
    /// tree was let go (low-freeze mode), and how many processes there were.
    pub snapshots: usize,
    pub processes: usize,
    /// The parent image, when the image is incremental.
    pub parent: Option<PathBuf>,
    /// Bytes of the pages files of this image.
    pub bytes: u64,
    /// Pages that children share with their parent since a fork, left to
    /// the parent's pages file.
    pub pages_inherited: u64,
    /// How long each stop took (two with `--precopy`; `frozen_us` is
    /// their sum).
    #[serde(default)]
    pub stops_us: Vec<u64>,
}

pub fn checkpoint(opts: &Options) -> Result<Summary> {
    if opts.pages_in_tree && !(opts.kill && opts.hold.is_some() && opts.compress.is_none()) {
        anyhow::bail!("internal error: pages can stay in the tree only until a hold before --kill, uncompressed");
    }
    let first_pass = matches!(opts.pre_copy, PreCopy::First);
    if first_pass && (opts.kill || opts.pages_in_tree || opts.parent.is_some()) {
        anyhow::bail!("internal error: a pre-copy's first pass leaves the tree running and is a full image");
    }
    let t0 = Instant::now();
    let pid = opts.pid;
    let clock = Clock::start(format!("checkpoint of {pid}"));
    let parent = opts.parent.as_deref().map(parent::Parent::read).transpose()?;
    let maps_before = maps_before_the_freeze(pid, parent.as_ref());
    let mut lock = lock::TreeLock::before_freeze(maps_before.keys().copied())?;
    // Made before the freeze: creating files can wait for the journal. On
    // error, dropping `writer` removes the partial image (after `tree`,
    // dropped first, released every process).
    let mut writer = ImageWriter::create(&opts.out)?;
    clock.stage("maps read");
    // The stop counts from the first seize to the release.
    let frozen = Instant::now();
    let mut tree = Tree::freeze(pid)?;
    lock.extend(&tree.pids())?;
    let view = pids::PidView::of_root(pid)?;
    clock.stage("tree frozen");
    let prev = parent.as_ref().map(|p| p.tracking(view.pid(pid)?)).transpose()?;
    clock.stage("parent checked");
    let tree_pids = tree.pids();
    let parents = if opts.inherit && !opts.pages_in_tree && !first_pass { parents_in(&tree_pids) } else { ParentMaps::new() };
    let zombies: Vec<i32> = tree.zombies.iter().map(|z| z.pid).collect();
    // A pre-copy's first pass is only ever the parent of its final pass,
    // which reads nothing but memory from it: no fd is looked at (nor a
    // deleted file's bytes copied) while the tree is stopped for it.
    let mut tree_fds = if first_pass { fds::TreeFds::default() } else { fds::collect(&tree_pids, &zombies, &view, &mut writer, opts.tcp_close)? };
    clock.stage("fds collected");
    let shared = Mutex::new(memory::SharedSeen::new());
    let progress = crate::progress::bytes("checkpoint");
    let mut processes = Vec::new();
    let mut cpu_features = 0;
    // Processes dumped, whose images are completed after the release.
    let mut deferred: Vec<Pending> = Vec::new();
    // Write tracking that this checkpoint started in processes already
    // dumped: taken away again if a later step fails (`take_back`).
    let mut started: Vec<tracking::Started> = Vec::new();
    let collected = (|| -> Result<()> {
        let pages_files = Mutex::new(&mut writer);
        let each = Each {
            track: prev.is_some() || (opts.track && !opts.kill) || first_pass,
            live: first_pass,
            untrack: match &opts.pre_copy {
                PreCopy::Final { untrack } => untrack,
                _ => &[],
            },
            compress: opts.compress,
            in_tree: opts.pages_in_tree,
            view: &view,
            prev: prev.as_ref(),
            maps_before: &maps_before,
            clock: &clock,
            pages_files: &pages_files,
            shared: &shared,
            progress: &progress,
            parents: &parents,
        };
        // Processes are dumped several at once (each keeps a cryo thread and
        // the process busy), in waves. In low-freeze mode a process may have
        // a snapshot only if no process above it reaps orphans (a snapshot
        // forked below one would end up as its child: see
        // cryo_injector::snapshot), known once those above are dumped: a
        // wave per depth in the tree.
        let low_freeze = !opts.kill && !opts.direct && !first_pass;
        let depths = if low_freeze { depths_in(&tree_pids) } else { vec![0; tree_pids.len()] };
        let mut dumped: Vec<Option<Frozen>> = tree_pids.iter().map(|_| None).collect();
        // Processes that reap orphans (PR_SET_CHILD_SUBREAPER).
        let mut reapers: Vec<i32> = Vec::new();
        for depth in 0..=depths.iter().copied().max().unwrap_or(0) {
            let jobs: Vec<relay::Job<Result<(usize, Frozen)>>> = tree
                .procs
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| depths[*i] == depth)
                .map(|(i, seized)| {
                    let fds = tree_fds.per_process.remove(&seized.pid).unwrap_or_default();
                    let snapshot = low_freeze && !reaper_above(seized.pid, &tree_pids, &reapers, &view);
                    let each = &each;
                    Box::new(move || Ok((i, each.dump(seized, fds, snapshot)?))) as relay::Job<Result<(usize, Frozen)>>
                })
                .collect();
            let width = relay::width_for(jobs.len(), opts.jobs, 2);
            tracing::debug!("{} processes dumped {width} at a time", jobs.len());
            let mut failed = None;
            for r in relay::in_parallel(jobs, width) {
                match r {
                    Ok((i, mut frozen)) => {
                        started.extend(frozen.started.take());
                        if frozen.reaper {
                            reapers.push(tree_pids[i]);
                        }
                        dumped[i] = Some(frozen);
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        let dumped = dumped.into_iter().map(|f| f.expect("every process was dumped"));
        for (seized, Frozen { pending, .. }) in tree.procs.iter().zip(dumped) {
            let process = &pending.process;
            if cpu_features == 0 {
                cpu_features = process
                    .threads
                    .first()
                    .map(|t| {
                        let sets: Vec<(u32, &[u8])> = t.regsets.iter().map(|r| (r.note_type, r.data.as_slice())).collect();
                        Native::cpu_features(&sets)
                    })
                    .unwrap_or(0);
            }
            processes.push(ProcessEntry {
                pid: process.pid,
                ppid: process.ppid,
                pgid: process.pgid,
                sid: process.sid,
                comm: process.comm.clone(),
                threads: process.threads.len() as u32,
                session_outside: session_leader_outside(seized.pid, &tree_pids),
                state: ProcessState::Live,
            });
            // Completed once the tree runs again: finishing the pages file
            // can wait for its checksum, which trails the writes.
            deferred.push(pending);
        }
        for z in &tree.zombies {
            let (zpid, pgid, sid) = view.ids(z.pid)?;
            processes.push(ProcessEntry {
                pid: zpid,
                ppid: view.parent(z.ppid),
                pgid,
                sid,
                comm: z.comm.clone(),
                threads: 0,
                session_outside: session_leader_outside(z.pid, &tree_pids),
                state: ProcessState::Zombie { status: z.status },
            });
        }
        Ok(())
    })();
    // Write tracking this checkpoint started goes again if it fails: from
    // the processes still frozen, or frozen once more.
    let take_back = |tree: &mut Tree, started: &[tracking::Started]| {
        for s in started {
            match tree.procs.iter_mut().find(|p| p.pid == s.pid) {
                Some(seized) => s.undo_frozen(seized),
                None => s.undo_released(),
            }
        }
    };
    if let Err(e) = collected {
        take_back(&mut tree, &started);
        return Err(e);
    }
    // Without --kill the tree runs on before the image is completed (every
    // process is cured already): finishing the image is no reason to keep it
    // stopped. With --kill it dies only once the image is complete.
    let live = tree.procs.len();
    let released = !opts.kill;
    if released {
        std::mem::replace(&mut tree, Tree::empty()).release().context("resuming the checkpointed tree")?;
    }
    let frozen_us = frozen.elapsed().as_micros() as u64;
    clock.stage("tree released");
    let snapshots = deferred.iter().filter(|d| d.snapshot.is_some()).count();
    let finished = (|| -> Result<Totals> {
        let mut totals = Totals::default();
        write_from_snapshots(&mut deferred, &progress, opts.jobs, opts.inherit)?;
        if first_pass {
            copy_while_running(&mut deferred, &progress, opts.jobs)?;
        }
        for d in deferred {
            totals.add(d.complete(&mut writer)?);
        }
        let Totals { pages, incremental, zero_pages, .. } = totals;
        if zero_pages > 0 {
            tracing::info!("{zero_pages} pages were all zero and not stored");
        }
        let inventory = Inventory {
            cryo_version: env!("CARGO_PKG_VERSION").to_string(),
            arch: Native::NAME.to_string(),
            kernel: nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
            hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            created_unix_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
                as u64,
            page_size: page_size(),
            root_pid: view.pid(pid)?,
            processes,
            pipes: tree_fds.pipes,
            fifos: tree_fds.fifos,
            unlinked: tree_fds.unlinked,
            unix: tree_fds.unix,
            inet: tree_fds.inet,
            ptys: tree_fds.ptys,
            parent: match (incremental, &opts.pre_copy) {
                (false, _) => None,
                (true, PreCopy::Final { .. }) => Some(precopy::SUBDIR.to_string()),
                (true, _) => opts.parent.as_deref().map(|p| relative_parent(p, &opts.out)).transpose()?,
            },
            cpu_features,
            stats: DumpStats { frozen_us, total_us: t0.elapsed().as_micros() as u64, pages_written: pages },
            live_pages: first_pass,
        };
        clock.stage("snapshots written");
        if let (true, PreCopy::Final { .. }, Some(first)) = (incremental, &opts.pre_copy, &opts.parent) {
            writer.adopt(precopy::SUBDIR, first).context("taking the pre-copy into the image")?;
        }
        writer.finish(&inventory).context("completing the image")?;
        Ok(totals)
    })();
    let Totals { pages, bytes, incremental, inherited, .. } = match finished {
        Ok(t) => t,
        Err(e) => {
            take_back(&mut tree, &started);
            return Err(e);
        }
    };
    clock.stage("image complete");
    progress.finish_and_clear();
    if let Some(hold) = opts.hold {
        // On error `tree`, dropped, lets every process go.
        let memory = if opts.pages_in_tree { Some(TreeMemory::open(&tree, &view)?) } else { None };
        hold(&Held { dir: &opts.out, frozen, memory: memory.as_ref().map(|m| m as &dyn cryo_image::stream::LiveMemory) })?;
    }
    if !released {
        // The tree's TCP connections end with a reset, so no TIME_WAIT keeps
        // their ports from the restart.
        for (pid, fd) in &tree_fds.abort_on_kill {
            if let Err(e) = cryo_tracer::sockets::abort_on_close(*pid, *fd) {
                tracing::debug!("fd {fd} of process {pid}: SO_LINGER: {e}");
            }
        }
        // Taken while the tree is frozen: none of these pids can be recycled yet.
        let pidfds: Vec<Pidfd> = tree_pids.iter().filter_map(|&p| Pidfd::open(p).ok()).collect();
        let threads = tree.kill().context("killing the checkpointed tree")?;
        if let Some(killed) = opts.killed {
            killed();
        }
        wait_dead(&pidfds, threads);
    }
    Ok(Summary {
        pid,
        frozen_us,
        total_us: t0.elapsed().as_micros() as u64,
        pages,
        image: opts.out.clone(),
        snapshots,
        processes: live,
        parent: if incremental { opts.parent.clone() } else { None },
        bytes,
        pages_inherited: inherited,
        stops_us: vec![frozen_us],
    })
}

/// Each process of the tree whose parent is in it too: the parent's pid
/// and memory map (see inherited.rs).
type ParentMaps = std::collections::HashMap<i32, (i32, Vec<Vma>)>;

/// Read while the tree is frozen, before any parasite is in it.
fn parents_in(tree: &[i32]) -> ParentMaps {
    let mut maps: std::collections::HashMap<i32, Option<Vec<Vma>>> = std::collections::HashMap::new();
    let mut out = ParentMaps::new();
    for &pid in tree {
        let Ok(ppid) = proc::status(pid).map(|s| s.ppid) else { continue };
        if !tree.contains(&ppid) {
            continue;
        }
        if let Some(vmas) = maps.entry(ppid).or_insert_with(|| proc::maps(ppid).ok()) {
            out.insert(pid, (ppid, vmas.clone()));
        }
    }
    out
}

/// The siginfo of the signals queued for a frozen thread (or its process).
/// Without it (a kernel without PTRACE_PEEKSIGINFO) the signals are still
/// re-sent after a restart, without their siginfo.
fn queued_siginfo(tid: i32, shared: bool) -> Vec<Vec<u8>> {
    ptrace::peek_siginfo(tid, shared).unwrap_or_else(|e| {
        tracing::warn!("{e}: signals pending in {tid} come back without their siginfo");
        Vec::new()
    })
}

/// A signal cryo held while seizing the thread was taken off its queue: it
/// comes back as from kill() (si_code 0), counted with the queued ones.
fn held_siginfo(sig: i32) -> Vec<u8> {
    let mut info = vec![0u8; ptrace::SIGINFO_SIZE];
    info[..4].copy_from_slice(&sig.to_ne_bytes());
    info
}

/// Debug-level timings of a checkpoint's steps (CRYO_LOG=debug), since
/// `start`.
struct Clock {
    who: String,
    t0: Instant,
}

impl Clock {
    fn start(who: String) -> Clock {
        Clock { who, t0: Instant::now() }
    }

    fn stage(&self, what: &str) {
        tracing::debug!("{}: {what} after {:.1} ms", self.who, self.t0.elapsed().as_secs_f64() * 1000.0);
    }
}

/// A process's memory map with VmFlags, read before the freeze.
struct Earlier {
    vmas: Vec<Vma>,
    /// The flags are those of the parent image (the areas are unchanged
    /// since): a whole-area madvise since then is not in them.
    from_parent: bool,
    /// (start, end) of the areas none of whose pages another process mapped
    /// when smaps was read (none known when the flags are the parent's).
    unshared: Vec<(u64, u64)>,
}

/// The memory maps of the tree (root and descendants), with VmFlags, read
/// before the freeze: /proc/PID/smaps walks every page table (tens of ms for
/// GiBs), which need not happen while the tree is stopped, nor at all where
/// the parent image has the same areas. Used only where the map is
/// unchanged once stopped (proc::vmas_since).
fn maps_before_the_freeze(root: i32, parent: Option<&parent::Parent>) -> std::collections::HashMap<i32, Earlier> {
    let view = pids::PidView::of_root(root).ok();
    let mut out = std::collections::HashMap::new();
    for pid in proc::descendants(root) {
        let known = parent.zip(view.as_ref()).and_then(|(p, view)| p.vmas(view.pid(pid).ok()?));
        let earlier = match known {
            Some(k) if proc::maps(pid).is_ok_and(|now| proc::same_areas(&now, k)) => Ok(Earlier { vmas: k.to_vec(), from_parent: true, unshared: Vec::new() }),
            _ => proc::vmas_and_sharing(pid).map(|all| Earlier {
                unshared: all.iter().filter(|(_, shared)| !shared).map(|(v, _)| (v.start, v.end)).collect(),
                vmas: all.into_iter().map(|(v, _)| v).collect(),
                from_parent: false,
            }),
        };
        if let Ok(e) = earlier {
            out.insert(pid, e);
        }
    }
    out
}

/// How an image names its parent: relative when they are side by side (a
/// series can move), else absolute.
fn relative_parent(parent: &std::path::Path, image: &std::path::Path) -> Result<String> {
    let canon = std::fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
    // The image itself does not exist until it is complete (ImageWriter): its directory does.
    let image_dir = match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let here_dir = std::fs::canonicalize(image_dir).with_context(|| format!("resolving {}", image_dir.display()))?;
    match (canon.parent(), canon.file_name()) {
        (Some(dir), Some(name)) if here_dir == dir => Ok(format!("../{}", name.to_string_lossy())),
        _ => Ok(canon.to_string_lossy().into_owned()),
    }
}

/// Waits (a few seconds at most) until the killed tree has exited: its
/// sockets and files are closed by then, so a restart that follows at once
/// (`checkpoint --kill -o - | restart -`) finds its ports free. cryo frees
/// each process's memory meanwhile, the longest part of an exit.
fn wait_dead(pidfds: &[Pidfd], mut threads: Vec<i32>) {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    for p in pidfds {
        if let Err(e) = p.release_memory() {
            tracing::debug!("process_mrelease: {e}");
        }
    }
    let mut left: Vec<&Pidfd> = pidfds.iter().collect();
    while !left.is_empty() && Instant::now() < deadline {
        ptrace::reap_exited(&mut threads);
        if !threads.is_empty() {
            // A pidfd polls readable only once its traced threads are
            // reaped here: look for their exits again soon.
            std::thread::sleep(std::time::Duration::from_micros(200));
            continue;
        }
        let step = (Instant::now() + std::time::Duration::from_millis(5)).min(deadline);
        left.retain(|p| !p.wait_exit(step));
    }
    if !left.is_empty() {
        tracing::warn!("{} killed process(es) still exiting after 5 s ({} thread(s) not reaped)", left.len(), threads.len());
    }
}

/// Whether the leader of `pid`'s session is alive and not part of the tree.
fn session_leader_outside(pid: i32, tree: &[i32]) -> bool {
    let Ok(sid) = proc::stat(pid).map(|s| s.sid) else { return false };
    sid > 0 && !tree.contains(&sid) && proc::stat(sid).is_ok_and(|l| l.sid == sid && l.state != 'Z')
}

/// How many ancestors each process has in the tree (`tree` lists parents
/// before their children, as [`Tree::freeze`] finds them).
fn depths_in(tree: &[i32]) -> Vec<usize> {
    let mut depths: Vec<usize> = Vec::with_capacity(tree.len());
    for &pid in tree {
        let parent = proc::stat(pid).ok().and_then(|st| tree.iter().position(|&p| p == st.ppid));
        let depth = parent.and_then(|i| depths.get(i)).map_or(0, |d| d + 1);
        depths.push(depth);
    }
    depths
}

/// Would a process forked below `pid` be reparented to a process of the
/// tree? The kernel gives orphans to the nearest child-subreaper ancestor,
/// else to the pid namespace's init.
fn reaper_above(pid: i32, tree: &[i32], reapers: &[i32], view: &pids::PidView) -> bool {
    let mut p = pid;
    while tree.contains(&p) {
        if reapers.contains(&p) || view.pid(p).is_ok_and(|inner| inner == 1) {
            return true;
        }
        let Ok(st) = proc::stat(p) else { return true };
        p = st.ppid;
    }
    false
}

/// A process's image, completed after the tree was let go: its pages file
/// finished (and, if it has a copy-on-write snapshot, its private memory
/// written from that first), its metadata written.
struct Pending {
    process: ProcessImage,
    /// The pages chosen, including those unchanged since the parent image.
    chosen: Vec<PageRun>,
    pages: PagesOut,
    snapshot: Option<(Parasite, Snapshot)>,
    /// What write tracking said, for choosing pages from the snapshot.
    tracked: Option<tracking::Tracked>,
    /// In a pre-copy's first pass, the process (host pid) whose tracked
    /// memory is copied once it runs again.
    live: Option<i32>,
    /// The write tracking a pre-copy's final pass took out of the process
    /// (see [`tracking::stop`]), closed with this.
    untracked: Option<std::os::fd::OwnedFd>,
}

/// Where a process's pages go.
enum PagesOut {
    File(Sink),
    /// Nowhere yet: they stay in the frozen process, to be read from there
    /// as the file laid out here (see [`Options::pages_in_tree`]).
    InTree(memory::Layout),
}

/// Pages stored, bytes written, and whether any page is in a parent image.
#[derive(Default)]
struct Totals {
    pages: u64,
    bytes: u64,
    incremental: bool,
    zero_pages: u64,
    /// Pages left to a parent process's copy.
    inherited: u64,
}

impl Totals {
    fn add(&mut self, t: Totals) {
        self.pages += t.pages;
        self.bytes += t.bytes;
        self.incremental |= t.incremental;
        self.zero_pages += t.zero_pages;
        self.inherited += t.inherited;
    }
}

impl Pending {
    /// `parent`: its parent's snapshot (pid, memory map), to store the
    /// pages they share once; `keep`: the snapshot stays for a child's.
    fn write_from_snapshot(&mut self, progress: &indicatif::ProgressBar, parent: Option<&(i32, Vec<Vma>)>, keep: bool) -> Result<()> {
        let Some((mut parasite, mut snapshot)) = self.snapshot.take() else { return Ok(()) };
        let clock = Clock::start(format!("snapshot {}", snapshot.pid));
        let mem = MemFile::open(snapshot.pid)?;
        let part = memory::Part::Private;
        let vmas = &self.process.vmas;
        same_after_fork(self.process.pid, vmas, &proc::vmas(snapshot.pid)?)?;
        let private = memory::select(snapshot.pid, vmas, part, &mem, &mut memory::SharedSeen::new(), self.tracked.as_ref())
            .context("choosing pages in the snapshot")?;
        let private = match parent.map(|(pid, theirs)| (MemFile::open(*pid), theirs)) {
            Some((Ok(theirs), pvmas)) => inherited::split(self.process.pid, private, vmas, &mem, &inherited::ParentPages { vmas: pvmas.clone(), mem: theirs }, None),
            _ => private,
        };
        clock.stage("pages chosen");
        progress.inc_length(memory::bytes(&private));
        let mut src = FromSnapshot { parasite: &mut parasite, snapshot: &mut snapshot };
        let PagesOut::File(sink) = &mut self.pages else { anyhow::bail!("internal error: a snapshot's pages stay in the tree") };
        if sink.writes_behind() {
            // Every page of the snapshot is shared with its process.
            let from = memory::Stopped { pid: snapshot.pid, mem: &mem, unshared: &[], stage: "snapshot-pages" };
            memory::read_frozen(&private, vmas, part, &from, sink, progress).context("writing memory from the snapshot")?;
        } else {
            memory::stream(&private, vmas, part, &mem, sink, progress, &mut src).context("writing memory from the snapshot")?;
        }
        clock.stage("pages written");
        if keep {
            self.snapshot = Some((parasite, snapshot));
        } else {
            drop(snapshot);
            clock.stage("killed");
        }
        self.chosen.extend(private);
        Ok(())
    }

    /// A pre-copy's first pass: write-protect the tracked memory of the
    /// running process, then copy it. A page the process writes after its
    /// protection shows in the final pass's scan and is stored there; one it
    /// writes while being copied too.
    fn copy_live(&mut self, progress: &indicatif::ProgressBar) -> Result<()> {
        let (Some(pid), Some(tracked)) = (self.live.take(), &self.tracked) else { return Ok(()) };
        fault::check("precopy")?;
        let clock = Clock::start(format!("pre-copy of {pid}"));
        let ranges = &tracked.info.ranges;
        tracking::write_protect(pid, ranges);
        clock.stage("write-protected");
        let vmas: Vec<Vma> = self.process.vmas.iter().filter(|v| ranges.iter().any(|r| r.0 <= v.start && v.end <= r.1)).cloned().collect();
        let mem = MemFile::open(pid)?;
        let runs = memory::select(pid, &vmas, memory::Part::All, &mem, &mut memory::SharedSeen::new(), None)?;
        progress.inc_length(memory::bytes(&runs));
        let PagesOut::File(sink) = &mut self.pages else { anyhow::bail!("internal error: a pre-copy's pages stay in the tree") };
        memory::copy_running(&runs, &vmas, &mem, sink, progress).context("copying memory while the process runs")?;
        clock.stage("copied");
        Ok(())
    }

    /// Complete the page index and write the process's image.
    fn complete(self, writer: &mut ImageWriter) -> Result<Totals> {
        let Pending { mut process, chosen, pages, untracked, .. } = self;
        // The tree runs again: the write-protection can go now.
        drop(untracked);
        let (mut runs, compression, len, crc, zero_pages) = match pages {
            PagesOut::File(sink) => {
                let w = sink.finish()?;
                (w.runs, w.compression, w.len, Some(w.crc), w.zero_pages)
            }
            PagesOut::InTree(l) => (l.runs, None, l.len, None, l.zero_pages),
        };
        let incremental = chosen.iter().any(|r| r.origin == PageOrigin::Parent);
        runs.extend(chosen.into_iter().filter(|r| !r.origin.in_pages_file()));
        runs.sort_by_key(|r| r.vaddr);
        let pages = runs.iter().filter(|r| r.origin.in_pages_file()).map(|r| r.npages).sum();
        let inherited = runs.iter().filter(|r| r.origin == PageOrigin::Inherited).map(|r| r.npages).sum();
        process.pages = runs;
        process.pages_bytes = len;
        process.compression = compression;
        process.pages_crc = crc;
        fault::check("image-write")?;
        writer.write_process(&process)?;
        Ok(Totals { pages, bytes: len, incremental, zero_pages, inherited })
    }
}

/// Write the private memory of the processes that have a snapshot, several
/// at once: each keeps a cryo thread and its snapshot busy. A snapshot is
/// killed as soon as its memory is written (or on error), unless a child's
/// snapshot compares its pages with it: then once all are written. The
/// first error (in tree order) is returned once all have ended.
fn write_from_snapshots(deferred: &mut [Pending], progress: &indicatif::ProgressBar, jobs_limit: Option<usize>, inherit: bool) -> Result<()> {
    // Snapshots of parents whose children have one, by the parent's pid.
    let snapshot_of = |pid: i32| deferred.iter().find(|d| d.process.pid == pid).and_then(|d| Some((d.snapshot.as_ref()?.1.pid, d.process.vmas.clone())));
    let parents: std::collections::HashMap<i32, (i32, Vec<Vma>)> = if inherit {
        deferred.iter().filter(|d| d.snapshot.is_some()).filter_map(|d| Some((d.process.ppid, snapshot_of(d.process.ppid)?))).collect()
    } else {
        Default::default()
    };
    let parents = &parents;
    let jobs: Vec<relay::Job<Result<()>>> = deferred
        .iter_mut()
        .filter(|d| d.snapshot.is_some())
        .map(|d| {
            let (parent, keep) = (parents.get(&d.process.ppid), parents.contains_key(&d.process.pid));
            Box::new(move || d.write_from_snapshot(progress, parent, keep)) as relay::Job<Result<()>>
        })
        .collect();
    let width = relay::width_for(jobs.len(), jobs_limit, 2);
    tracing::debug!("{} snapshots written {width} at a time", jobs.len());
    let written = relay::in_parallel(jobs, width).into_iter().collect();
    for d in deferred.iter_mut() {
        d.snapshot = None;
    }
    written
}

/// [`Pending::copy_live`] for each process, several at once.
fn copy_while_running(deferred: &mut [Pending], progress: &indicatif::ProgressBar, jobs_limit: Option<usize>) -> Result<()> {
    let jobs: Vec<relay::Job<Result<()>>> =
        deferred.iter_mut().filter(|d| d.live.is_some()).map(|d| Box::new(move || d.copy_live(progress)) as relay::Job<Result<()>>).collect();
    let width = relay::width_for(jobs.len(), jobs_limit, 2);
    relay::in_parallel(jobs, width).into_iter().collect()
}

/// A lock of what processes dumped at once share; a panic elsewhere
/// leaves nothing half-done in these.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every private area is in the snapshot as it was in the process, and none
/// is wiped on fork: the flags cryo went by (read before the freeze) may have
/// changed in between (MADV_DONTFORK, MADV_WIPEONFORK).
fn same_after_fork(pid: i32, vmas: &[Vma], forked: &[Vma]) -> Result<()> {
    for v in vmas.iter().filter(|v| memory::Part::Private.holds(v)) {
        let twin = forked.iter().find(|f| f.start == v.start && f.end == v.end);
        if twin.is_none_or(|f| f.has_flag("wf")) {
            anyhow::bail!(
                "process {pid} changed how its memory at {:#x} is forked (MADV_DONTFORK/WIPEONFORK) during the checkpoint; checkpoint it again, or with --direct",
                v.start
            );
        }
    }
    Ok(())
}

/// What dumping each process of the tree needs, shared by the processes
/// dumped at once.
struct Each<'a, 'w> {
    /// Track writes (see tracking.rs).
    track: bool,
    /// A pre-copy's first pass: memory is copied once the tree runs again.
    live: bool,
    /// See [`PreCopy::Final`].
    untrack: &'a [i32],
    compress: Option<Codec>,
    /// See [`Options::pages_in_tree`].
    in_tree: bool,
    view: &'a pids::PidView,
    prev: Option<&'a std::collections::HashMap<i32, parent::ParentTracking>>,
    maps_before: &'a std::collections::HashMap<i32, Earlier>,
    clock: &'a Clock,
    pages_files: &'a Mutex<&'w mut ImageWriter>,
    shared: &'a Mutex<memory::SharedSeen>,
    progress: &'a indicatif::ProgressBar,
    parents: &'a ParentMaps,
}

impl Each<'_, '_> {
    /// `runs` of frozen process `pid` (areas `vmas`, memory `mine`) with the
    /// pages it shares with its frozen parent marked inherited.
    fn inherit(&self, pid: i32, vmas: &[Vma], mine: &MemFile, runs: Vec<PageRun>) -> Vec<PageRun> {
        let Some((ppid, pvmas)) = self.parents.get(&pid) else { return runs };
        match MemFile::open(*ppid) {
            Ok(mem) => {
                let maps = proc::Pagemap::open(pid).and_then(|mine| Ok(inherited::Pagemaps { mine, parent: proc::Pagemap::open(*ppid)? }));
                inherited::split(pid, runs, vmas, mine, &inherited::ParentPages { vmas: pvmas.clone(), mem }, maps.ok().as_ref())
            }
            Err(e) => {
                tracing::debug!("process {pid}: pages shared with its parent are stored again ({e})");
                runs
            }
        }
    }

    /// Dump one frozen process (`snapshot`: it may leave its private memory
    /// to a copy-on-write snapshot).
    fn dump(&self, seized: &mut Seized, fds: Vec<FdImage>, snapshot: bool) -> Result<Frozen> {
        let left = self.prev.and_then(|p| p.get(&self.view.pid(seized.pid).ok()?));
        let earlier = self.maps_before.get(&seized.pid);
        let vmas = proc::vmas_since(seized.pid, earlier.map(|e| e.vmas.as_slice()))?;
        self.clock.stage("maps checked");
        let how = How {
            snapshot,
            tracking: self.track.then_some(left),
            flags_exact: !earlier.is_some_and(|e| e.from_parent && e.vmas == vmas),
            // A fork since smaps was read would share pages it says are
            // not: a pin then copies them in the process, which costs it
            // memory but changes no byte.
            unshared: earlier.filter(|e| e.vmas == vmas).map_or(&[], |e| e.unshared.as_slice()),
            live: self.live,
            untrack: self.untrack.contains(&seized.pid),
        };
        let frozen = dump_frozen(seized, vmas, fds, self, how)?;
        self.clock.stage("process done");
        Ok(frozen)
    }
}

struct Frozen {
    /// The process reaps orphans (PR_SET_CHILD_SUBREAPER).
    reaper: bool,
    /// Write tracking this checkpoint started.
    started: Option<tracking::Started>,
    pending: Pending,
}

/// How a process's memory is dumped.
struct How<'a> {
    /// Leave private memory to a copy-on-write snapshot where possible.
    snapshot: bool,
    /// Track writes (see tracking.rs), with what the parent image left.
    tracking: Option<Option<&'a parent::ParentTracking>>,
    /// The VmFlags were read now, not taken from the parent image.
    flags_exact: bool,
    /// See [`Earlier::unshared`]: empty where the map changed since.
    unshared: &'a [(u64, u64)],
    /// See [`Each::live`].
    live: bool,
    /// Close the write tracking once the pages are chosen.
    untrack: bool,
}

/// The frozen tree's memory, by pid as the image names its processes.
struct TreeMemory(std::collections::HashMap<i32, MemFile>);

impl TreeMemory {
    fn open(tree: &Tree, view: &pids::PidView) -> Result<TreeMemory> {
        let mut files = std::collections::HashMap::new();
        for seized in &tree.procs {
            files.insert(view.pid(seized.pid)?, MemFile::open(seized.pid)?);
        }
        Ok(TreeMemory(files))
    }
}

impl cryo_image::stream::LiveMemory for TreeMemory {
    fn read(&self, pid: i32, vaddr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let mem = self.0.get(&pid).ok_or_else(|| std::io::Error::other(format!("process {pid} is not in the frozen tree")))?;
        mem.read(vaddr, buf).map_err(std::io::Error::other)
    }
}

/// Pages from the frozen process itself.
struct FromTarget<'a> {
    seized: &'a mut Seized,
    remote: &'a mut Remote,
    parasite: &'a mut Parasite,
}

impl memory::PageSource for FromTarget<'_> {
    fn stream(&mut self, iovs: &[cryo_parasite::abi::IoVec], drain: &mut cryo_injector::parasite::Drain) -> Result<()> {
        Ok(self.parasite.stream_pages(self.seized, self.remote, iovs, drain)?)
    }
    fn zero_pages(&mut self, iovs: &[cryo_parasite::abi::IoVec]) -> Result<Vec<bool>> {
        Ok(self.parasite.zero_pages(self.seized, self.remote, iovs, page_size())?)
    }
}

/// Pages from a process's copy-on-write snapshot.
struct FromSnapshot<'a> {
    parasite: &'a mut Parasite,
    snapshot: &'a mut Snapshot,
}

impl memory::PageSource for FromSnapshot<'_> {
    fn stream(&mut self, iovs: &[cryo_parasite::abi::IoVec], drain: &mut cryo_injector::parasite::Drain) -> Result<()> {
        Ok(self.snapshot.stream_pages(self.parasite, iovs, drain)?)
    }
    fn zero_pages(&mut self, iovs: &[cryo_parasite::abi::IoVec]) -> Result<Vec<bool>> {
        Ok(self.snapshot.zero_pages(self.parasite, iovs, page_size())?)
    }
}

/// An incremental checkpoint that writes at most 1/SMALL_FRACTION of the
/// pages it keeps writes them while frozen instead of from a snapshot.
const SMALL_FRACTION: u64 = 32;

/// Choose the pages (and which are unchanged since the parent), write what
/// must be written while frozen, and fork the snapshot for the rest.
#[allow(clippy::too_many_arguments)]
fn pages_while_frozen(
    seized: &mut Seized,
    remote: &mut Remote,
    parasite: &mut Parasite,
    vmas: &[Vma],
    st: &state::State,
    tracked: Option<&tracking::Tracked>,
    each: &Each,
    how: &How,
    clock: &Clock,
) -> Result<(Vec<PageRun>, Option<Snapshot>, PagesOut)> {
    let pid = seized.pid;
    let Each { shared, progress, in_tree, .. } = *each;
    let How { snapshot, flags_exact, .. } = *how;
    // A snapshot lacks MADV_DONTFORK areas and has MADV_WIPEONFORK ones
    // empty. Flags from the parent image may miss a whole-area madvise
    // since: they are read before a snapshot is relied on.
    let forks_whole = |vmas: &[Vma]| !vmas.iter().any(|v| v.has_flag("dc") || v.has_flag("wf"));
    let forks_whole_now = || -> Result<bool> { Ok(if flags_exact { forks_whole(vmas) } else { forks_whole(&proc::vmas(pid)?) }) };
    // An incremental checkpoint writes little: choosing its pages while
    // frozen and writing them at once stops the process for less than
    // forking a snapshot would (a page-table copy of all its memory).
    let incremental = tracked.is_some_and(|t| !t.since_parent.is_empty());
    let mut use_snapshot = snapshot && !st.child_subreaper && (incremental || forks_whole_now()?);
    let first = if use_snapshot && !incremental { memory::Part::Frozen } else { memory::Part::All };
    let mut chosen = memory::select(pid, vmas, first, &remote.mem, &mut locked(shared), tracked)?;
    clock.stage("pages chosen");
    if use_snapshot && incremental {
        let kept: u64 = chosen.iter().map(|r| r.npages).sum();
        let new: u64 = chosen.iter().filter(|r| r.origin == PageOrigin::Here).map(|r| r.npages).sum();
        use_snapshot = new * SMALL_FRACTION > kept && forks_whole_now()?;
        if use_snapshot {
            // Written from the snapshot after all: keep only what must be
            // written while frozen; the rest is chosen again there.
            chosen.retain(|r| {
                let v = vmas.iter().find(|v| v.start <= r.vaddr && r.vaddr < v.end).expect("run lies in a vma");
                memory::Part::Frozen.holds(v)
            });
        }
    }
    if in_tree {
        let layout = memory::layout(&chosen, vmas, &mut FromTarget { seized, remote, parasite })?;
        clock.stage("pages laid out");
        return Ok((chosen, None, PagesOut::InTree(layout)));
    }
    let first = if use_snapshot { memory::Part::Frozen } else { memory::Part::All };
    let mut chosen = each.inherit(pid, vmas, &remote.mem, chosen);
    progress.inc_length(memory::bytes(&chosen));
    let mem = MemFile::open(pid)?;
    // All of a full image's memory, raw, is read by cryo rather than
    // spliced (see memory::read_frozen), and so is a snapshot's later.
    // Compressed pages pass through cryo's memory anyway, and an
    // incremental image's scattered pages splice in fewer calls.
    let read = !incremental && each.compress.is_none() && (use_snapshot || !how.unshared.is_empty());
    let mut sink = pages_file(pid, each, read)?;
    let mut write_pages = |runs: &[PageRun], part, seized: &mut Seized, remote: &mut Remote, parasite: &mut Parasite| {
        if read {
            return memory::read_frozen(runs, vmas, part, &memory::Stopped { pid, mem: &mem, unshared: how.unshared, stage: "pages" }, &mut sink, progress);
        }
        memory::stream(runs, vmas, part, &mem, &mut sink, progress, &mut FromTarget { seized, remote, parasite })
    };
    write_pages(&chosen, first, seized, remote, parasite)?;
    if !use_snapshot {
        clock.stage("pages written");
        return Ok((chosen, None, PagesOut::File(sink)));
    }
    clock.stage("shared memory written");
    let forked = parasite.fork_snapshot(seized, remote);
    clock.stage("snapshot forked");
    match forked {
        // Private memory is chosen and written from the snapshot later.
        Ok(s) => Ok((chosen, Some(s), PagesOut::File(sink))),
        Err(e) => {
            tracing::warn!("process {pid}: no copy-on-write snapshot ({e}); writing its memory while it is stopped");
            let private = memory::select(pid, vmas, memory::Part::Private, &remote.mem, &mut locked(shared), tracked)?;
            let private = each.inherit(pid, vmas, &remote.mem, private);
            progress.inc_length(memory::bytes(&private));
            write_pages(&private, memory::Part::Private, seized, remote, parasite)?;
            chosen.extend(private);
            chosen.sort_by_key(|r| r.vaddr);
            Ok((chosen, None, PagesOut::File(sink)))
        }
    }
}

/// The pages file of process `pid` (host pid), written as pages come
/// (`threaded`: see [`Sink::threaded`]).
fn pages_file(pid: i32, each: &Each, threaded: bool) -> Result<Sink> {
    let file = locked(each.pages_files).create_pages(each.view.pid(pid)?)?;
    if threaded {
        Sink::threaded(file, each.compress, page_size(), memory::PIECE)
    } else {
        Sink::new(file, each.compress, page_size(), memory::PIECE)
    }
}

/// Everything done while the process is frozen. On error the parasite has
/// been unloaded (as far as possible) before returning.
fn dump_frozen(seized: &mut Seized, vmas: Vec<Vma>, fds: Vec<FdImage>, each: &Each, how: How) -> Result<Frozen> {
    let pid = seized.pid;
    let view = each.view;
    let clock = Clock::start(format!("process {pid}"));
    let mut remote = Remote::bootstrap(seized, pid, &vmas)?;
    clock.stage("bootstrapped");
    let mut parasite = match Parasite::load(seized, &mut remote, None) {
        Ok(p) => p,
        Err(e) => {
            let _ = remote.drop_bootstrap();
            return Err(e.into());
        }
    };
    clock.stage("parasite loaded");
    let inside = (|| -> Result<_> {
        let st = state::collect(seized, &mut remote, &mut parasite)?;
        clock.stage("state collected");
        let timers = state::posix_timers(seized, &mut remote, &mut parasite, view)?;
        let mut per_thread = vec![state::collect_thread(seized, &mut remote, &mut parasite)?];
        let others: Vec<i32> = seized.threads.iter().skip(1).map(|t| t.tid).collect();
        for tid in others {
            let mut r = Remote::for_thread(seized, tid, parasite.gadget())?;
            per_thread.push(state::collect_thread(seized, &mut r, &mut parasite)?);
        }
        parasite.open_pipe(seized, &mut remote)?;
        clock.stage("threads collected");
        let tracked = match &how.tracking {
            Some(prev) => match tracking::track(seized, &mut remote, &mut parasite, &vmas, *prev, !how.live)? {
                Ok(t) => {
                    if let Some(why) = &t.lost {
                        tracing::warn!("{why}; its memory is stored whole");
                    }
                    Some(t)
                }
                Err(why) => {
                    if how.live {
                        tracing::warn!("{why}; process {pid} is not pre-copied: the checkpoint stores all its memory while it is stopped");
                    } else {
                        tracing::warn!("{why}; storing all memory of process {pid} (a full checkpoint)");
                    }
                    None
                }
            },
            None => None,
        };
        if how.tracking.is_some() {
            clock.stage("write tracking");
        }
        let rest = if how.live {
            pages_file(pid, each, true).map(|sink| (Vec::new(), None, PagesOut::File(sink)))
        } else {
            pages_while_frozen(seized, &mut remote, &mut parasite, &vmas, &st, tracked.as_ref(), each, &how, &clock)
        };
        if rest.is_err() {
            if let Some(t) = &tracked {
                tracking::undo(seized, &mut remote, &mut parasite, t);
            }
        }
        let (runs, snap, pages) = rest?;
        // Its scan is done: the pages still go by what it said.
        let untracked = match tracked.as_ref().filter(|_| how.untrack) {
            Some(t) => tracking::stop(seized, &mut remote, &mut parasite, t)?,
            None => None,
        };
        let started = tracked.as_ref().and_then(|t| tracking::Started::of(pid, t));
        Ok((st, timers, per_thread, runs, snap, pages, tracked, started, untracked))
    })();
    let cured = parasite.unload(seized, &mut remote);
    clock.stage("parasite unloaded");
    let (st, timers, per_thread, chosen, snap, pages, tracked, started, untracked) = inside?;
    let tracking = tracked.as_ref().filter(|_| !how.untrack).map(|t| t.info.clone());
    cured.context("removing the parasite from the target")?;

    let status = proc::status(pid)?;
    let stat = proc::stat(pid)?;
    let mut threads = Vec::new();
    for (t, ts) in seized.threads.iter().zip(&per_thread) {
        let (robust_list, robust_list_len) = ptrace::get_robust_list(t.tid)?;
        let tstatus = proc::status(t.tid).unwrap_or_default();
        let mut pending = tstatus.sig_pnd;
        for s in &t.held_signals {
            pending |= 1u64 << (s - 1);
        }
        threads.push(ThreadImage {
            tid: view.pid(t.tid)?,
            comm: tstatus.name.clone(),
            regsets: t
                .regsets
                .iter()
                .enumerate()
                .map(|(i, (nt, d))| {
                    let mut data = d.clone();
                    if i == 0 {
                        state::record_original_syscall(pid, t.tid, &mut data);
                    }
                    RegSet { note_type: *nt, data }
                })
                .collect(),
            sigmask: t.sigmask,
            pending,
            pending_info: queued_siginfo(t.tid, false).into_iter().chain(t.held_signals.iter().map(|&s| held_siginfo(s))).collect(),
            sigaltstack: ts.sigaltstack,
            clear_child_tid: ts.clear_child_tid,
            robust_list,
            robust_list_len,
            rseq: ptrace::get_rseq(t.tid)?,
        });
    }
    clock.stage("threads read");
    let mm = cryo_image::MmState {
        start_code: stat.start_code,
        end_code: stat.end_code,
        start_data: stat.start_data,
        end_data: stat.end_data,
        start_brk: stat.start_brk,
        brk: st.brk,
        start_stack: stat.start_stack,
        arg_start: stat.arg_start,
        arg_end: stat.arg_end,
        env_start: stat.env_start,
        env_end: stat.env_end,
        auxv: proc::read_bytes(&format!("/proc/{pid}/auxv"))?,
        dumpable: 1,
    };
    let personality = std::fs::read_to_string(format!("/proc/{pid}/personality"))
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
        .unwrap_or(0);
    let (inner, pgid, sid) = view.ids(pid)?;
    let process = ProcessImage {
        pid: inner,
        ppid: view.parent(status.ppid),
        pgid,
        sid,
        comm: status.name.clone(),
        exe: proc::read_link(&format!("/proc/{pid}/exe"))?,
        cwd: proc::read_link(&format!("/proc/{pid}/cwd"))?,
        root: proc::read_link(&format!("/proc/{pid}/root"))?,
        cmdline: proc::cmdline(pid).unwrap_or_default(),
        creds: cryo_image::Creds {
            uids: status.uids,
            gids: status.gids,
            groups: status.groups.clone(),
            cap_inh: status.cap_inh,
            cap_prm: status.cap_prm,
            cap_eff: status.cap_eff,
            cap_bnd: status.cap_bnd,
            cap_amb: status.cap_amb,
            no_new_privs: status.no_new_privs,
        },
        umask: st.umask,
        personality,
        rlimits: state::rlimits(pid),
        mm,
        vmas,
        pages: Vec::new(),
        pages_bytes: 0,
        // Set when the pages file is complete (`Pending::complete`).
        pages_crc: None,
        threads,
        exit_signal: stat.exit_signal,
        child_subreaper: st.child_subreaper,
        thp_disable: st.thp_disable,
        mlockall: st.mlockall,
        sigactions: st.sigactions,
        itimers: st.itimers,
        fds,
        shared_pending: status.shd_pnd,
        shared_pending_info: queued_siginfo(pid, true),
        posix_timers: timers,
        tracking,
        compression: None,
    };
    clock.stage("process read");
    let reaper = st.child_subreaper;
    let snapshot = snap.map(|s| (parasite, s));
    let live = (how.live && tracked.is_some()).then_some(pid);
    Ok(Frozen { reaper, started, pending: Pending { process, chosen, pages, snapshot, tracked, live, untracked } })
}
