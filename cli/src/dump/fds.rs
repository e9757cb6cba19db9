//! The fd table, classified before anything is injected, so an fd cryo cannot
//! restore fails the checkpoint up front with its number and kind.

use anyhow::{bail, Context, Result};
use cryo_image::{FdImage, FdTarget, PipeImage};
use cryo_tracer::{files, proc};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Character devices any process can open again by path.
const REOPENABLE_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// The fd tables of a frozen tree, and its pipes with the bytes in them.
pub struct TreeFds {
    pub per_process: HashMap<i32, Vec<FdImage>>,
    pub pipes: Vec<PipeImage>,
}

fn pipe_inode(link: &str) -> Option<u64> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

fn writable(f: &proc::FdInfo) -> bool {
    f.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
}

pub fn collect(pids: &[i32]) -> Result<TreeFds> {
    let mut tables = Vec::new();
    for &pid in pids {
        // cryo's own write tracking (see tracking.rs) is not the program's.
        let fds: Vec<_> = proc::fds(pid)?.into_iter().filter(|f| !super::tracking::is_tracking_fd(pid, f.fd, &f.link)).collect();
        tables.push((pid, fds));
    }
    // A pipe is the tree's own when the tree holds both of its ends; otherwise
    // it leads outside.
    let mut ends: BTreeMap<u64, (Option<(i32, i32)>, bool)> = BTreeMap::new();
    for (pid, fds) in &tables {
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
    let mut ids = FileIds::default();
    let mut per_process = HashMap::new();
    for (pid, fds) in &tables {
        let mut out = Vec::new();
        for f in fds {
            let cloexec = f.flags & libc::O_CLOEXEC as u32 != 0;
            let flags = f.flags & !(libc::O_CLOEXEC as u32);
            let target = match pipe_inode(&f.link) {
                Some(inode) if pipes.iter().any(|p| p.inode == inode) => FdTarget::Pipe { inode, write: writable(f) },
                _ => classify(*pid, f)?,
            };
            let file_id = ids.assign(*pid, f);
            out.push(FdImage { fd: f.fd, file_id, cloexec, flags, pos: f.pos, target });
        }
        per_process.insert(*pid, out);
    }
    Ok(TreeFds { per_process, pipes })
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

fn classify(pid: i32, f: &proc::FdInfo) -> Result<FdTarget> {
    let link = &f.link;
    if link.starts_with("pipe:") {
        return Ok(FdTarget::Outside { stdio: stdio_for(f), what: link.clone() });
    }
    if link.starts_with("socket:") || link.starts_with("anon_inode:") {
        bail!("fd {} of process {pid} is a {link}, which cryo cannot checkpoint yet; close it or checkpoint another process", f.fd);
    }
    if link.ends_with(" (deleted)") {
        bail!("fd {} of process {pid} is {link}: files deleted while open cannot be checkpointed yet", f.fd);
    }
    if !link.starts_with('/') {
        bail!("fd {} of process {pid} is {link}, which cryo cannot checkpoint yet", f.fd);
    }
    // Follow the fd itself, not the path, so a file replaced meanwhile is noticed.
    let md = std::fs::metadata(format!("/proc/{pid}/fd/{}", f.fd))
        .map_err(|e| anyhow::anyhow!("fd {} of process {pid} ({link}): {e}", f.fd))?;
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
            return Ok(FdTarget::Outside { stdio: stdio_for(f), what: format!("terminal {link}") });
        }
    }
    if ft.is_fifo() {
        return Ok(FdTarget::Outside { stdio: stdio_for(f), what: format!("fifo {link}") });
    }
    bail!("fd {} of process {pid} is {link} (a {}), which cryo cannot checkpoint yet", f.fd, kind_name(&ft))
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
