//! The fd table, classified before anything is injected, so an fd cryo cannot
//! restore fails the checkpoint up front with its number, its process and
//! the reason.

mod fdinfo;
mod inet;
mod paths;
mod pty;
mod unix;
mod unlinked;

use anyhow::{Context, Result};
use cryo_image::{FdImage, FdTarget, ImageWriter, InotifyWatch, PipeImage, UnlinkedFile};
use cryo_tracer::{files, proc};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Character devices any process can open again by path.
const REOPENABLE_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// The fd tables of a frozen tree, its pipes and FIFOs with the bytes in
/// them, and the files that have no path.
#[derive(Default)]
pub struct TreeFds {
    pub per_process: HashMap<i32, Vec<FdImage>>,
    pub pipes: Vec<PipeImage>,
    pub fifos: Vec<PipeImage>,
    pub unlinked: Vec<UnlinkedFile>,
    pub unix: Vec<cryo_image::UnixSocket>,
    pub inet: Vec<cryo_image::InetSocket>,
    pub ptys: Vec<cryo_image::PtyImage>,
    /// TCP connections to make abort (RST, no TIME_WAIT) when the tree is killed.
    pub abort_on_kill: Vec<(i32, i32)>,
}

fn pipe_inode(link: &str) -> Option<u64> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

fn writable(f: &proc::FdInfo) -> bool {
    f.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
}

fn readable(f: &proc::FdInfo) -> bool {
    f.flags & libc::O_ACCMODE as u32 != libc::O_WRONLY as u32 && f.flags & libc::O_PATH as u32 == 0
}

/// An fd that cannot be checkpointed: the error names it and says why.
fn refuse(pid: i32, f: &proc::FdInfo, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("fd {} of process {pid} ({}): {why}; close it or checkpoint another process", f.fd, f.link)
}

fn fd_metadata(pid: i32, f: &proc::FdInfo) -> Result<std::fs::Metadata> {
    // Follow the fd itself, not the path, so a file replaced meanwhile is noticed.
    std::fs::metadata(format!("/proc/{pid}/fd/{}", f.fd)).map_err(|e| refuse(pid, f, e))
}

/// The fds of the live processes `pids`; `zombies` are the tree's too (a
/// pidfd may refer to one).
pub fn collect(pids: &[i32], zombies: &[i32], view: &super::pids::PidView, writer: &mut ImageWriter, tcp_close: bool) -> Result<TreeFds> {
    let mut tables = Vec::new();
    for &pid in pids {
        // cryo's own write tracking (see tracking.rs) is not the program's.
        let fds: Vec<_> = proc::fds(pid)?.into_iter().filter(|f| !super::tracking::is_tracking_fd(pid, f.fd, &f.link)).collect();
        tables.push((pid, fds));
    }
    let pipes = tree_pipes(&tables)?;
    let fifos = tree_fifos(&tables)?;
    let mut ids = FileIds::default();
    let mut unlinked = unlinked::Saver::default();
    let ptys = pty::collect(&tables, view)?;
    let mut inet = inet::InetTable::new(&tables, tcp_close);
    let mut unix = unix::UnixTable::new(tables.iter().flat_map(|(_, fds)| fds.iter().filter_map(|f| unix::socket_inode(&f.link))).collect(), tcp_close)?;
    let mut per_process = HashMap::new();
    for (pid, fds) in &tables {
        let mut out = Vec::new();
        for f in fds {
            let cloexec = f.flags & libc::O_CLOEXEC as u32 != 0;
            let flags = f.flags & !(libc::O_CLOEXEC as u32);
            let target = match pipe_inode(&f.link) {
                Some(inode) if pipes.iter().any(|p| p.inode == inode) => FdTarget::Pipe { inode, write: writable(f) },
                _ if pty::is_master(&f.link) => {
                    let (index, _) = files::pty_master(*pid, f.fd).map_err(|e| refuse(*pid, f, e))?;
                    FdTarget::PtyMaster { index }
                }
                _ if f.link == PIDFD_LINK => pidfd(*pid, f, pids, zombies, view)?,
                _ if pty::slave_index(&f.link).is_some_and(|i| ptys.iter().any(|p| p.index == i)) => {
                    FdTarget::PtySlave { index: pty::slave_index(&f.link).expect("checked") }
                }
                _ => match unix::socket_inode(&f.link).filter(|i| unix.is_unix(*i)) {
                    // Standard input/output on a socket to outside stands for
                    // what the program talks to, like a pipe to outside.
                    Some(inode) if f.fd <= 2 && unix.leads_outside(inode) => {
                        FdTarget::Outside { stdio: stdio_for(f), what: format!("Unix socket {inode} to outside the tree") }
                    }
                    Some(inode) => {
                        unix.save(*pid, f.fd, inode).map_err(|why| refuse(*pid, f, why))?;
                        FdTarget::Unix { inode }
                    }
                    None => match unix::socket_inode(&f.link).filter(|i| inet.is_inet(*i)) {
                        Some(inode) => {
                            inet.save(inode).map_err(|why| refuse(*pid, f, why))?;
                            FdTarget::Inet { inode }
                        }
                        None => classify(*pid, f, fds, &mut unlinked, writer)?,
                    },
                },
            };
            let locks = fdinfo::locks(&f.info).map_err(|e| refuse(*pid, f, e))?;
            let file_id = ids.assign(*pid, f);
            out.push(FdImage { fd: f.fd, file_id, cloexec, flags, pos: f.pos, target, locks });
        }
        per_process.insert(*pid, out);
    }
    Ok(TreeFds { per_process, pipes, fifos, unlinked: unlinked.files, unix: unix.saved, inet: inet.saved, ptys, abort_on_kill: inet.abort_on_kill })
}

