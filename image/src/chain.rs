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
    resolve_in(img, p, &mut Vec::new())
}

/// `path`: the (image, pid) pairs being resolved above this one, to catch a
/// chain of parent images, or of parent processes, that loops.
fn resolve_in(img: &ImageReader, p: &ProcessImage, path: &mut Vec<(PathBuf, i32)>) -> Result<ResolvedPages> {
    let ps = img.inventory.page_size;
    let here = std::fs::canonicalize(img.dir()).unwrap_or_else(|_| img.dir().to_path_buf());
    if path.contains(&(here.clone(), p.pid)) || path.len() > MAX_DEPTH {
        return Err(invalid(img.dir(), format!("the pages of process {} lead back to themselves (a loop of parent images or processes)", p.pid)));
    }
    let mut out = ResolvedPages { files: vec![PagesFile::of(img.pages_path(p.pid), p)], runs: Vec::new() };
    // Address ranges to find in the parent image, and in the parent process.
    let (mut older, mut forked) = (Vec::new(), Vec::new());
    for r in &p.pages {
        let range = (r.vaddr, r.vaddr + r.npages * ps);
        match r.origin {
            PageOrigin::Here => out.runs.push(SourceRun { vaddr: r.vaddr, npages: r.npages, file: 0, file_offset: r.file_offset }),
            PageOrigin::Parent => older.push(range),
            PageOrigin::Inherited => forked.push(range),
            PageOrigin::Reference => {}
        }
    }
    path.push((here, p.pid));
    if !older.is_empty() {
        let Some(dir) = parent_dir(img) else {
            return Err(invalid(img.dir(), "has pages in a parent image but names none".into()));
        };
        let up = ImageReader::open(&dir).map_err(|e| match e {
            ImageError::Io { source, .. } => ImageError::Io { path: format!("{} (parent image of {})", dir.display(), img.dir().display()), source },
            e => e,
        })?;
        if up.inventory.page_size != ps {
            return Err(invalid(&dir, format!("page size {} differs from its child's {ps}", up.inventory.page_size)));
        }
        if !up.inventory.processes.iter().any(|e| e.pid == p.pid) {
            return Err(invalid(&dir, format!("has no process {}, which its child image {} needs", p.pid, img.dir().display())));
        }
        let q = up.read_process(p.pid)?;
        out.take(resolve_in(&up, &q, path)?, &older, ps);
    }
    if !forked.is_empty() {
        if !img.inventory.processes.iter().any(|e| e.pid == p.ppid && e.state == crate::ProcessState::Live) {
            return Err(invalid(img.dir(), format!("process {} has pages of its parent {}, which the image does not hold", p.pid, p.ppid)));
        }
        let q = img.read_process(p.ppid)?;
        out.take(resolve_in(img, &q, path)?, &forked, ps);
    }
    path.pop();
    out.runs.sort_by_key(|r| r.vaddr);
    Ok(out)
}

impl ResolvedPages {
    /// Add the runs of `from` that lie in `wanted` (sorted ranges); pages
    /// `from` does not have were never touched, or all zero: they stay zero.
    fn take(&mut self, from: ResolvedPages, wanted: &[(u64, u64)], ps: u64) {
        let files: Vec<usize> = from
            .files
            .into_iter()
            .map(|f| match self.files.iter().position(|g| g.path == f.path) {
                Some(i) => i,
                None => {
                    self.files.push(f);
                    self.files.len() - 1
                }
            })
            .collect();
        for &(start, end) in wanted {
            let first = from.runs.partition_point(|r| r.vaddr + r.npages * ps <= start);
            for r in from.runs[first..].iter().take_while(|r| r.vaddr < end) {
                let (a, b) = (start.max(r.vaddr), end.min(r.vaddr + r.npages * ps));
                if a < b {
                    self.runs.push(SourceRun { vaddr: a, npages: (b - a) / ps, file: files[r.file], file_offset: r.file_offset + (a - r.vaddr) });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> PagesFile {
        PagesFile { path: PathBuf::from(name), compression: None, len: 0, crc: None }
    }

    #[test]
    fn take_keeps_the_wanted_parts_and_shares_files() {
        let ps = 0x1000;
        let mut out = ResolvedPages { files: vec![file("a"), file("b")], runs: Vec::new() };
        let from = ResolvedPages {
            files: vec![file("b"), file("c")],
            runs: vec![
                SourceRun { vaddr: 0x10000, npages: 4, file: 0, file_offset: 0 },
                SourceRun { vaddr: 0x30000, npages: 1, file: 1, file_offset: 0x4000 },
            ],
        };
        out.take(from, &[(0x11000, 0x21000), (0x2f000, 0x31000)], ps);
        assert_eq!(
            out.runs,
            vec![
                SourceRun { vaddr: 0x11000, npages: 3, file: 1, file_offset: 0x1000 },
                SourceRun { vaddr: 0x30000, npages: 1, file: 2, file_offset: 0x4000 },
            ]
        );
        assert_eq!(out.files.iter().map(|f| f.path.to_str().unwrap()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }
}
