//! Checksums of page files. Pages go to disk by splice and come back by
//! preadv straight into the restored process, so neither pass sees them:
//! the checksum is a separate read of the file, which the callers run on
//! another thread beside their work.

use crate::{ImageError, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const CHUNK: usize = 1 << 20;

/// CRC32 of the first `len` bytes of `f`.
pub fn crc_of(f: &File, len: u64) -> std::io::Result<u32> {
    Ok(range_crc(f, 0, len)?.finalize())
}

/// [`crc_of`] on every CPU: the file in as many ranges, their CRCs combined.
/// For a checkpoint that waits for it; restart checks beside its own work.
pub fn crc_of_parallel(f: &File, len: u64) -> std::io::Result<u32> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let ranges = cpus.min(len.div_ceil(PARALLEL_MIN)).max(1);
    let step = len.div_ceil(ranges).next_multiple_of(CHUNK as u64);
    let parts: Vec<std::io::Result<crc32fast::Hasher>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranges)
            .map(|i| (i * step, ((i + 1) * step).min(len)))
            .filter(|(a, b)| a < b)
            .map(|(a, b)| s.spawn(move || range_crc(f, a, b)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("checksum thread panicked")))).collect()
    });
    let mut all = crc32fast::Hasher::new();
    for part in parts {
        all.combine(&part?);
    }
    Ok(all.finalize())
}

/// Below this, one thread is as fast as several.
const PARALLEL_MIN: u64 = 64 << 20;

fn range_crc(f: &File, from: u64, to: u64) -> std::io::Result<crc32fast::Hasher> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = CHUNK.min((to - at) as usize);
        let got = f.read_at(&mut buf[..n], at)?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        h.update(&buf[..got]);
        at += got as u64;
    }
    Ok(h)
}

/// Check a page file against the checksum its process image records.
pub fn verify(path: &Path, len: u64, crc: u32) -> Result<()> {
    let err = |source| ImageError::Io { path: path.display().to_string(), source };
    let f = File::open(path).map_err(err)?;
    if crc_of(&f, len).map_err(err)? != crc {
        return Err(ImageError::Checksum { path: path.display().to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parallel_crc_is_the_crc() {
        let mut f = scratch_file();
        let data: Vec<u8> = (0..(150u32 << 20) / 4).flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes()).collect();
        f.write_all(&data).unwrap();
        let len = data.len() as u64;
        assert_eq!(crc_of_parallel(&f, len).unwrap(), crc32fast::hash(&data));
        assert_eq!(crc_of(&f, len - 5).unwrap(), crc32fast::hash(&data[..data.len() - 5]));
    }

    fn scratch_file() -> File {
        let path = std::env::temp_dir().join(format!("cryo-digest-test-{}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
