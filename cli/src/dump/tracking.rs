//! Write tracking for incremental checkpoints.
//!
//! Soft-dirty bits are not available (compiled out here, absent on arm64),
//! so cryo uses userfaultfd write-protection in async mode: the parasite
//! makes the target create a userfaultfd (UFFD_USER_MODE_ONLY,
//! UFFD_FEATURE_WP_ASYNC) and register its private memory for
//! write-protection; PAGEMAP_SCAN on /proc/PID/pagemap then reports the
//! pages written since the last scan and write-protects them again in the
//! same pass. A write to a protected page costs the program one minor fault;
//! nothing waits for cryo.
//!
//! The userfaultfd stays in the target between checkpoints (close-on-exec,
//! at a high fd number below 4096 and the fd limit), so that two separate
//! cryo runs (`cryo checkpoint --parent`) and the checkpoints of `cryo
//! attach` work alike; the fd dump ignores it. Next to it lies a generation
//! token, an empty memfd named `cryo-track:<generation>`, renewed at every
//! tracked checkpoint before the scan. An image records the generation its
//! scan began: a later checkpoint is incremental against it only while the
//! target still holds that generation, so a checkpoint that scanned and then
//! failed, or any tracked checkpoint taken since, makes the next one against
//! the old parent a full one instead of one that misses writes.
//!
//! Tracking is lost, and the memory concerned stored whole, when the fd is
//! gone (closed by the program, or exec), for areas that are new or were
//! moved (mremap drops the registration), and in forked children (the
//! registration is not inherited).

use anyhow::Result;
use cryo_image::{ranges, PageOrigin, Tracking, Vma, VmaKind};
use cryo_injector::{Arg, Batch, Parasite, Remote};
use cryo_tracer::arch::Sysno;
use cryo_tracer::proc::scan::{self, Query};
use cryo_tracer::proc::Pagemap;
use cryo_tracer::{fault, proc, Seized};
use std::os::unix::fs::MetadataExt;

use cryo_tracer::uffd::{UFFDIO_API, UFFDIO_REGISTER, UFFDIO_REGISTER_MODE_WP, UFFD_API, UFFD_FEATURE_WP_ASYNC, UFFD_USER_MODE_ONLY};
const LINK: &str = "anon_inode:[userfaultfd]";

/// What a tracked checkpoint learnt about a process's memory.
#[derive(Clone)]
pub struct Tracked {
    /// To record in the image, for the next checkpoint.
    pub info: Tracking,
    /// Areas tracked without a break since the parent image: only their
    /// written pages are new.
    pub since_parent: Vec<(u64, u64)>,
    /// Pages written since the parent image (or since registration) in
    /// tracked areas, as sorted address ranges.
    pub written: Vec<(u64, u64)>,
    /// Areas of `since_parent` whose pages to store are known without a
    /// look at every page (see [`Tracked::pages_in`]), in address order.
    known: Vec<(u64, u64)>,
    /// Those of `written` in `known` areas that hold data now (present but
    /// for the shared zero page, or swapped).
    written_data: Vec<(u64, u64)>,
    /// The pages the parent image holds for the process.
    held: Vec<(u64, u64)>,
    /// Why some or all memory is stored whole although a parent was given.
    pub lost: Option<String>,
    /// The userfaultfd was made by this checkpoint.
    pub created: bool,
    /// The generation token's fd.
    pub token_fd: i32,
}

impl Tracked {
    /// Whether the page at `addr` is unchanged since the parent image, and
    /// the address up to which every page is the same in that respect.
    pub fn unchanged_until(&self, addr: u64) -> (bool, u64) {
        let (tracked, t_end) = ranges::locate(&self.since_parent, addr);
        let (written, w_end) = ranges::locate(&self.written, addr);
        (tracked && !written, t_end.min(w_end))
    }