/// A pipe is the tree's own when the tree holds both of its ends; otherwise
/// it leads outside. The bytes in it are copied without taking them out.
fn tree_pipes(tables: &[(i32, Vec<proc::FdInfo>)]) -> Result<Vec<PipeImage>> {
    let mut ends: BTreeMap<u64, (Option<(i32, i32)>, bool)> = BTreeMap::new();
    for (pid, fds) in tables {
        for f in fds {
            if let Some(ino) = pipe_inode(&f.link) {
                let e = ends.entry(ino).or_default();
                if writable(f) {
                    e.1 = true;
                } else {
                    e.0.get_or_insert((*pid, f.fd));
                }
            }
        }
    }
    let mut pipes = Vec::new();
    for (&inode, &(reader, has_writer)) in &ends {
        let Some((pid, fd)) = reader.filter(|_| has_writer) else { continue };
        let (capacity, data) = files::peek_pipe(pid, fd)
            .with_context(|| format!("reading the bytes queued in pipe {inode} (fd {fd} of process {pid})"))?;
        pipes.push(PipeImage { inode, capacity, data });
    }
    Ok(pipes)
}

/// FIFOs the tree reads: the bytes queued in them are the tree's, copied
/// like a pipe's (tee works on a FIFO).
fn tree_fifos(tables: &[(i32, Vec<proc::FdInfo>)]) -> Result<Vec<PipeImage>> {
    let mut fifos: Vec<PipeImage> = Vec::new();
    for (pid, fds) in tables {
        for f in fds.iter().filter(|f| f.link.starts_with('/') && readable(f)) {
            let Ok(md) = std::fs::metadata(format!("/proc/{pid}/fd/{}", f.fd)) else { continue };
            if !md.file_type().is_fifo() || fifos.iter().any(|p| p.inode == md.ino()) {
                continue;
            }
            let (capacity, data) = files::peek_pipe(*pid, f.fd)
                .with_context(|| format!("reading the bytes queued in FIFO {} (fd {} of process {pid})", f.link, f.fd))?;
            fifos.push(PipeImage { inode: md.ino(), capacity, data });
        }
    }
    Ok(fifos)
}

