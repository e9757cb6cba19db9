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
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// Held until dropped.
pub struct TreeLock {
    dir: PathBuf,
    held: Vec<(i32, File)>,
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

impl TreeLock {
    /// Lock the processes a tree had just before it is frozen (those gone
    /// since are skipped), so that the stop does not include the locking:
    /// writing a file can wait for the file system's journal.
    pub fn before_freeze(pids: impl IntoIterator<Item = i32>) -> Result<TreeLock> {
        let mut lock = TreeLock { dir: lock_dir()?, held: Vec::new() };
        for pid in pids {
            match proc::stat(pid) {
                Ok(st) => lock.add(pid, st.start_time)?,
                Err(_) => continue,
            }
        }
        Ok(lock)
    }

    /// Lock every process of the frozen tree not locked yet, or fail naming
    /// the cryo that holds one.
    pub fn extend(&mut self, pids: &[i32]) -> Result<()> {
        for &pid in pids {
            if !self.held.iter().any(|(p, _)| *p == pid) {
                self.add(pid, proc::stat(pid)?.start_time)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, pid: i32, start: u64) -> Result<()> {
        let path = self.dir.join(format!("{pid}-{start}.lock"));
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
        // Written only under the lock, always as many bytes (no truncation,
        // which waits for the journal); the file stays (removing it would race
        // with another cryo that has it open), and is tiny.
        let _ = f.write_all_at(format!("{:>11}\n", holder_pid()).as_bytes(), 0);
        self.held.push((pid, f));
        Ok(())
    }
}