    /// The pages of area `v` to store, in address order, when its scan
    /// said enough: written pages that hold data are new, and every page not
    /// written since the parent image holds what it held then, so the
    /// parent's pages stand for those. In anonymous memory a page the
    /// program dropped (MADV_DONTNEED, a page table freed with it) shows as
    /// written; this spares looking at each of its pages (2 ms per GiB).
    pub fn pages_in(&self, v: &Vma) -> Option<Vec<(u64, u64, PageOrigin)>> {
        if self.known.binary_search(&(v.start, v.end)).is_err() {
            return None;
        }
        let mut out = Vec::new();
        // One pass over each sorted list (a look-up per piece costs more
        // than the scan it spares, at 10,000 written pages).
        let (mut held, mut data) = (0, 0);
        let mut at = v.start;
        let first = self.written.partition_point(|r| r.1 <= v.start);
        for &(start, end) in self.written[first..].iter().take_while(|r| r.0 < v.end) {
            let (start, end) = (start.max(v.start), end.min(v.end));
            clip(&self.held, &mut held, (at, start), PageOrigin::Parent, &mut out);
            clip(&self.written_data, &mut data, (start, end), PageOrigin::Here, &mut out);
            at = end;
        }
        clip(&self.held, &mut held, (at, v.end), PageOrigin::Parent, &mut out);
        Some(out)
    }
}

/// Push the parts of sorted `ranges` inside `within`, from index `next` on,
/// which moves past those that end before `within` does.
fn clip(ranges: &[(u64, u64)], next: &mut usize, within: (u64, u64), origin: PageOrigin, out: &mut Vec<(u64, u64, PageOrigin)>) {
    let (from, to) = within;
    if from >= to {
        return;
    }
    while ranges.get(*next).is_some_and(|r| r.1 <= from) {
        *next += 1;
    }
    for &(start, end) in &ranges[*next..] {
        if start >= to {
            break;
        }
        out.push((start.max(from), end.min(to), origin));
        if end > to {
            break;
        }
        *next += 1;
    }
}

/// Memory whose dropped pages show as written (see [`Tracked::pages_in`]):
/// in a file mapping a dropped page leaves a write-protect marker instead,
/// and shows the file again.
fn anonymous(v: &Vma) -> bool {
    matches!(v.kind, VmaKind::Anon | VmaKind::Heap | VmaKind::Stack) && !v.has_flag("ht")
}

/// Is fd `fd` of `pid` (with /proc link `link`) cryo's tracking: its
/// userfaultfd (async write-protect, which programs hardly use themselves)
/// or its generation token?
pub fn is_tracking_fd(pid: i32, fd: i32, link: &str) -> bool {
    if link.starts_with(TOKEN_LINK) {
        return true;
    }
    link == LINK && uffd_features(pid, fd).is_some_and(|f| f & UFFD_FEATURE_WP_ASYNC != 0)
}

/// Features of a userfaultfd, from the `API:` line of its fdinfo.
fn uffd_features(pid: i32, fd: i32) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let api = info.lines().find_map(|l| l.strip_prefix("API:"))?;
    u64::from_str_radix(api.trim().split(':').nth(1)?, 16).ok()
}

const TOKEN_NAME: &str = "cryo-track:";
const TOKEN_LINK: &str = "/memfd:cryo-track:";

/// An fd of cryo's tracking in a process, with the userfaultfd's inode or
/// the token's generation.
type Found = Option<(i32, u64)>;

/// The tracking cryo left in a process: its userfaultfd and generation token.
fn find(pid: i32) -> Result<(Found, Found)> {
    let (mut uffd, mut token) = (None, None);
    for f in proc::fds(pid)? {
        if let Some(g) = f.link.strip_prefix(TOKEN_LINK) {
            token = g.split_whitespace().next().and_then(|g| g.parse().ok()).map(|g| (f.fd, g));
        } else if uffd.is_none() && is_tracking_fd(pid, f.fd, &f.link) {
            let ino = std::fs::metadata(format!("/proc/{pid}/fd/{}", f.fd)).map(|m| m.ino()).unwrap_or(0);
            uffd = Some((f.fd, ino));
        }
    }
    Ok((uffd, token))
}

fn trackable(v: &Vma) -> bool {
    !v.shared && matches!(v.kind, VmaKind::Anon | VmaKind::Heap | VmaKind::Stack | VmaKind::File) && !v.has_flag("io") && !v.has_flag("pf")
}

