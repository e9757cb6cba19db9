//! Freezing a whole process tree: the root, every descendant, every thread.
//!
//! A process can only fork while it runs, so once a process is stopped, its
//! children list (read from each of its threads) is final. Walking the tree
//! breadth-first and reading a process's children only after it is frozen
//! therefore catches children forked during the seize.

use crate::seize::Seized;
use crate::{proc, Result, TracerError};
use std::time::{Duration, Instant};

/// A child that exited and waits for its parent's wait().
#[derive(Debug, Clone)]
pub struct Zombie {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// What the parent's wait() will report.
    pub status: i32,
}

pub struct Tree {
    /// Live processes, each after its parent; the root first.
    pub procs: Vec<Seized>,
    pub zombies: Vec<Zombie>,
}

enum Found {
    Live(Box<Seized>),
    Zombie(Zombie),
    Gone,
}

fn zombie(pid: i32) -> Option<Zombie> {
    let st = proc::stat(pid).ok()?;
    (st.state == 'Z').then(|| Zombie {
        pid,
        ppid: st.ppid,
        pgid: st.pgid,
        sid: st.sid,
        comm: proc::status(pid).map(|s| s.name).unwrap_or_default(),
        status: st.exit_code,
    })
}

/// How long a child that looks non-dumpable may take to show it was only
/// exiting (its /proc entry is root's once its memory is gone).
const EXITING_GRACE: Duration = Duration::from_millis(500);

fn freeze_child(pid: i32) -> Result<Found> {
    let deadline = Instant::now() + EXITING_GRACE;
    loop {
        if let Some(z) = zombie(pid) {
            return Ok(Found::Zombie(z));
        }
        match Seized::freeze(pid) {
            Ok(s) => return Ok(Found::Live(Box::new(s))),
            // It exited meanwhile: its parent is frozen, so it is a zombie now
            // unless the parent ignores SIGCHLD and the kernel reaped it.
            Err(TracerError::Zombie { .. } | TracerError::Exited { .. } | TracerError::NoSuchProcess(_)) => {
                return Ok(zombie(pid).map_or(Found::Gone, Found::Zombie))
            }
            Err(TracerError::NotDumpable { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e),
        }
    }
}

impl Tree {
    pub fn freeze(root: i32) -> Result<Tree> {
        let mut tree = Tree { procs: vec![Seized::freeze(root)?], zombies: Vec::new() };
        let mut next = 0;
        while next < tree.procs.len() {
            let parent = tree.procs[next].pid;
            next += 1;
            for child in proc::children(parent)? {
                if tree.procs.iter().any(|p| p.pid == child) || tree.zombies.iter().any(|z| z.pid == child) {
                    continue;
                }
                match freeze_child(child)? {
                    Found::Live(s) => tree.procs.push(*s),
                    Found::Zombie(z) => tree.zombies.push(z),
                    Found::Gone => {}
                }
            }
        }
        Ok(tree)
    }

    /// No processes: what is left after the tree was let go.
    pub fn empty() -> Tree {
        Tree { procs: Vec::new(), zombies: Vec::new() }
    }

    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Let every process run on as it was.
    pub fn release(self) -> Result<()> {
        self.for_each(Seized::release)
    }

    /// Kill every process while all are still frozen. Returns their
    /// threads, to reap ([`crate::ptrace::reap_exited`]).
    pub fn kill(self) -> Result<Vec<i32>> {
        let mut threads = Vec::new();
        let mut first_err = None;
        for p in self.procs {
            match p.kill() {
                Ok(t) => threads.extend(t),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(threads), Err)
    }

    /// Apply `f` to every process even when one fails; the first error wins.
    fn for_each(self, f: impl Fn(Seized) -> Result<()>) -> Result<()> {
        let mut first_err = None;
        for p in self.procs {
            if let Err(e) = f(p) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
