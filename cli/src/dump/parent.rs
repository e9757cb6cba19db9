//! What an incremental checkpoint takes from its parent image: the write
//! tracking each process left there, the pages it holds for each, and each
//! process's memory map with its flags. Where a process's areas are still
//! those of the parent image, the flags need not be read again from
//! /proc/PID/smaps, which walks every page table (about 20 ms per GiB) —
//! the largest cost of a small incremental checkpoint otherwise.

use anyhow::{Context, Result};
use cryo_image::{ranges, ImageReader, PageOrigin, PageRun, ProcessState, Tracking, Vma};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct Parent {
    dir: PathBuf,
    root: i32,
    /// By pid as the tree sees it.
    processes: HashMap<i32, Left>,
}

/// What one process left in the parent image.
struct Left {
    tracking: Option<Tracking>,
    held: Vec<(u64, u64)>,
    vmas: Vec<Vma>,
}

/// The write tracking a process left in the parent image, and the pages
/// the image holds for it.
#[derive(Clone)]
pub struct ParentTracking {
    pub tracking: Tracking,
    /// Sorted address ranges of the pages that the image holds for the
    /// process, in its own pages file or up its chain. Pages outside them
    /// were absent or all zero when it was taken.
    pub held: Vec<(u64, u64)>,
}

impl Parent {
    /// Read before the tree is frozen: metadata only (a pre-copy removes the
    /// pages of the rounds it sent).
    pub fn read(dir: &Path) -> Result<Parent> {
        let img = ImageReader::open(dir).with_context(|| format!("opening the parent image {}", dir.display()))?;
        let mut processes = HashMap::new();
        for e in img.inventory.processes.iter().filter(|e| e.state == ProcessState::Live) {
            let p = img.read_process_meta(e.pid)?;
            let mut vmas = p.vmas;
            if let Some(t) = &p.tracking {
                mark_tracked(&mut vmas, &t.ranges);
            }
            let held = held(&p.pages, img.inventory.page_size);
            processes.insert(e.pid, Left { tracking: p.tracking, held, vmas });
        }
        Ok(Parent { dir: dir.to_path_buf(), root: img.inventory.root_pid, processes })
    }

    /// The write tracking each process left, by pid as the tree sees it. The
    /// parent must be an image of the same tree (`root`).
    pub fn tracking(&self, root: i32) -> Result<HashMap<i32, ParentTracking>> {
        if self.root != root {
            anyhow::bail!(
                "{} is an image of process {}, not of this tree (root {root}); name an image of the same tree as --parent",
                self.dir.display(),
                self.root
            );
        }
        let out: HashMap<i32, ParentTracking> = self
            .processes
            .iter()
            .filter_map(|(pid, l)| Some((*pid, ParentTracking { tracking: l.tracking.clone()?, held: l.held.clone() })))
            .collect();
        if out.is_empty() {
            tracing::warn!(
                "{} was taken without write tracking; this checkpoint is a full one (take the parent with --track)",
                self.dir.display()
            );
        }
        Ok(out)
    }

    /// The memory map process `pid` (as the tree sees it) had in the parent
    /// image, with the areas its tracking registered marked as such.
    pub fn vmas(&self, pid: i32) -> Option<&[Vma]> {
        self.processes.get(&pid).map(|l| l.vmas.as_slice())
    }
}

/// The pages that `runs` give bytes for: stored in the image, up its chain,
/// or in the parent process's pages (a Reference page is only a copy of
/// its file's).
fn held(runs: &[PageRun], ps: u64) -> Vec<(u64, u64)> {
    let held = runs.iter().filter(|r| r.origin != PageOrigin::Reference).map(|r| (r.vaddr, r.vaddr + r.npages * ps)).collect();
    ranges::normalized(held, ps)
}

/// The flags were read before the parent's checkpoint registered its
/// tracking: the areas it registered carry "uw" (userfaultfd write-protect)
/// since. Whether they still do is checked when they are scanned.
fn mark_tracked(vmas: &mut [Vma], ranges: &[(u64, u64)]) {
    for v in vmas.iter_mut() {
        if ranges.iter().any(|r| r.0 <= v.start && v.end <= r.1) && !v.has_flag("uw") {
            v.vmflags.push("uw".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_image::VmaKind;

    #[test]
    fn areas_the_parent_tracked_are_marked() {
        let vma = |start, end| Vma {
            start,
            end,
            prot: 3,
            shared: false,
            kind: VmaKind::Anon,
            offset: 0,
            dev: 0,
            inode: 0,
            name: String::new(),
            vmflags: vec!["rd".into(), "wr".into()],
        };
        let mut vmas = vec![vma(0x1000, 0x3000), vma(0x3000, 0x8000), vma(0x9000, 0xa000)];
        vmas[2].vmflags.push("uw".into());
        mark_tracked(&mut vmas, &[(0x1000, 0x3000), (0x9000, 0xa000)]);
        assert!(vmas[0].has_flag("uw"));
        assert!(!vmas[1].has_flag("uw"), "not registered by the parent");
        assert_eq!(vmas[2].vmflags.iter().filter(|f| *f == "uw").count(), 1, "marked once");
    }
}