/// Start or continue tracking in the frozen process. `Ok(Err(why))` when
/// this kernel or process cannot be tracked: the checkpoint is then full.
/// Without `scan`, the pages are neither looked at nor write-protected
/// (`written` is empty): a pre-copy does that with [`write_protect`] once
/// the process runs again.
pub fn track(
    seized: &mut Seized,
    remote: &mut Remote,
    parasite: &mut Parasite,
    vmas: &[Vma],
    prev: Option<&super::parent::ParentTracking>,
    scan: bool,
) -> Result<std::result::Result<Tracked, String>> {
    let pid = seized.pid;
    let (held, prev) = (prev.map_or(&[][..], |p| p.held.as_slice()), prev.map(|p| &p.tracking));
    fault::check("tracking")?;
    let (uffd, token) = find(pid)?;
    let continuous = |t: &Tracking| uffd.is_some_and(|(_, ino)| ino == t.inode) && token.is_some_and(|(_, g)| g == t.generation);
    let lost = match prev {
        Some(t) if !continuous(t) => Some(format!(
            "the write tracking of process {pid} is not the one its parent image left (closed, exec, or a tracked checkpoint since)"
        )),
        _ => None,
    };
    let (fd, inode, created) = match uffd {
        Some((fd, ino)) => (fd, ino, false),
        None => match create(seized, remote, parasite)? {
            Ok(fd) => (fd, std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).map(|m| m.ino()).unwrap_or(0), true),
            Err(why) => return Ok(Err(why)),
        },
    };
    let generation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64 ^ pid as u64;
    let mut reg = Batch::new();
    let name = reg.cstr(&format!("{TOKEN_NAME}{generation}"));
    let memfd = reg.call(Sysno::MemfdCreate, &[Arg::Data(name), (libc::MFD_CLOEXEC as u64).into()]);
    let new_token = reg.call(Sysno::Fcntl, &[Arg::Result(memfd), (libc::F_DUPFD_CLOEXEC as u64).into(), high_fd(pid).into()]);
    reg.call(Sysno::Close, &[Arg::Result(memfd)]);
    if let Some((old, _)) = token {
        reg.call_may_fail(Sysno::Close, &[(old as u64).into()]);
    }
    let first_reg = reg.len();
    // Areas new since the last registration (or all, with a new fd).
    let mut wanted = Vec::new();
    for v in vmas.iter().filter(|v| trackable(v) && (created || !v.has_flag("uw"))) {
        let mut arg = Vec::with_capacity(32);
        for x in [v.start, v.len(), UFFDIO_REGISTER_MODE_WP, 0] {
            arg.extend_from_slice(&x.to_le_bytes());
        }
        let at = reg.data(&arg);
        reg.call_may_fail(Sysno::Ioctl, &[(fd as u64).into(), UFFDIO_REGISTER.into(), Arg::Data(at)]);
        wanted.push(v.start);
    }
    let out = match parasite.run(seized, remote, &reg) {
        Ok(out) => out,
        Err(e) => {
            if created {
                let _ = parasite.run_undo(seized, remote, &closing(&[fd]));
            }
            return Err(e.into());
        }
    };
    let token_fd = out.results[new_token] as i32;
    let results = &out.results[first_reg..];
    let newly: Vec<u64> = wanted.iter().zip(results).filter(|(_, &r)| r == 0).map(|(&a, _)| a).collect();
    if let Some((a, r)) = wanted.iter().zip(results).find(|(_, &r)| r != 0) {
        tracing::debug!("process {pid}: area {a:#x} cannot be tracked (errno {})", -r);
    }

    let pagemap = Pagemap::open(pid)?;
    let mut areas = Vec::new();
    let mut since_parent = Vec::new();
    let mut written = Vec::new();
    let (mut known, mut written_data) = (Vec::new(), Vec::new());
    // Tracked now: registered before (and not just replaced by a new fd) or just now.
    let tracked_now = |v: &&Vma| trackable(v) && ((v.has_flag("uw") && !created) || newly.contains(&v.start));
    let data = |c: u64| c & scan::PAGE_IS_SWAPPED != 0 || c & (scan::PAGE_IS_PRESENT | scan::PAGE_IS_PFNZERO) == scan::PAGE_IS_PRESENT;
    for v in vmas.iter().filter(tracked_now) {
        let was_tracked = prev.is_some_and(|t| continuous(t) && t.ranges.iter().any(|r| r.0 <= v.start && v.end <= r.1));
        let since = was_tracked && !newly.contains(&v.start);
        // Asking for more than the written category takes the kernel's
        // slower walk (2 ns more a page): only where it spares a scan.
        let knowable = scan && since && anonymous(v);
        let returned = if knowable { scan::PAGE_IS_WRITTEN | scan::PAGE_IS_PRESENT | scan::PAGE_IS_SWAPPED | scan::PAGE_IS_PFNZERO } else { scan::PAGE_IS_WRITTEN };
        let query = Query { all: scan::PAGE_IS_WRITTEN, ..Default::default() };
        let scanned = if scan { scan::regions(&pagemap, v.start, v.end, query, returned, scan::WP_MATCHING | scan::CHECK_WPASYNC) } else { Ok(Vec::new()) };
        match scanned {
            Ok(w) => {
                written.extend(w.iter().map(|r| (r.0, r.1)));
                if knowable {
                    written_data.extend(w.iter().filter(|r| data(r.2)).map(|r| (r.0, r.1)));
                    known.push((v.start, v.end));
                }
            }
            Err(e) => {
                let ours: &[i32] = if created { &[fd, token_fd] } else { &[token_fd] };
                parasite.run_undo(seized, remote, &closing(ours))?;
                return Ok(Err(format!("PAGEMAP_SCAN on process {pid} failed ({e}); this kernel cannot track writes (needs Linux 6.7+)")));
            }
        }
        areas.push((v.start, v.end));
        if since {
            since_parent.push((v.start, v.end));
        }
    }
    let ps = cryo_tracer::arch::page_size();
    let (written, written_data) = (ranges::normalized(written, ps), ranges::normalized(written_data, ps));
    let held = if known.is_empty() { Vec::new() } else { held.to_vec() };
    let info = Tracking { fd, inode, generation, ranges: areas };
    Ok(Ok(Tracked { info, since_parent, written, known, written_data, held, lost, created, token_fd }))
}

