//! `cryo restart`: rebuild a checkpointed process from its image.
//!
//! The restored process starts life as a fork of cryo, created with its old
//! pid (clone3 set_tid) by a small init inside a user+pid+mount namespace that
//! cryo makes. cryo then seizes it and, through the same parasite blob the
//! checkpoint uses, has it unmap cryo's memory, map the image's, read pages
//! straight into place, and set up mm, fds and signal state. Its last syscall
//! unmaps the blob; at that syscall's exit cryo loads the saved registers and
//! lets go.

mod check;
mod digests;
mod file_pages;
mod foreground;
mod layout;
mod lazy;
mod ns;
mod rebuild;
mod shape;
mod shared;
mod terminal;
mod vdso;

use cryo_image::chain::ResolvedPages;
use cryo_image::{ImageReader, ProcessImage, ProcessState};
use cryo_tracer::relay;
use digests::Digests;
use rebuild::Restoree;
use shared::Registry;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

pub use check::RestoreError;
pub use rebuild::{HugePages, PageStream, PagesOnDemand};

pub struct Options<'a> {
    pub image: PathBuf,
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
    /// Restore inside a new user+pid namespace so the processes keep their pids.
    pub pid_ns: bool,
    /// Restart even if files the tree had open changed since the checkpoint.
    pub allow_changed_files: bool,
    /// Told (bytes read so far, bytes in all) as pages go into place.
    pub progress: Option<Progress>,
    /// Asked, with the root's host pid, once the whole tree is rebuilt and
    /// verified but before any of it runs; an error kills the rebuilt tree
    /// and fails the restart (`cryo migrate`'s commit point).
    pub before_release: Option<Gate<'a>>,
    /// Pre-copy: `image` is the first of several images of the running
    /// tree; the tree is rebuilt from it and brought up to each later one
    /// before it runs as the last one has it.
    pub next_round: Option<NextRound<'a>>,
    /// The image's own pages files are not in `image` but come on this
    /// stream, to be read straight into place (`cryo restart -`).
    pub page_stream: Option<&'a dyn PageStream>,
    /// Run the tree before its large private areas are filled; cryo fills
    /// them as they are touched and in the background, and returns once
    /// every page is in (`cryo restart --lazy`).
    pub lazy: bool,
    /// The image's own pages files stay where the image came from and are
    /// fetched from there, piece by piece (`cryo migrate --postcopy`);
    /// needs `lazy`.
    pub pages_on_demand: Option<&'a dyn PagesOnDemand>,
    /// Processes whose memory is filled at once at most (None: see
    /// `relay::width_for`).
    pub jobs: Option<usize>,
    /// Whether memory stored whole is filled with transparent huge pages.
    pub huge_pages: HugePages,
}

pub type Gate<'a> = &'a dyn Fn(i32) -> std::result::Result<(), String>;

/// The next image of a pre-copy (`cryo migrate --precopy`): an incremental
/// image whose parent is the image before it, received in a directory of
/// its own. The previous round's directory is no longer read once this is
/// asked for. An error stops the restart, leaving nothing running.
pub type NextRound<'a> = &'a dyn Fn() -> std::result::Result<Round, String>;

pub enum Round {
    /// Another image follows this one.
    More(PathBuf),
    /// The last image: the tree runs as it has it.
    Last(PathBuf),
}

pub type Progress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

pub type Result<T> = std::result::Result<T, RestoreError>;

