//! Checksums of page files. Pages go to disk by splice and come back by
//! preadv straight into the restored process, so neither pass sees them:
//! at a checkpoint a thread looks at each part of the file just after it was
//! written (mapped from the page cache, often still in the CPU's cache),
//! while the next part is written; restart reads the file beside its own work.

use crate::{ImageError, Result};
use crc32fast::Hasher;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const CHUNK: usize = 1 << 20;

/// CRC32 of bytes `from..to` of `f`. A large range is read in parts by
/// a thread per CPU (up to four), whose CRCs are combined: a lazy restart
/// waits for this check before the tree runs. Each part is looked at where
/// it lies in the page cache: copying 1 GiB out with pread took a quarter
/// of the CPU time of a restart beside which this runs.
fn crc_of(f: &File, from: u64, to: u64) -> std::io::Result<u32> {
    let len = to - from;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_PARTS) as u64;
    let parts = if len >= PART_MIN * 2 { cpus.min(len / PART_MIN).max(1) } else { 1 };
    let step = len.div_ceil(parts).div_ceil(CHUNK as u64) * CHUNK as u64;
    let crcs = std::thread::scope(|s| {
        let handles: Vec<_> = (0..parts)
            .map(|i| from + (i * step).min(len)..from + ((i + 1) * step).min(len))
            .map(|r| {
                s.spawn(move || {
                    let mut h = Hasher::new();
                    mapped_update(f, &mut h, r.start, r.end, CHECK_WINDOW)?;
                    Ok((r.start - from, r.end - r.start, h.finalize()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("checksum thread panicked")))).collect::<std::io::Result<Vec<_>>>()
    })?;
    Ok(combine(crcs).expect("the parts cover the file in order"))
}

/// Files from this size on are checked in parts, at most this many.
const PART_MIN: u64 = 64 << 20;
const MAX_PARTS: usize = 4;

/// Add bytes `from..to` of `f` to `h`.
fn update_from(f: &File, h: &mut Hasher, from: u64, to: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        let got = f.read_at(&mut buf[..n], at)?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        h.update(&buf[..got]);
        at += got as u64;
    }
    Ok(())
}

/// Bytes of a file mapped at a time by [`Follower`].
const WINDOW: u64 = 16 << 20;
/// By [`crc_of`], beside a restart: cryo's resident memory counts what it
/// maps, and when memory runs out the out-of-memory killer must find a
/// process being restored larger than cryo, so that cryo lives to say so.
const CHECK_WINDOW: u64 = 2 << 20;

/// Add bytes `from..to` of `f` to `h`, looked at where they lie in the page
/// cache (mapped, not copied out: a copy would cost as much as the write),
/// `window` bytes at a time.
fn mapped_update(f: &File, h: &mut Hasher, mut from: u64, to: u64, window: u64) -> std::io::Result<()> {
    while from < to {
        let end = to.min(from + window);
        mapped_window(f, h, from, end)?;
        from = end;
    }
    Ok(())
}

fn mapped_window(f: &File, h: &mut Hasher, from: u64, to: u64) -> std::io::Result<()> {
    // SAFETY: sysconf has no preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let base = from / ps * ps;
    let len = (to - base) as usize;
    // A 32-bit off_t (glibc on ARMv7) cannot name offsets past 2 GiB.
    if base > libc::off_t::MAX as u64 {
        return update_from(f, h, from, to, &mut vec![0u8; CHUNK]);
    }
    // SAFETY: a new read-only shared mapping of bytes the file has (`to` is
    // within what was written); it is unmapped below and not kept.
    let m = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED | libc::MAP_POPULATE, f.as_raw_fd(), base as libc::off_t) };
    if m == libc::MAP_FAILED {
        return update_from(f, h, from, to, &mut vec![0u8; CHUNK]);
    }
    // SAFETY: `m` maps `len` readable bytes the file has: a file cryo
    // writes and only appends to (its own, in a 0700 directory), or an
    // image whose length was checked against its header. Were another
    // program to truncate it meanwhile, the read would fault (SIGBUS), as in
    // any program reading a mapped file. The slice is dropped before the unmap.
    h.update(unsafe { std::slice::from_raw_parts(m.cast::<u8>().add((from - base) as usize), (to - from) as usize) });
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(m, len) };
    Ok(())
}