/// Write-protect the pages of the tracked `ranges` of a running process, so
/// that every write from now on shows in the next checkpoint's scan (which
/// works on the process's registrations from outside). Where this fails (an
/// area the program unmapped meanwhile) nothing is lost: a page never
/// write-protected shows as written, and is stored again.
pub fn write_protect(pid: i32, ranges: &[(u64, u64)]) {
    let pagemap = match Pagemap::open(pid) {
        Ok(p) => p,
        Err(e) => return tracing::debug!("process {pid}: not write-protected for the pre-copy: {e}"),
    };
    for &(start, end) in ranges {
        if let Err(e) = scan::ranges(&pagemap, start, end, scan::PAGE_IS_WRITTEN, scan::WP_MATCHING | scan::CHECK_WPASYNC) {
            tracing::debug!("process {pid}: {start:#x}-{end:#x} not write-protected for the pre-copy: {e}");
        }
    }
}

/// Close the tracking `t` describes in the frozen process: a pre-copy's
/// final pass takes away what its first pass started, unless asked to keep
/// it (`--track`). Returns cryo's own reference to the userfaultfd, to drop
/// once the process runs again: the last close undoes the write-protection
/// of all tracked memory, a walk of its page tables (13 ms per GiB) that
/// need not stop the process.
pub fn stop(seized: &mut Seized, remote: &mut Remote, parasite: &mut Parasite, t: &Tracked) -> Result<Option<std::os::fd::OwnedFd>> {
    let kept = cryo_tracer::files::take_fd(seized.pid, t.info.fd).ok();
    parasite.run(seized, remote, &closing(&[t.info.fd, t.token_fd]))?;
    Ok(kept)
}

/// A parasite batch closing `fds` of the process (each may be gone already).
fn closing(fds: &[i32]) -> Batch {
    let mut b = Batch::new();
    for &fd in fds {
        b.call_may_fail(Sysno::Close, &[(fd as u64).into()]);
    }
    b
}