/// Restart the image. Returns the exit status to leave with: the restored
/// root's (foreground), or 0 once the tree runs (detached).
pub fn restart(opts: &Options<'_>) -> Result<u8> {
    let img = ImageReader::open(&opts.image)?;
    let streamed = opts.page_stream.is_some();
    let on_demand = opts.pages_on_demand.is_some();
    let where_pages = match (streamed, on_demand) {
        (true, _) => Pages::OnStream,
        (false, true) => Pages::OnDemand,
        (false, false) => Pages::InFiles,
    };
    // The first image of a pre-copy's rounds may be one of pages read while
    // the tree ran: the rounds after it bring every page up to date before
    // the tree runs.
    if opts.next_round.is_none() {
        img.of_one_moment()?;
    }
    let images = checked_images(&img, opts.allow_changed_files, where_pages)?;
    rebuild::sockets::clear_stale_names(&img.inventory.unix)?;
    let mut pages = HashMap::new();
    for p in images.values() {
        pages.insert(p.pid, cryo_image::chain::resolve(&img, p)?);
    }
    if !opts.pid_ns && img.inventory.processes.len() > 1 {
        tracing::warn!("restoring a tree without a pid namespace: its processes get new pids, which pids they remember will not match");
    }

    let terminal = terminal::adopt(images.values());
    let mut sandbox = if opts.pid_ns { ns::Sandbox::with_pid_ns(img.inventory.root_pid)? } else { ns::Sandbox::plain() };
    // Checked beside the rebuild; nothing runs before every pages file of
    // the chain passed.
    // (A streamed file is checked as it arrives, a fetched piece as it comes.)
    let mut files: Vec<_> = pages.values().flat_map(|src| src.files.iter().skip(usize::from(streamed || on_demand)).cloned()).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    if opts.lazy && (streamed || opts.next_round.is_some() || !opts.pid_ns) {
        return Err(RestoreError::Rebuild("--lazy restarts an image directory inside the restore namespace: not from a stream, a pre-copy or with --no-pid-ns".into()));
    }
    if on_demand && !opts.lazy {
        return Err(RestoreError::Rebuild("pages fetched on demand need a lazy restart".into()));
    }
    let mut lazy = lazy::Server::new(opts.pages_on_demand);
    let oom_kills = cryo_tracer::proc::oom_kills();
    let root_host = match restore_tree(&img, &images, &pages, &mut sandbox, opts, files, &mut lazy) {
        Ok(h) => h,
        Err(e) => {
            let e = give_up(&mut sandbox, terminal, e);
            // A process the kernel killed for want of memory shows only as gone.
            return Err(match (oom_kills, cryo_tracer::proc::oom_kills()) {
                (Some(before), Some(now)) if now > before => RestoreError::OutOfMemory { error: Box::new(e), killed: now - before },
                _ => e,
            });
        }
    };
    if let Some(t) = &terminal {
        t.notify(root_host);
    }
    sandbox.done_spawning();
    if let Some(p) = &opts.pidfile {
        std::fs::write(p, format!("{root_host}\n"))
            .map_err(|e| RestoreError::Io { what: format!("writing pidfile {}", p.display()), source: e })?;
    }
    if let Some(d) = opts.pages_on_demand {
        d.released(root_host);
    }
    if !lazy.is_empty() {
        tracing::info!("the tree runs; filling the rest of its memory");
        if let Err(e) = lazy.run() {
            let e = RestoreError::Rebuild(format!("{e}; the tree was killed, as its memory could not be completed"));
            return Err(give_up(&mut sandbox, terminal, e));
        }
    }
    // The sender resumes its copy of the tree unless told that every page
    // is here; so this copy must not run on if that cannot be told.
    if let Some(Err(e)) = opts.pages_on_demand.map(|d| d.complete()) {
        let e = RestoreError::Rebuild(format!("{e}; the tree was killed here, as the sending side could not be told that it has every page"));
        return Err(give_up(&mut sandbox, terminal, e));
    }
    if opts.detach {
        return Ok(0);
    }
    let code = foreground::wait(&sandbox, root_host);
    if let Some(t) = terminal {
        t.restore();
    }
    Ok(code)
}

/// A restart that cannot go on: what it created is killed, the user's
/// terminal gets its settings back; returns `e`.
fn give_up(sandbox: &mut ns::Sandbox, terminal: Option<terminal::Terminal>, e: RestoreError) -> RestoreError {
    sandbox.kill_all();
    if let Some(t) = terminal {
        t.restore();
    }
    e
}

/// Every check restart makes before creating anything (architecture, page
/// size, CPU features, that the files the image refers to exist, the
/// image's own consistency), on an image whose page files need not be there yet:
/// a receiver of a stream runs them before the pages cross the wire.
/// `rounds_follow`: the first of a pre-copy's rounds, which may hold pages
/// read while the tree ran.
pub fn precheck(dir: &std::path::Path, rounds_follow: bool) -> Result<()> {
    let img = ImageReader::open(dir)?;
    if !rounds_follow {
        img.of_one_moment()?;
    }
    checked_images(&img, false, Pages::NotYet).map(drop)
}