/// Numbers the open file descriptions of a tree: fds that kcmp finds to be
/// one description (after dup() or fork()) get one id.
#[derive(Default)]
struct FileIds {
    /// One fd per description so far: (link, pid, fd, id).
    known: Vec<(String, i32, i32, u32)>,
    warned: bool,
}

impl FileIds {
    fn assign(&mut self, pid: i32, f: &proc::FdInfo) -> u32 {
        for (link, kpid, kfd, id) in &self.known {
            if *link != f.link {
                continue;
            }
            match files::same_file(*kpid, *kfd, pid, f.fd) {
                Some(true) => return *id,
                Some(false) => {}
                None if !self.warned => {
                    tracing::warn!("kcmp is unavailable: fds shared between processes are restored as separate opens");
                    self.warned = true;
                }
                None => {}
            }
        }
        let id = self.known.len() as u32;
        self.known.push((f.link.clone(), pid, f.fd, id));
        id
    }
}

/// Which of `cryo restart`'s own stdio fds stands in for an fd that led outside.
fn stdio_for(f: &proc::FdInfo) -> u8 {
    match f.fd {
        0..=2 => f.fd as u8,
        _ if f.flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32 => 0,
        _ => 1,
    }
}

fn classify(pid: i32, f: &proc::FdInfo, table: &[proc::FdInfo], unlinked: &mut unlinked::Saver, writer: &mut ImageWriter) -> Result<FdTarget> {
    let link = &f.link;
    if link.starts_with("pipe:") {
        return Ok(FdTarget::Outside { stdio: stdio_for(f), what: link.clone() });
    }
    if let Some(kind) = link.strip_prefix("anon_inode:") {
        return kernel_object(pid, f, kind, table);
    }
    if link.starts_with("socket:") {
        let family = match cryo_tracer::sockets::domain_and_type(pid, f.fd) {
            Ok((libc::AF_NETLINK, _)) => return netlink(pid, f),
            Ok((domain, _)) => cryo_tracer::sockets::family_name(domain),
            Err(e) => format!("unknown kind ({e})"),
        };
        return Err(refuse(pid, f, format!("a {family} socket, which cryo cannot checkpoint yet")));
    }
    if link.starts_with("/memfd:") || link.ends_with(" (deleted)") {
        let md = fd_metadata(pid, f)?;
        if !md.file_type().is_file() {
            return Err(refuse(pid, f, "a deleted directory or special file cannot be recreated"));
        }
        return unlinked.save(pid, f, &md, writer).map_err(|e| refuse(pid, f, format!("saving its contents: {e:#}")));
    }
    if !link.starts_with('/') {
        return Err(refuse(pid, f, "cryo does not know this kind of file"));
    }
    let md = fd_metadata(pid, f)?;
    let ft = md.file_type();
    if ft.is_file() || ft.is_dir() {
        return Ok(FdTarget::File {
            path: link.clone(),
            dev: md.dev(),
            inode: md.ino(),
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
        });
    }
    if ft.is_char_device() {
        if REOPENABLE_DEVICES.contains(&link.as_str()) {
            return Ok(FdTarget::Device { path: link.clone(), rdev: md.rdev() });
        }
        if link.starts_with("/dev/pts/") || link.starts_with("/dev/tty") || link == "/dev/console" {
            let termios = files::terminal_settings(pid, f.fd).ok();
            return Ok(FdTarget::Terminal { stdio: stdio_for(f), path: link.clone(), termios });
        }
    }
    if ft.is_fifo() {
        return Ok(FdTarget::Fifo { path: link.clone(), inode: md.ino() });
    }
    Err(refuse(pid, f, format!("a {}, which cryo cannot checkpoint yet", kind_name(&ft))))
}