/// Where the userfaultfd goes: out of the way of the program's own fds,
/// below its limit and without growing its fd table much.
fn high_fd(pid: i32) -> u64 {
    // libc types the resource numbers differently per target.
    #[allow(clippy::unnecessary_cast)]
    let nofile = libc::RLIMIT_NOFILE as u32;
    let soft = super::state::rlimits(pid).iter().find(|r| r.resource == nofile).map_or(1024, |r| r.cur);
    soft.min(4096).saturating_sub(32).max(3)
}

/// When the checkpoint fails while the process is still frozen: a
/// userfaultfd this checkpoint created goes again (closing it also drops its
/// registrations and write-protection), so the process leaves as it came.
pub fn undo(seized: &mut Seized, remote: &mut Remote, parasite: &mut Parasite, t: &Tracked) {
    if !t.created {
        return;
    }
    if let Err(e) = parasite.run_undo(seized, remote, &closing(&[t.info.fd, t.token_fd])) {
        tracing::warn!("process {}: closing the write tracking fds: {e}", seized.pid);
    }
}

/// Write tracking a checkpoint started in a process, to take back if the
/// checkpoint fails after all.
pub struct Started {
    pub pid: i32,
    uffd: i32,
    inode: u64,
    token_fd: i32,
    generation: u64,
}

impl Started {
    /// What `t` started in `pid`, if it started anything.
    pub fn of(pid: i32, t: &Tracked) -> Option<Started> {
        t.created.then_some(Started { pid, uffd: t.info.fd, inode: t.info.inode, token_fd: t.token_fd, generation: t.info.generation })
    }

    /// Take the tracking away from the process, frozen since.
    pub fn undo_frozen(&self, seized: &mut Seized) {
        close_remotely(seized, &[self.uffd, self.token_fd]);
    }

    /// Take the tracking away from the process, which runs again since:
    /// freeze it once more and close each fd that is still the one this
    /// checkpoint made (the program may have closed it, or exec'd and
    /// reused the number).
    pub fn undo_released(&self) {
        let pid = self.pid;
        close_frozen_again(pid, || {
            let path = |fd: i32| format!("/proc/{pid}/fd/{fd}");
            let link = |fd: i32| std::fs::read_link(path(fd)).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
            let same_uffd = link(self.uffd) == LINK && std::fs::metadata(path(self.uffd)).is_ok_and(|m| m.ino() == self.inode);
            let token = link(self.token_fd);
            let same_token = token.strip_prefix(TOKEN_LINK).and_then(|g| g.split_whitespace().next()) == Some(self.generation.to_string().as_str());
            [(same_uffd, self.uffd), (same_token, self.token_fd)].into_iter().filter(|(same, _)| *same).map(|(_, fd)| fd).collect()
        });
    }
}

/// The processes of the tree of `root` that hold cryo's write tracking.
fn tracked_in_tree(root: i32) -> Vec<i32> {
    let mut pids = proc::descendants(root);
    pids.retain(|&pid| find(pid).is_ok_and(|(uffd, token)| uffd.is_some() || token.is_some()));
    pids
}

/// The processes of a running tree that held cryo's write tracking before
/// a pre-copy (a checkpoint's or a migration's) started more: what it
/// started is what it takes away again, the rest stays.
pub struct TrackedBefore {
    root: i32,
    pids: Vec<i32>,
}

impl TrackedBefore {
    pub fn of(root: i32) -> TrackedBefore {
        TrackedBefore { root, pids: tracked_in_tree(root) }
    }

    /// Whether any process was tracked before.
    pub fn any(&self) -> bool {
        !self.pids.is_empty()
    }

    /// The processes tracked now that were not before.
    pub fn started(&self) -> Vec<i32> {
        tracked_in_tree(self.root).into_iter().filter(|p| !self.pids.contains(p)).collect()
    }

    /// Take the tracking started since away, freezing each process once more.
    pub fn take_back(&self) {
        for pid in self.started() {
            remove(pid);
        }
    }
}

/// Take cryo's write tracking away from a running process.
fn remove(pid: i32) {
    close_frozen_again(pid, || match find(pid) {
        Ok((uffd, token)) => [uffd, token].into_iter().flatten().map(|(fd, _)| fd).collect(),
        Err(_) => Vec::new(),
    });
}