/// Leaves of the tree that shared memory with their parent since a fork,
/// forked from it once its memory is in so that they share it again: when
/// the memory is filled at once from the image's directory.
fn forked_later(entries: &[cryo_image::ProcessEntry], images: &HashMap<i32, ProcessImage>, opts: &Options<'_>, in_userns: bool) -> HashSet<i32> {
    let eager = opts.page_stream.is_none() && opts.pages_on_demand.is_none() && !opts.lazy && opts.next_round.is_none();
    entries
        .iter()
        .filter(|e| eager && in_userns && images.get(&e.pid).is_some_and(|p| rebuild::forked::eligible(e, entries, p, images)))
        .map(|e| e.pid)
        .collect()
}

/// Warns when the tree's memory may not fit: a restart that runs out of
/// memory halfway is killed. Pages that processes shared with their parent
/// since a fork are filled into each of them, but for those forked from
/// their parent (`later`).
fn memory_fits(images: &HashMap<i32, ProcessImage>, pages: &HashMap<i32, ResolvedPages>, later: &HashSet<i32>, ps: u64) {
    let inherited = |p: &ProcessImage| -> u64 { p.pages.iter().filter(|r| r.origin == cryo_image::PageOrigin::Inherited).map(|r| r.npages * ps).sum() };
    let shared_again: u64 = images.values().filter(|p| later.contains(&p.pid)).map(inherited).sum();
    // Saturating: a page a parent left out as zero counts in shared_again only.
    let need: u64 = pages.values().map(|s| s.bytes(ps)).sum::<u64>().saturating_sub(shared_again);
    let copies: u64 = images.values().filter(|p| !later.contains(&p.pid)).map(inherited).sum();
    let mib = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
    if copies > 0 {
        tracing::info!("{} MiB that processes shared with their parent since a fork come back as copies of their own", mib(copies));
    }
    match cryo_tracer::proc::available_memory() {
        Some(have) if need > have => tracing::warn!(
            "the image's memory takes {} MiB{} and {} MiB are available here: the restart may run out of memory and be killed",
            mib(need),
            if copies > 0 { format!(" ({} MiB of it shared since a fork before, a copy per process now)", mib(copies)) } else { String::new() },
            mib(have)
        ),
        _ => {}
    }
}

/// Where the pages files of the image being checked are.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Pages {
    /// Not received yet: a stream's metadata is checked before its pages cross the wire.
    NotYet,
    InFiles,
    /// Coming on the stream while the tree is rebuilt (checked as they arrive).
    OnStream,
    /// Fetched from the image's host as needed (each piece checked as it comes).
    OnDemand,
}

fn checked_images(img: &ImageReader, allow_changed_files: bool, pages: Pages) -> Result<HashMap<i32, ProcessImage>> {
    check::image_fits_this_machine(img)?;
    let mut images = HashMap::new();
    for e in img.inventory.processes.iter().filter(|e| e.state == ProcessState::Live) {
        let p = if pages == Pages::InFiles { img.read_process(e.pid)? } else { img.read_process_meta(e.pid)? };
        plan_process(&p)?;
        if pages != Pages::InFiles && p.pages.iter().any(|r| r.origin == cryo_image::PageOrigin::Inherited) {
            return Err(RestoreError::Rebuild(format!(
                "process {} of this image has pages it shares with its parent stored once, in the parent's pages file, which a stream or a fetch cannot give in time: restart the image from its directory",
                p.pid
            )));
        }
        check::files_exist(&p)?;
        // A file that grows (a log) is only warned about, once, by the real
        // restart; the vDSO's copy is among the pages.
        if pages != Pages::NotYet {
            check::files_unchanged(&p, allow_changed_files)?;
        }
        if pages == Pages::InFiles {
            check::vdso_matches(img, &p)?;
        }
        images.insert(e.pid, p);
    }
    check::tree_is_sane(&img.inventory, &images)?;
    Ok(images)
}

