//! Pages that stay on the host the image came from (post-copy migration,
//! `cryo migrate --postcopy`): no pages file exists here. What the tree
//! needs before it runs is fetched and written into place now; the rest is
//! fetched by the lazy restart as the tree touches it or in the background.

use super::{write_through_mem, PageProgress, Restoree};
use crate::check::{self, RestoreError};
use crate::Result;
use cryo_image::chain::ResolvedPages;
use std::path::Path;

/// Bytes fetched and written into a process per piece before it runs.
const CHUNK: u64 = 1 << 20;

/// Where the pages of a post-copy migration are.
pub trait PagesOnDemand {
    /// Fills `buf` with the bytes at `offset` of the pages file that would
    /// be at `path` (its name says whose it is).
    fn read(&self, path: &Path, offset: u64, buf: &mut [u8]) -> cryo_image::Result<()>;
    /// The tree runs (with `root`'s host pid); its memory is still coming.
    fn released(&self, root: i32);
    /// Every page the tree needs is in place: the sender may let go.
    fn complete(&self) -> cryo_image::Result<()>;
}

/// The image's own pages, fetched from where the image came from.
#[derive(Clone, Copy)]
pub struct OnDemand<'a> {
    pub pages: &'a dyn PagesOnDemand,
}

/// Writes `eager`'s runs (all in the image's own file, index 0) into the
/// process, which is mapped (writable) already, and checks the vDSO copy.
pub fn read(b: &mut Restoree, d: OnDemand<'_>, eager: &ResolvedPages, progress: &PageProgress) -> Result<()> {
    let [file] = eager.files.as_slice() else {
        return Err(RestoreError::Rebuild("a post-copy migration sends a full image, not an incremental one".into()));
    };
    let ps = cryo_tracer::arch::page_size();
    let mut buf = vec![0u8; CHUNK as usize];
    for r in &eager.runs {
        write_through_mem(b, r.vaddr, r.npages * ps, &mut buf, progress, |chunk, at| Ok(d.pages.read(&file.path, r.file_offset + at, chunk)?))?;
    }
    let p = b.p.clone();
    match check::vdso_copy(&p) {
        Some((run, theirs)) => {
            let mut copy = vec![0u8; theirs.len() as usize];
            d.pages.read(&file.path, run.file_offset, &mut copy)?;
            super::settle_vdso(b, &copy)
        }
        None => Ok(()),
    }
}