/// Freeze a running process once more, close the fds `which` picks while it
/// is frozen, and let it go.
fn close_frozen_again(pid: i32, which: impl FnOnce() -> Vec<i32>) {
    let mut seized = match Seized::freeze_to_undo(pid) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("process {pid}: not frozen again to take the write tracking away: {e}");
            return;
        }
    };
    let fds = which();
    if !fds.is_empty() {
        close_remotely(&mut seized, &fds);
    }
    if let Err(e) = seized.release() {
        tracing::warn!("process {pid}: letting it go after taking the write tracking away: {e}");
    }
}

/// [`undo`] for a process whose parasite is gone but which is still frozen:
/// the fds are closed by remote syscalls through a temporary gadget.
fn close_remotely(seized: &mut Seized, fds: &[i32]) {
    let pid = seized.pid;
    let closed = (|| -> Result<()> {
        let vmas = proc::vmas(pid)?;
        let mut remote = Remote::bootstrap(seized, pid, &vmas)?;
        let mut result = Ok(());
        for &fd in fds {
            if let Err(e) = remote.syscall_unchecked(seized, Sysno::Close, [fd as u64, 0, 0, 0, 0, 0]) {
                result = Err(e.into());
                break;
            }
        }
        remote.drop_bootstrap()?;
        result
    })();
    if let Err(e) = closed {
        tracing::warn!("process {pid}: could not take the write tracking away again ({e}); it only costs the process one page fault per page written");
    }
}