/// What restart checks of one process image before creating anything, and
/// the page reads it then plans; returns the number of reads. Every read
/// lands inside one of the image's memory areas and inside its pages file:
/// a hostile image cannot make restart write elsewhere. (Also the fuzzer's
/// entry point: fuzz/.)
pub fn plan_process(p: &ProcessImage) -> Result<usize> {
    check::process_is_sane(p)?;
    // This image's own pages (those of parent images are checked with theirs).
    let own = own_pages(PathBuf::new(), p);
    let reads = rebuild::plan_reads(&own, cryo_tracer::arch::page_size());
    for r in &reads {
        let in_file = r.file_offset.checked_add(r.bytes).is_some_and(|end| end <= p.pages_bytes);
        let in_areas = r.iovs.iter().all(|&(a, l)| p.vmas.iter().any(|v| v.start <= a && a.checked_add(l).is_some_and(|e| e <= v.end)));
        if !in_file || !in_areas {
            return Err(RestoreError::Corrupt(format!("process {}: a page read falls outside its areas or its pages file", p.pid)));
        }
    }
    Ok(reads.len())
}

/// The pages `p`'s own pages file (at `path`) holds, without its parents'.
fn own_pages(path: PathBuf, p: &ProcessImage) -> ResolvedPages {
    use cryo_image::chain::{PagesFile, SourceRun};
    ResolvedPages {
        files: vec![PagesFile::of(path, p)],
        runs: p
            .pages
            .iter()
            .filter(|r| r.origin == cryo_image::PageOrigin::Here)
            .map(|r| SourceRun { vaddr: r.vaddr, npages: r.npages, file: 0, file_offset: r.file_offset })
            .collect(),
    }
}

/// The tree-level checks of restart, for an inventory and its process images.
pub fn check_tree(inv: &cryo_image::Inventory, images: &HashMap<i32, ProcessImage>) -> Result<()> {
    check::tree_is_sane(inv, images)
}

/// A point where a restart may stop (a test's CRYO_FAULT, or a signal to cryo).
fn stage(name: &str) -> Result<()> {
    cryo_tracer::fault::check(name).map_err(RestoreError::from)
}

