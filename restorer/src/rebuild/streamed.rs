//! A process's own pages file arriving on a stream (`cryo restart -`, the
//! first image of `cryo migrate`) instead of lying in the image's directory:
//! read once from start to end, each run of pages written into the
//! process's memory as it comes, so that the receiver never stores the
//! image's memory. The file's checksum is checked at its end, before
//! anything of the tree runs.

use super::{write_through_mem, PageProgress, Restoree};
use crate::check::{self, RestoreError};
use crate::Result;
use cryo_image::chain::{ResolvedPages, SourceRun};
use cryo_image::{ImageError, PageOrigin};

/// Bytes moved from the stream into a process per write.
const CHUNK: u64 = 1 << 20;

/// Pages files arriving on a stream, one after another.
pub trait PageStream {
    /// Starts the next file of the stream, which must be `name`, `len` bytes long.
    fn open(&self, name: &str, len: u64) -> cryo_image::Result<()>;
    /// The next bytes of that file.
    fn read(&self, buf: &mut [u8]) -> cryo_image::Result<()>;
    /// Its end, all of it read: returns its CRC32 (which the stream checked).
    fn close(&self) -> cryo_image::Result<u32>;
    /// Every pages file was read: the rest of the image's stream is checked.
    fn finish(&self) -> cryo_image::Result<()>;
}

/// Where a restart's own pages come from when they are not in files.
#[derive(Clone, Copy)]
pub struct Streamed<'a> {
    pub stream: &'a dyn PageStream,
}

/// `src` without the image's own pages file (file 0) and its runs: what
/// remains to be read from the parent images' files.
pub fn parents_only(src: &ResolvedPages) -> ResolvedPages {
    ResolvedPages {
        files: src.files.iter().skip(1).cloned().collect(),
        runs: src.runs.iter().filter(|r| r.file != 0).map(|r| SourceRun { file: r.file - 1, ..r.clone() }).collect(),
    }
}

/// Reads the process's own pages file from the stream into its memory,
/// which is mapped (writable) already; checks the vDSO copy it holds.
pub fn read(b: &mut Restoree, s: Streamed<'_>, progress: &PageProgress) -> Result<()> {
    let p = b.p.clone();
    let name = cryo_image::pages_file(p.pid);
    if p.compression.is_some() {
        return Err(RestoreError::Corrupt(format!("{name}: a compressed pages file cannot be restored from a stream")));
    }
    let ps = cryo_tracer::arch::page_size();
    s.stream.open(&name, p.pages_bytes)?;
    let mut runs: Vec<_> = p.pages.iter().filter(|r| r.origin.in_pages_file()).collect();
    runs.sort_by_key(|r| r.file_offset);
    let vdso = check::vdso_copy(&p).map(|(run, _)| run.vaddr);
    let mut vdso_copy = None;
    let mut at = 0u64;
    let mut buf = vec![0u8; CHUNK as usize];
    for r in runs {
        let len = r.npages * ps;
        if r.file_offset < at || r.file_offset.checked_add(len).is_none_or(|end| end > p.pages_bytes) {
            return Err(RestoreError::Corrupt(format!("{name}: page runs overlap or run past the file")));
        }
        skip(s.stream, r.file_offset - at, &mut buf)?;
        if r.origin == PageOrigin::Reference {
            let mut copy = vec![0u8; len as usize];
            s.stream.read(&mut copy)?;
            if vdso == Some(r.vaddr) {
                vdso_copy = Some(copy);
            }
        } else {
            write_through_mem(b, r.vaddr, len, &mut buf, progress, |chunk, _| Ok(s.stream.read(chunk)?))?;
        }
        at = r.file_offset + len;
    }
    skip(s.stream, p.pages_bytes - at, &mut buf)?;
    // The stream checked its own record of the file; the image's checksum
    // (unknown when the pages were sent from the process) must agree.
    let crc = s.stream.close()?;
    if p.pages_crc.is_some_and(|want| want != crc) {
        return Err(ImageError::Checksum { path: format!("{name} (from the stream)") }.into());
    }
    match vdso_copy {
        Some(copy) => super::settle_vdso(b, &copy),
        None => Ok(()),
    }
}

/// Bytes of the file no run reads.
fn skip(stream: &dyn PageStream, mut n: u64, buf: &mut [u8]) -> Result<()> {
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        stream.read(&mut buf[..k])?;
        n -= k as u64;
    }
    Ok(())
}