/// Create the userfaultfd in the target at a high fd number.
fn create(seized: &mut Seized, remote: &mut Remote, parasite: &mut Parasite) -> Result<std::result::Result<i32, String>> {
    let pid = seized.pid;
    let mut b = Batch::new();
    let flags = UFFD_USER_MODE_ONLY | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let uffd = b.call_may_fail(Sysno::Userfaultfd, &[flags.into()]);
    let out = parasite.run(seized, remote, &b)?;
    let raw = out.results[uffd];
    if cryo_parasite::abi::is_error(raw) {
        let why = nix::errno::Errno::from_raw(-raw as i32);
        return Ok(Err(format!("userfaultfd is not available to process {pid} ({why}); needs Linux 5.11+ with UFFD_USER_MODE_ONLY")));
    }
    let high = high_fd(pid);
    let mut b = Batch::new();
    let mut api = Vec::with_capacity(24);
    for x in [UFFD_API, UFFD_FEATURE_WP_ASYNC, 0] {
        api.extend_from_slice(&x.to_le_bytes());
    }
    let at = b.data(&api);
    let api_call = b.call_may_fail(Sysno::Ioctl, &[(raw as u64).into(), UFFDIO_API.into(), Arg::Data(at)]);
    let dup = b.call_may_fail(Sysno::Fcntl, &[(raw as u64).into(), (libc::F_DUPFD_CLOEXEC as u64).into(), high.into()]);
    b.call_may_fail(Sysno::Close, &[(raw as u64).into()]);
    let out = match parasite.run(seized, remote, &b) {
        Ok(out) => out,
        Err(e) => {
            let _ = parasite.run_undo(seized, remote, &closing(&[raw as i32]));
            return Err(e.into());
        }
    };
    let (api_r, dup_r) = (out.results[api_call], out.results[dup]);
    if api_r != 0 || cryo_parasite::abi::is_error(dup_r) {
        if !cryo_parasite::abi::is_error(dup_r) {
            parasite.run_undo(seized, remote, &closing(&[dup_r as i32]))?;
        }
        let errno = nix::errno::Errno::from_raw(-(if api_r != 0 { api_r } else { dup_r }) as i32);
        return Ok(Err(format!("this kernel's userfaultfd has no async write-protect mode ({errno}); needs Linux 6.7+")));
    }
    Ok(Ok(dup_r as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_unchanged_since_the_parent() {
        let t = Tracked {
            info: Tracking { fd: 0, inode: 0, generation: 0, ranges: Vec::new() },
            since_parent: vec![(0x1000, 0x9000), (0x20000, 0x30000)],
            written: vec![(0x3000, 0x5000), (0x22000, 0x23000)],
            known: Vec::new(),
            written_data: Vec::new(),
            held: Vec::new(),
            lost: None,
            created: false,
            token_fd: 0,
        };
        assert_eq!(t.unchanged_until(0x0), (false, 0x1000), "before any tracked area");
        assert_eq!(t.unchanged_until(0x1000), (true, 0x3000));
        assert_eq!(t.unchanged_until(0x3000), (false, 0x5000), "written");
        assert_eq!(t.unchanged_until(0x5000), (true, 0x9000));
        assert_eq!(t.unchanged_until(0x9000), (false, 0x20000), "untracked gap");
        assert_eq!(t.unchanged_until(0x22000), (false, 0x23000));
        assert_eq!(t.unchanged_until(0x30000), (false, u64::MAX));
    }

    /// In an area known from its scan: written pages with data are new,
    /// written ones without (dropped) are left out, the others are the
    /// parent's where it holds them.
    #[test]
    fn pages_of_a_known_area() {
        let area = |start, end| Vma { start, end, prot: 3, shared: false, kind: VmaKind::Anon, offset: 0, dev: 0, inode: 0, name: String::new(), vmflags: Vec::new() };
        let t = Tracked {
            info: Tracking { fd: 0, inode: 0, generation: 0, ranges: Vec::new() },
            since_parent: vec![(0x10000, 0x20000), (0x30000, 0x40000)],
            written: vec![(0x12000, 0x16000), (0x1f000, 0x21000)],
            known: vec![(0x10000, 0x20000)],
            written_data: vec![(0x13000, 0x14000), (0x15000, 0x16000)],
            held: vec![(0x8000, 0x11000), (0x14000, 0x18000), (0x1c000, 0x30000)],
            lost: None,
            created: false,
            token_fd: 0,
        };
        let got = t.pages_in(&area(0x10000, 0x20000)).expect("known");
        let want = vec![
            (0x10000, 0x11000, PageOrigin::Parent),
            (0x13000, 0x14000, PageOrigin::Here),
            (0x15000, 0x16000, PageOrigin::Here),
            (0x16000, 0x18000, PageOrigin::Parent),
            (0x1c000, 0x1f000, PageOrigin::Parent),
        ];
        assert_eq!(got, want);
        assert!(t.pages_in(&area(0x30000, 0x40000)).is_none(), "tracked, but not known from the scan");

        // Against a page-by-page reading of the same rule, on random lists.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random_ranges = |n: u64| {
            let mut pages: Vec<u64> = Vec::new();
            for p in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed.is_multiple_of(3) {
                    pages.push(p);
                }
            }
            ranges::normalized(pages.iter().map(|p| (p * 0x1000, (p + 1) * 0x1000)).collect(), 0x1000)
        };
        for _ in 0..50 {
            let written = random_ranges(200);
            let data = random_ranges(200);
            let overlap = |d: &(u64, u64), w: &(u64, u64)| (d.0.max(w.0), d.1.min(w.1));
            let written_data: Vec<(u64, u64)> = data.iter().flat_map(|d| written.iter().map(move |w| overlap(d, w)).filter(|o| o.0 < o.1)).collect();
            let t = Tracked { written: written.clone(), written_data: ranges::normalized(written_data, 0x1000), held: random_ranges(200), known: vec![(0x20000, 0xb0000)], ..t.clone() };
            let mut slow: Vec<(u64, u64, PageOrigin)> = Vec::new();
            for page in (0x20000..0xb0000).step_by(0x1000) {
                let inside = |r: &[(u64, u64)]| ranges::locate(r, page).0;
                let origin = if inside(&t.written) { inside(&t.written_data).then_some(PageOrigin::Here) } else { inside(&t.held).then_some(PageOrigin::Parent) };
                match (origin, slow.last_mut()) {
                    (Some(o), Some(l)) if l.1 == page && l.2 == o => l.1 += 0x1000,
                    (Some(o), _) => slow.push((page, page + 0x1000, o)),
                    (None, _) => {}
                }
            }
            let mut fast: Vec<(u64, u64, PageOrigin)> = Vec::new();
            for p in t.pages_in(&area(0x20000, 0xb0000)).unwrap() {
                match fast.last_mut() {
                    Some(l) if l.1 == p.0 && l.2 == p.2 => l.1 = p.1,
                    _ => fast.push(p),
                }
            }
            assert_eq!(fast, slow);
        }
    }
}