/// Create the tree, then rebuild it stage by stage across all processes, so
/// that no process runs before every one is ready. Returns the root's host pid.
fn restore_tree(
    img: &ImageReader,
    images: &HashMap<i32, ProcessImage>,
    sources: &HashMap<i32, ResolvedPages>,
    sandbox: &mut ns::Sandbox,
    opts: &Options<'_>,
    files: Vec<cryo_image::chain::PagesFile>,
    lazy: &mut lazy::Server,
) -> Result<i32> {
    // Where cryo will copy the pages into place, it checksums them as they
    // pass: the files are read afterwards only where no copy went.
    let huge_pages = rebuild::huge_page_size(opts.huge_pages);
    let in_files = opts.page_stream.is_none() && opts.pages_on_demand.is_none();
    let copies = !opts.lazy && in_files && huge_pages.is_none() && cryo_tracer::uffd::available();
    let mut digests = Digests::start(files, copies);
    let in_userns = sandbox.init.is_some();
    let mut reg = Registry::new(images.values());
    let ps = img.inventory.page_size;
    let pages = rebuild::PageProgress::new(opts.progress.clone(), sources.values().map(|s| s.bytes(ps)).sum());
    let t = std::time::Instant::now();
    let logged = |what: &str| tracing::debug!("restart: {what} done after {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
    stage("restart-shape")?;
    let entries = &img.inventory.processes;
    let later = forked_later(entries, images, opts, in_userns);
    memory_fits(images, sources, &later, ps);
    let members = shape::create(entries, images, sandbox, &mut reg, &later)?;
    logged("creating the processes");
    let root_host = members[0].host;
    let mut live = Vec::new();
    for m in members {
        match (m.entry.state, m.image) {
            (ProcessState::Zombie { status }, _) => shape::exit_as(m, status)?,
            (ProcessState::Live, Some(p)) => live.push((m, p)),
            (ProcessState::Live, None) => unreachable!("shape::create gives every live process its image"),
        }
    }
    let mut tree = Vec::new();
    for (m, p) in live {
        stage("restart-load")?;
        let mut r = Restoree::load(m, std::sync::Arc::new(p.clone()), &reg)?;
        r.huge_pages = huge_pages;
        r.checksums = digests.known();
        tree.push(r);
    }
    logged("loading the restorer");
    let rounds = opts.next_round.is_some();
    let own = match (opts.page_stream, opts.pages_on_demand) {
        (Some(stream), _) => rebuild::OwnPages::Streamed(rebuild::Streamed { stream }),
        (None, Some(pages)) => rebuild::OwnPages::OnDemand(rebuild::OnDemand { pages }),
        (None, None) => rebuild::OwnPages::InFiles,
    };
    for r in &mut tree {
        stage("restart-memory")?;
        r.map_memory(&sources[&r.pid()], &mut reg, in_userns, own)?;
    }
    logged("mapping memory");
    if matches!(own, rebuild::OwnPages::InFiles) {
        // Several processes at once: each keeps a CPU busy with the kernel's
        // work on fresh pages (allocating, zeroing, the copy).
        fill_in_parallel(&mut tree, sources, &pages, rounds, opts.lazy, opts.jobs)?;
        let mut forked = fork_leaves(&mut tree, entries, images, sources, &later, sandbox, &mut reg, huge_pages)?;
        for r in &mut forked {
            r.checksums = digests.known();
        }
        fill_in_parallel(&mut forked, sources, &pages, false, false, opts.jobs)?;
        tree.extend(forked);
    } else {
        // One stream, or one source of pages on demand, in tree order.
        for r in &mut tree {
            r.fill_memory(&sources[&r.pid()], &pages, rounds, own, opts.lazy)?;
        }
    }
    if let Some(s) = opts.page_stream {
        s.finish()?;
    }
    pages.finish();
    logged("memory");
    digests.memory_filled();
    let last = match opts.next_round {
        Some(next) => {
            // The first image's files may go once the next round is asked for.
            digests.join()?;
            let last = apply_rounds(img, &mut tree, &mut reg, next, opts)?;
            for r in &mut tree {
                r.protect()?;
            }
            logged("pre-copy rounds");
            Some(last)
        }
        None => None,
    };
    let img = last.as_ref().unwrap_or(img);
    for r in &mut tree {
        stage("restart-fds")?;
        r.fds(&mut reg, img)?;
    }
    logged("fds");
    for r in &mut tree {
        stage("restart-state")?;
        r.process_state()?;
        r.close_temps()?;
    }
    logged("process state");
    for r in &mut tree {
        stage("restart-finish")?;
        r.finish()?;
    }
    logged("threads and registers");
    digests.join()?;
    if let Some(gate) = &opts.before_release {
        gate(root_host).map_err(RestoreError::Cancelled)?;
        logged("the go-ahead");
    }
    // The last point where the restart can still stop with nothing having run.
    stage("restart-release")?;
    for r in tree {
        r.release(lazy)?;
    }
    logged("release");
    Ok(root_host)
}

/// Fill the memory of `tree`, several processes at once (`jobs` at most).
fn fill_in_parallel(tree: &mut [Restoree], sources: &HashMap<i32, ResolvedPages>, pages: &rebuild::PageProgress, rounds: bool, lazy: bool, jobs: Option<usize>) -> Result<()> {
    let width = relay::width_for(tree.len(), jobs, 1);
    // One at a time (one process, or --jobs 1) leaves CPUs free: a second
    // thread of cryo fills each process's memory ([`Restoree::spare_cpu`]).
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    for r in tree.iter_mut() {
        r.spare_cpu = width == 1 && cpus > 1;
    }
    let jobs_now: Vec<relay::Job<Result<()>>> = tree
        .iter_mut()
        .map(|r| {
            let src = &sources[&r.pid()];
            Box::new(move || r.fill_memory(src, pages, rounds, rebuild::OwnPages::InFiles, lazy)) as relay::Job<Result<()>>
        })
        .collect();
    tracing::debug!("memory of {} processes filled {width} at a time", jobs_now.len());
    relay::in_parallel(jobs_now, width).into_iter().collect()
}

/// Fork each leaf in `later` from its parent, whose memory is in, and map
/// its memory (what it keeps from the parent stays).
#[allow(clippy::too_many_arguments)]
fn fork_leaves<'a>(
    tree: &mut [Restoree<'a>],
    entries: &'a [cryo_image::ProcessEntry],
    images: &'a HashMap<i32, ProcessImage>,
    sources: &HashMap<i32, ResolvedPages>,
    later: &HashSet<i32>,
    sandbox: &mut ns::Sandbox,
    reg: &mut Registry,
    huge_pages: Option<u64>,
) -> Result<Vec<Restoree<'a>>> {
    let mut forked = Vec::new();
    for e in entries.iter().filter(|e| later.contains(&e.pid)) {
        stage("restart-fork")?;
        let p = &images[&e.pid];
        let parent = tree.iter_mut().find(|r| r.pid() == e.ppid).ok_or_else(|| RestoreError::Corrupt(format!("process {} has no live parent {}", e.pid, e.ppid)))?;
        let m = parent.fork_child(e, p, sandbox, reg, true)?;
        let now = cryo_tracer::proc::maps(m.host)?;
        stage("restart-load")?;
        let mut r = Restoree::load(m, std::sync::Arc::new(p.clone()), reg)?;
        r.huge_pages = huge_pages;
        r.forked = true;
        r.kept = rebuild::forked::kept_areas(p, &images[&e.ppid], &now);
        tracing::debug!("process {}: forked from {}, keeping {} of its areas", e.pid, e.ppid, r.kept.len());
        stage("restart-memory")?;
        r.map_memory(&sources[&e.pid], reg, true, rebuild::OwnPages::InFiles)?;
        forked.push(r);
    }
    Ok(forked)
}

