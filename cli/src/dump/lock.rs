//! One checkpoint of a process at a time. ptrace alone would only refuse a
//! second checkpoint while the first holds the tree stopped; a low-freeze
//! checkpoint lets the tree go long before its image is complete, so each
//! checkpoint also holds a lock per process of its tree until it ends.
//!
//! The locks are flock(2)s on files in a directory of the user's own
//! (`$XDG_RUNTIME_DIR/cryo`, else `/tmp/cryo-UID`), named by pid and start
//! time (a reused pid is another process); each file holds the pid of the
//! `cryo` that holds it, for the refusal to name.

use anyhow::{Context, Result};
use cryo_tracer::{proc, TracerError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// Held until dropped.
pub struct TreeLock {
    _files: Vec<File>,
}

fn lock_dir() -> Result<PathBuf> {
    let me = nix::unistd::geteuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("cryo"),
        _ => std::env::temp_dir().join(format!("cryo-{me}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating the lock directory {}", dir.display())),
    }
    let md = std::fs::symlink_metadata(&dir).with_context(|| format!("{}", dir.display()))?;
    if !md.is_dir() || md.uid() != me {
        anyhow::bail!("{} is not a directory of yours; remove it, or set XDG_RUNTIME_DIR", dir.display());
    }
    Ok(dir)
}

/// The `cryo` a user started for this checkpoint: the worker's parent when
/// the work runs in a worker (see guard.rs).
fn holder_pid() -> i32 {
    let me = std::process::id() as i32;
    let parent = nix::unistd::getppid().as_raw();
    match proc::status(parent) {
        Ok(p) if p.name == "cryo" => parent,
        _ => me,
    }
}

/// Lock every process of the tree, or fail naming the cryo that holds one.
pub fn lock_tree(pids: &[i32]) -> Result<TreeLock> {
    let dir = lock_dir()?;
    let mut held = Vec::new();
    for &pid in pids {
        let start = proc::stat(pid)?.start_time;
        let path = dir.join(format!("{pid}-{start}.lock"));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening the lock {}", path.display()))?;
        // SAFETY: flock on an fd we own; no memory arguments.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            let by = text.trim().parse().unwrap_or(0);
            return Err(TracerError::Busy { pid, by }.into());
        }
        // Written only under the lock; the file stays (removing it would race
        // with another cryo that has it open), and is tiny.
        f.set_len(0).and_then(|()| f.rewind()).and_then(|()| writeln!(f, "{}", holder_pid())).ok();
        held.push(f);
    }
    Ok(TreeLock { _files: held })
}
