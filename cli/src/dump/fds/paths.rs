//! Finding a path for an inode that fdinfo names only by number (inotify
//! watches): without CAP_DAC_READ_SEARCH, open_by_handle_at is out of reach,
//! so cryo looks where a program's watches usually are: its working
//! directory, the directories of its open files, and below them.

use cryo_tracer::proc;
use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Directories looked at in all, and how deep below each starting point.
const MAX_VISITED: usize = 20_000;
const MAX_DEPTH: usize = 3;

pub fn find_inode(pid: i32, table: &[proc::FdInfo], sdev: u64, inode: u64) -> Option<String> {
    let (major, minor) = ((sdev >> 20) as u32, (sdev & 0xf_ffff) as u32);
    let matches = |md: &std::fs::Metadata| md.ino() == inode && libc::major(md.dev()) == major && libc::minor(md.dev()) == minor;
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        starts.push(cwd);
    }
    for f in table.iter().filter(|f| f.link.starts_with('/')) {
        if let Some(dir) = PathBuf::from(&f.link).parent() {
            starts.push(dir.to_path_buf());
        }
    }
    starts.push(PathBuf::from("/tmp"));
    starts.dedup();
    let mut queue: VecDeque<(PathBuf, usize)> = starts.into_iter().map(|p| (p, 0)).collect();
    let mut visited = 0;
    while let Some((dir, depth)) = queue.pop_front() {
        visited += 1;
        if visited > MAX_VISITED {
            break;
        }
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| matches(&m)) {
            return Some(dir.to_string_lossy().into_owned());
        }
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if matches(&md) {
                return Some(e.path().to_string_lossy().into_owned());
            }
            if md.is_dir() && depth < MAX_DEPTH {
                queue.push_back((e.path(), depth + 1));
            }
        }
    }
    None
}
