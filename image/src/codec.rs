//! Compressed pages files (`--compress`): the pages a process stores, in the
//! order of their raw offsets, cut into frames of [`FRAME_RAW`] bytes, each
//! compressed on its own (so frames compress in parallel and a reader needs
//! one frame in memory at a time). Page runs keep their offsets into the raw
//! stream; [`Compression::frames`] says where each frame lies in the file.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Raw bytes per frame (the last one may be shorter).
pub const FRAME_RAW: u64 = 1 << 20;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Lz4,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// Is this codec built into this cryo?
    pub fn available(self) -> bool {
        self == Codec::Lz4 || cfg!(feature = "zstd")
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Compression {
    pub codec: Codec,
    /// Bytes of the raw stream (what the pages file would hold uncompressed).
    pub raw_bytes: u64,
    /// Frame i holds raw bytes [i * FRAME_RAW, (i + 1) * FRAME_RAW): (file offset, length).
    pub frames: Vec<(u64, u32)>,
}

#[cfg(not(feature = "zstd"))]
fn unavailable(codec: Codec) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("this cryo was built without {} support", codec.name()))
}

/// zstd level: its fastest regular one, as compression is for speed here.
#[cfg(feature = "zstd")]
const ZSTD_LEVEL: i32 = 1;

pub fn compress(codec: Codec, raw: &[u8]) -> io::Result<Vec<u8>> {
    match codec {
        Codec::Lz4 => Ok(lz4_flex::block::compress(raw)),
        #[cfg(feature = "zstd")]
        Codec::Zstd => zstd::bulk::compress(raw, ZSTD_LEVEL),
        #[cfg(not(feature = "zstd"))]
        Codec::Zstd => Err(unavailable(codec)),
    }
}

/// Decompress a frame into exactly `out.len()` bytes.
pub fn decompress(codec: Codec, frame: &[u8], out: &mut [u8]) -> io::Result<()> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let n = match codec {
        Codec::Lz4 => lz4_flex::block::decompress_into(frame, out).map_err(|e| bad(format!("lz4 frame: {e}")))?,
        #[cfg(feature = "zstd")]
        Codec::Zstd => zstd::bulk::decompress_to_buffer(frame, out)?,
        #[cfg(not(feature = "zstd"))]
        Codec::Zstd => return Err(unavailable(codec)),
    };
    if n != out.len() {
        return Err(bad(format!("frame holds {n} bytes, expected {}", out.len())));
    }
    Ok(())
}

impl Compression {
    /// Raw bytes of frame `i`.
    pub fn frame_raw_len(&self, i: usize) -> u64 {
        (self.raw_bytes - i as u64 * FRAME_RAW).min(FRAME_RAW)
    }
}

/// Reads raw bytes of a pages file, compressed or not, keeping the last
/// decompressed frame.
pub struct PagesReader {
    file: File,
    compression: Option<Compression>,
    frame: Option<(usize, Vec<u8>)>,
    comp: Vec<u8>,
}

impl PagesReader {
    pub fn new(file: File, compression: Option<Compression>) -> PagesReader {
        PagesReader { file, compression, frame: None, comp: Vec::new() }
    }

    /// Decompressed frame `i`.
    pub fn frame(&mut self, i: usize) -> io::Result<&[u8]> {
        let c = self.compression.as_ref().expect("a compressed pages file");
        if self.frame.as_ref().is_none_or(|(at, _)| *at != i) {
            let &(off, len) = c.frames.get(i).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no frame {i}")))?;
            self.comp.resize(len as usize, 0);
            self.file.read_exact_at(&mut self.comp, off)?;
            let mut raw = self.frame.take().map(|(_, b)| b).unwrap_or_default();
            raw.resize(c.frame_raw_len(i) as usize, 0);
            decompress(c.codec, &self.comp, &mut raw)?;
            self.frame = Some((i, raw));
        }
        Ok(&self.frame.as_ref().expect("just read").1)
    }

    /// Fill `buf` with raw bytes from raw offset `off`.
    pub fn read_exact_at(&mut self, buf: &mut [u8], off: u64) -> io::Result<()> {
        if self.compression.is_none() {
            return self.file.read_exact_at(buf, off);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = off + done as u64;
            let i = (at / FRAME_RAW) as usize;
            let frame = self.frame(i)?;
            let from = (at % FRAME_RAW) as usize;
            if from >= frame.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("raw offset {at} is past the pages")));
            }
            let n = (frame.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&frame[from..from + n]);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let raw: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for codec in [Codec::Lz4, Codec::Zstd].into_iter().filter(|c| c.available()) {
            let c = compress(codec, &raw).unwrap();
            assert!(c.len() < raw.len() / 4, "{codec:?} compresses");
            let mut out = vec![0u8; raw.len()];
            decompress(codec, &c, &mut out).unwrap();
            assert_eq!(out, raw);
            let mut short = vec![0u8; raw.len() - 1];
            assert!(decompress(codec, &c, &mut short).is_err(), "{codec:?}: a wrong size is an error");
        }
    }
}