/// A netlink socket comes back empty: what waits in it came from the
/// kernel (a reply, a notification) and cannot be put back.
fn netlink(pid: i32, f: &proc::FdInfo) -> Result<FdTarget> {
    let inode = unix::socket_inode(&f.link).ok_or_else(|| refuse(pid, f, "no socket inode in its link"))?;
    let n = cryo_tracer::netlink::netlink_info(pid, f.fd, inode).map_err(|e| refuse(pid, f, format!("reading the netlink socket: {e}")))?;
    if n.dumping {
        return Err(refuse(pid, f, "a netlink dump is under way in it (more of the kernel's reply is to come); checkpoint again once the program has read it"));
    }
    if n.queued > 0 {
        return Err(refuse(pid, f, format!("{} bytes of netlink messages wait in it, which cannot be put back; checkpoint again once the program has read them", n.queued)));
    }
    Ok(FdTarget::Netlink(n.socket))
}

const PIDFD_LINK: &str = "anon_inode:[pidfd]";

/// A pidfd comes back as one of the same process, which must be of the
/// tree: nothing else has a pid in the namespace a restart makes. A pidfd
/// of a thread other than a main thread cannot (threads come after fds).
fn pidfd(pid: i32, f: &proc::FdInfo, pids: &[i32], zombies: &[i32], view: &super::pids::PidView) -> Result<FdTarget> {
    let target = fdinfo::pidfd_pid(&f.info).ok_or_else(|| refuse(pid, f, "its fdinfo could not be understood"))?;
    if target <= 0 {
        return Err(refuse(pid, f, "a pidfd of a process that has exited and was reaped, which cannot be made again"));
    }
    let leader = proc::status(target).map(|s| s.tgid).map_err(|e| refuse(pid, f, format!("reading process {target}: {e}")))?;
    if !pids.contains(&leader) && !zombies.contains(&leader) {
        return Err(refuse(pid, f, format!("a pidfd of process {target}, which is not part of the checkpointed tree")));
    }
    if leader != target {
        return Err(refuse(pid, f, format!("a pidfd of thread {target} of process {leader}, which cryo cannot make again yet")));
    }
    Ok(FdTarget::Pidfd { pid: view.pid(target).map_err(|e| refuse(pid, f, e))? })
}

/// eventfd, timerfd, signalfd, epoll and inotify, from what fdinfo says.
fn kernel_object(pid: i32, f: &proc::FdInfo, kind: &str, table: &[proc::FdInfo]) -> Result<FdTarget> {
    let unreadable = || refuse(pid, f, "its fdinfo could not be understood");
    match kind {
        "[eventfd]" => fdinfo::eventfd(&f.info).ok_or_else(unreadable),
        "[timerfd]" => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            fdinfo::timerfd(&f.info, now).ok_or_else(unreadable)
        }
        "[signalfd]" => fdinfo::signalfd(&f.info).ok_or_else(unreadable),
        "[eventpoll]" => {
            let mut watches = Vec::new();
            for w in fdinfo::epoll(&f.info) {
                let same = table.iter().any(|t| t.fd == w.watch.fd)
                    && std::fs::metadata(format!("/proc/{pid}/fd/{}", w.watch.fd)).is_ok_and(|m| m.ino() == w.inode);
                if !same {
                    return Err(refuse(pid, f, format!("epoll watches a file through fd {} that is closed or reused since", w.watch.fd)));
                }
                watches.push(w.watch);
            }
            Ok(FdTarget::Epoll { watches })
        }
        "inotify" => {
            let mut watches = Vec::new();
            for w in fdinfo::inotify(&f.info) {
                let path = paths::find_inode(pid, table, w.sdev, w.inode).ok_or_else(|| {
                    refuse(pid, f, format!("inotify watch {} is on inode {} whose path cryo cannot find", w.wd, w.inode))
                })?;
                watches.push(InotifyWatch { wd: w.wd, path, mask: w.mask });
            }
            watches.sort_by_key(|w| w.wd);
            Ok(FdTarget::Inotify { watches })
        }
        other => Err(refuse(pid, f, format!("{other} objects cannot be checkpointed yet"))),
    }
}

fn kind_name(ft: &std::fs::FileType) -> &'static str {
    if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}
