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
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = CHUNK.min((len - at) as usize);
        let got = f.read_at(&mut buf[..n], at)?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        h.update(&buf[..got]);
        at += got as u64;
    }
    Ok(h.finalize())
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