/// The same processes, in the same groups, sessions and states: what a
/// round may not change (the tree was created from the first image).
fn same_tree(first: &cryo_image::Inventory, now: &cryo_image::Inventory) -> Result<()> {
    let shape = |inv: &cryo_image::Inventory| -> Vec<_> {
        inv.processes.iter().map(|e| (e.pid, e.ppid, e.pgid, e.sid, e.session_outside, e.state)).collect()
    };
    if shape(first) != shape(now) {
        return Err(RestoreError::Rebuild(
            "the tree's processes changed between pre-copy rounds (one started, ended or changed its group); migrate again, or without --precopy".into(),
        ));
    }
    Ok(())
}

/// Brings every process of the rebuilt tree up to each round's image in
/// turn; returns the last image.
fn apply_rounds(first: &ImageReader, tree: &mut [Restoree], reg: &mut Registry, next: NextRound<'_>, opts: &Options<'_>) -> Result<ImageReader> {
    let ps = first.inventory.page_size;
    loop {
        stage("restart-round")?;
        let (dir, more) = match next().map_err(RestoreError::Cancelled)? {
            Round::More(d) => (d, true),
            Round::Last(d) => (d, false),
        };
        let t = std::time::Instant::now();
        let img = ImageReader::open(&dir)?;
        img.of_one_moment()?;
        let mut images = checked_images(&img, opts.allow_changed_files, Pages::InFiles)?;
        tracing::debug!("restart: round checked in {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
        same_tree(&first.inventory, &img.inventory)?;
        let own: HashMap<i32, ResolvedPages> = images.values().map(|p| (p.pid, own_pages(img.pages_path(p.pid), p))).collect();
        let mut digests = Digests::start(own.values().flat_map(|o| o.files.clone()).collect(), false);
        let pages = rebuild::PageProgress::new(opts.progress.clone(), own.values().map(|o| o.bytes(ps)).sum());
        for r in tree.iter_mut() {
            let p = images.remove(&r.pid()).ok_or_else(|| RestoreError::Corrupt(format!("process {} has no image in this round", r.pid())))?;
            r.update(p, &own[&r.pid()], reg, &pages)?;
        }
        pages.finish();
        digests.join()?;
        tracing::debug!("restart: round applied in {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
        if !more {
            rebuild::sockets::clear_stale_names(&img.inventory.unix)?;
            return Ok(img);
        }
    }
}
