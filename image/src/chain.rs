//! Incremental images: a page marked [`PageOrigin::Parent`] is unchanged
//! since the parent image, which may itself be incremental. Resolving the
//! chain says, for every page a restart must read, which image's pages file
//! holds it and where.
//!
//! Every image of the chain must exist, be complete and be the user's own
//! ([`ImageReader::open`] checks that), and hold the same process.

use crate::dir::ImageReader;
use crate::codec::Compression;
use crate::model::{PageOrigin, ProcessImage};
use crate::{ImageError, Result};
use std::path::{Path, PathBuf};

/// Longest chain followed; a longer one is taken for a loop.
const MAX_DEPTH: usize = 4096;

/// Pages of one process to read, wherever they live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRun {
    pub vaddr: u64,
    pub npages: u64,
    /// Index into [`ResolvedPages::files`].
    pub file: usize,
    pub file_offset: u64,
}

/// A pages file of the chain, and how to read it.
#[derive(Debug, Clone)]
pub struct PagesFile {
    pub path: PathBuf,
    pub compression: Option<Compression>,
    /// Its size and CRC32, as its process image records them.
    pub len: u64,
    pub crc: Option<u32>,
}

impl PagesFile {
    pub fn of(path: PathBuf, p: &ProcessImage) -> PagesFile {
        PagesFile { path, compression: p.compression.clone(), len: p.pages_bytes, crc: p.pages_crc }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ResolvedPages {
    /// The pages files the runs read from: this image's first, then its ancestors'.
    pub files: Vec<PagesFile>,
    /// Sorted by address.
    pub runs: Vec<SourceRun>,
}

impl ResolvedPages {
    pub fn bytes(&self, page_size: u64) -> u64 {
        self.runs.iter().map(|r| r.npages * page_size).sum()
    }
}

/// The directory of the image `img` names as its parent.
pub fn parent_dir(img: &ImageReader) -> Option<PathBuf> {
    img.inventory.parent.as_ref().map(|rel| img.dir().join(rel))
}

fn invalid(path: &Path, what: String) -> ImageError {
    ImageError::Invalid { path: path.display().to_string(), what }
}

/// Where every stored page of process `p` of image `img` comes from.
pub fn resolve(img: &ImageReader, p: &ProcessImage) -> Result<ResolvedPages> {
    let ps = img.inventory.page_size;
    let mut out = ResolvedPages { files: vec![PagesFile::of(img.pages_path(p.pid), p)], runs: Vec::new() };
    // Address ranges still to find in an older image.
    let mut wanted: Vec<(u64, u64)> = Vec::new();
    for r in &p.pages {
        match r.origin {
            PageOrigin::Here => out.runs.push(SourceRun { vaddr: r.vaddr, npages: r.npages, file: 0, file_offset: r.file_offset }),
            PageOrigin::Parent => wanted.push((r.vaddr, r.vaddr + r.npages * ps)),
            PageOrigin::Reference => {}
        }
    }
    let mut child_dir = img.dir().to_path_buf();
    let mut parent = parent_dir(img);
    let mut seen = vec![std::fs::canonicalize(img.dir()).unwrap_or_else(|_| img.dir().to_path_buf())];
    while !wanted.is_empty() {
        let Some(dir) = parent.take() else {
            return Err(invalid(&child_dir, "has pages in a parent image but names none".into()));
        };
        let canon = std::fs::canonicalize(&dir).map_err(|source| ImageError::Io {
            path: format!("{} (parent image of {})", dir.display(), child_dir.display()),
            source,
        })?;
        if seen.contains(&canon) || seen.len() > MAX_DEPTH {
            return Err(invalid(&dir, "the chain of parent images loops".into()));
        }
        seen.push(canon);
        let up = ImageReader::open(&dir)?;
        if up.inventory.page_size != ps {
            return Err(invalid(&dir, format!("page size {} differs from its child's {ps}", up.inventory.page_size)));
        }
        if !up.inventory.processes.iter().any(|e| e.pid == p.pid) {
            return Err(invalid(&dir, format!("has no process {}, which its child image {} needs", p.pid, child_dir.display())));
        }
        let q = up.read_process(p.pid)?;
        let file = out.files.len();
        out.files.push(PagesFile::of(up.pages_path(p.pid), &q));
        let mut still = Vec::new();
        for (start, end) in wanted {
            take_from(&q, ps, start, end, file, &mut out.runs, &mut still);
        }
        wanted = still;
        parent = parent_dir(&up);
        child_dir = dir;
    }
    out.runs.sort_by_key(|r| r.vaddr);
    Ok(out)
}

/// Resolve [start, end) against `q`'s page index: stored pages become runs
/// from `file`, pages `q` has from its own parent stay wanted, and pages `q`
/// does not have at all were never touched (zero) and are dropped.
fn take_from(q: &ProcessImage, ps: u64, start: u64, end: u64, file: usize, runs: &mut Vec<SourceRun>, still: &mut Vec<(u64, u64)>) {
    let first = q.pages.partition_point(|r| r.vaddr + r.npages * ps <= start);
    for r in q.pages[first..].iter().take_while(|r| r.vaddr < end) {
        let (a, b) = (start.max(r.vaddr), end.min(r.vaddr + r.npages * ps));
        if a >= b {
            continue;
        }
        match r.origin {
            PageOrigin::Here => runs.push(SourceRun { vaddr: a, npages: (b - a) / ps, file, file_offset: r.file_offset + (a - r.vaddr) }),
            PageOrigin::Parent => still.push((a, b)),
            PageOrigin::Reference => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PageRun;

    fn run(vaddr: u64, npages: u64, file_offset: u64, origin: PageOrigin) -> PageRun {
        PageRun { vaddr, npages, file_offset, origin }
    }

    #[test]
    fn take_from_splits_runs_and_keeps_what_is_older() {
        let ps = 0x1000;
        let mut q: ProcessImage = ProcessImage::empty();
        q.pages = vec![run(0x10000, 4, 0, PageOrigin::Here), run(0x20000, 2, 0, PageOrigin::Parent), run(0x30000, 1, 0x4000, PageOrigin::Here)];
        let (mut runs, mut still) = (Vec::new(), Vec::new());
        take_from(&q, ps, 0x11000, 0x21000, 1, &mut runs, &mut still);
        take_from(&q, ps, 0x2f000, 0x31000, 1, &mut runs, &mut still);
        assert_eq!(
            runs,
            vec![
                SourceRun { vaddr: 0x11000, npages: 3, file: 1, file_offset: 0x1000 },
                SourceRun { vaddr: 0x30000, npages: 1, file: 1, file_offset: 0x4000 },
            ]
        );
        assert_eq!(still, vec![(0x20000, 0x21000)]);
    }
}
