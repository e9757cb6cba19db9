//! What the processes of a restored tree share, and where each shared object
//! can be fetched from once its first holder has created it.
//!
//! The first process (in tree order) that holds an open file description, a
//! pipe end or a shared memory object creates it; every later holder takes a
//! reference to the very same object from that process with pidfd_getfd,
//! which is how one offset, one pipe and one page cache end up shared again.

use cryo_image::{ProcessImage, Vma, VmaKind};
use std::collections::{HashMap, HashSet};

/// A process of the restored tree (by its pid as seen inside the restore
/// namespace) and an fd number in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub pid: i32,
    pub fd: i32,
}

/// Old pid -> pid as seen by the restored processes (the same pid inside a
/// pid namespace; a new one without).
#[derive(Default)]
pub struct PidMap {
    inside: HashMap<i32, i32>,
}

impl PidMap {
    pub fn insert(&mut self, old: i32, inside: i32) {
        self.inside.insert(old, inside);
    }

    pub fn inside(&self, old: i32) -> Option<i32> {
        self.inside.get(&old).copied()
    }
}

pub fn shmem_key(v: &Vma) -> (u64, u64) {
    (v.dev, v.inode)
}

#[derive(Default)]
pub struct Registry {
    pub pids: PidMap,
    /// Open file descriptions by `FdImage::file_id`.
    pub files: HashMap<u32, Source>,
    /// Pipe ends created but not yet installed by their holder: (inode, write end).
    pub pipe_ends: HashMap<(u64, bool), Source>,
    /// Shared memory objects: where their memfd is, and how big it must be.
    pub shmem: HashMap<(u64, u64), Source>,
    pub shmem_size: HashMap<(u64, u64), u64>,
    /// Files without a path (deleted, memfd) recreated so far, by (dev, inode).
    pub objects: HashMap<(u64, u64), Source>,
    /// FIFOs (by inode) some process keeps open until every holder has opened them.
    pub fifos: HashSet<u64>,
    /// Sockets created so far, by inode, above the image's fds of their creator.
    pub sockets: HashMap<u64, Source>,
    /// Pseudo-terminals made so far, by old number: (master, slave).
    pub ptys: HashMap<u32, (Source, Source)>,
    /// Every TCP/UDP socket of the tree is made (by the first process rebuilt).
    pub inet_made: bool,
}

impl Registry {
    pub fn new<'a>(processes: impl Iterator<Item = &'a ProcessImage>) -> Registry {
        let mut r = Registry::default();
        for p in processes {
            for v in p.vmas.iter().filter(|v| v.kind == VmaKind::Shmem && v.shared) {
                let size = r.shmem_size.entry(shmem_key(v)).or_default();
                *size = (*size).max(v.offset + v.len());
            }
        }
        r
    }
}