/// The CRC32 of a file being appended to, computed behind the writer: told
/// how far the file is written, a thread of its own reads that part back.
pub struct Follower {
    tx: Option<SyncSender<u64>>,
    thread: Option<JoinHandle<std::io::Result<u32>>>,
}

/// Marks of written ends in flight: the writer waits for the reader beyond.
const MARKS: usize = 64;

impl Follower {
    pub fn new(f: Arc<File>) -> Follower {
        let (tx, rx) = sync_channel::<u64>(MARKS);
        let thread = std::thread::spawn(move || {
            let mut h = Hasher::new();
            let mut at = 0;
            for end in rx {
                if end > at {
                    mapped_update(&f, &mut h, at, end, WINDOW)?;
                    at = end;
                }
            }
            Ok(h.finalize())
        });
        Follower { tx: Some(tx), thread: Some(thread) }
    }

    /// The file's first `end` bytes are written (ends only grow).
    pub fn written_to(&self, end: u64) {
        // A reader that failed stopped taking marks; `finish` says why.
        if let Some(tx) = &self.tx {
            let _ = tx.send(end);
        }
    }

    /// The CRC32 of the file's first `len` bytes, all written by now.
    pub fn finish(mut self, len: u64) -> std::io::Result<u32> {
        self.written_to(len);
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(std::io::Error::other("the thread checksumming pages panicked")),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The CRC32 of a file made of pieces written in any order, from each
/// piece's (offset, length, CRC32); None unless they cover the file from 0
/// without gaps or overlaps.
pub fn combine(mut pieces: Vec<Part>) -> Option<u32> {
    pieces.sort_unstable_by_key(|p| p.0);
    let mut all = Hasher::new();
    let mut at = 0;
    for (off, len, crc) in pieces {
        if off != at {
            return None;
        }
        all.combine(&Hasher::new_with_initial_len(crc, len));
        at += len;
    }
    Some(all.finalize())
}

/// Check a page file against the checksum its process image records.
pub fn verify(path: &Path, len: u64, crc: u32) -> Result<()> {
    verify_with(path, len, crc, Vec::new())
}

/// The CRC32 of parts of a file, for [`KnownParts`].
pub use crc32fast::Hasher as Crc;

/// CRCs of parts of files computed by whoever had those bytes in hand (a
/// restart copying pages into place), so that a check reads only the rest.
#[derive(Default)]
pub struct KnownParts(Mutex<HashMap<PathBuf, Vec<Part>>>);

/// A part of a file: its offset, its length and its CRC32.
pub type Part = (u64, u64, u32);

impl KnownParts {
    /// Bytes `offset..offset + len` of `path` have CRC32 `crc`.
    pub fn add(&self, path: &Path, offset: u64, len: u64, crc: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(path.to_path_buf()).or_default().push((offset, len, crc));
    }

    pub fn take(&self, path: &Path) -> Vec<Part> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(path).unwrap_or_default()
    }
}

/// [`verify`], with the CRCs of the `known` parts taken as they are (they
/// may overlap and repeat): only the bytes none covers are read.
pub fn verify_with(path: &Path, len: u64, crc: u32, mut known: Vec<Part>) -> Result<()> {
    let err = |source| ImageError::Io { path: path.display().to_string(), source };
    let f = File::open(path).map_err(err)?;
    known.retain(|&(off, n, _)| n > 0 && off + n <= len);
    known.sort_unstable_by_key(|&(off, n, _)| (off, std::cmp::Reverse(n)));
    let mut parts = Vec::new();
    let mut at = 0;
    let gap = |from: u64, to: u64| crc_of(&f, from, to).map(|c| (from, to - from, c));
    for (off, n, c) in known {
        // A part that begins before `at` overlaps one taken: what it has
        // beyond is read as a gap.
        if off < at {
            continue;
        }
        if off > at {
            parts.push(gap(at, off).map_err(err)?);
        }
        parts.push((off, n, c));
        at = off + n;
    }
    if at < len {
        parts.push(gap(at, len).map_err(err)?);
    }
    if combine(parts) != Some(crc) {
        return Err(ImageError::Checksum { path: path.display().to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    #[test]
    fn follower_and_combine_give_the_crc() {
        let mut f = scratch_file();
        let data: Vec<u8> = (0..(5u32 << 20) / 4).flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes()).collect();
        let f2 = Arc::new(f.try_clone().unwrap());
        let follower = Follower::new(f2);
        for part in data.chunks(777_777) {
            f.write_all(part).unwrap();
            follower.written_to(f.stream_position().unwrap());
        }
        let len = data.len() as u64;
        assert_eq!(follower.finish(len).unwrap(), crc32fast::hash(&data));
        assert_eq!(crc_of(&f, 0, len - 5).unwrap(), crc32fast::hash(&data[..data.len() - 5]));
    }

    #[test]
    fn a_large_file_is_checked_in_parts() {
        let mut f = scratch_file();
        // Over two parts' worth, and not a whole number of chunks.
        let data: Vec<u8> = (0..((2 * PART_MIN + 12_345) / 4)).flat_map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()).collect();
        f.write_all(&data).unwrap();
        let len = data.len() as u64;
        assert_eq!(crc_of(&f, 0, len).unwrap(), crc32fast::hash(&data));
        assert_eq!(crc_of(&f, 0, len - 3).unwrap(), crc32fast::hash(&data[..data.len() - 3]));
        assert_eq!(crc_of(&f, 0, 0).unwrap(), crc32fast::hash(&[]));
        let (a, b) = data.split_at(1000);
        let pieces = vec![(1000, b.len() as u64, crc32fast::hash(b)), (0, 1000, crc32fast::hash(a))];
        assert_eq!(combine(pieces.clone()), Some(crc32fast::hash(&data)));
        assert_eq!(combine(pieces[..1].to_vec()), None);
    }

    /// Parts known, overlapping, repeated and out of order, plus gaps read
    /// from the file, give the file's CRC; a wrong part or byte does not.
    #[test]
    fn known_parts_and_gaps_give_the_crc() {
        let path = std::env::temp_dir().join(format!("cryo-digest-known-{}", std::process::id()));
        let data: Vec<u8> = (0..(3u32 << 20) / 4).flat_map(|i| i.wrapping_mul(2246822519).to_le_bytes()).collect();
        std::fs::write(&path, &data).unwrap();
        let len = data.len() as u64;
        let crc = crc32fast::hash(&data);
        let part = |from: u64, n: u64| (from, n, crc32fast::hash(&data[from as usize..(from + n) as usize]));
        let known = vec![part(1 << 20, 4096), part(0, 8192), part(4096, 65536), part(1 << 20, 4096), part(2 << 20, 1 << 20)];
        assert!(verify_with(&path, len, crc, known.clone()).is_ok());
        assert!(verify_with(&path, len, crc, Vec::new()).is_ok());
        assert_eq!(crc_of(&std::fs::File::open(&path).unwrap(), 4096, 12288).unwrap(), crc32fast::hash(&data[4096..12288]));
        let mut wrong = known.clone();
        wrong[1].2 ^= 1;
        assert!(matches!(verify_with(&path, len, crc, wrong), Err(ImageError::Checksum { .. })));
        let mut changed = data.clone();
        changed[(1 << 20) + 8192] ^= 1;
        std::fs::write(&path, &changed).unwrap();
        assert!(matches!(verify_with(&path, len, crc, known), Err(ImageError::Checksum { .. })));
        std::fs::remove_file(&path).unwrap();
    }

    fn scratch_file() -> File {
        // One name per call: the tests run side by side.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("cryo-digest-test-{}-{n}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
