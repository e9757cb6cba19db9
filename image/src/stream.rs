//! An image as one byte stream (`cryo checkpoint -o -`, `cryo restart -`,
//! `cryo migrate`): what a pipe or an ssh channel can carry.
//!
//! Layout: a header (`CRYOSTRM`, version), then one record per file of the
//! image — `u8 1`, name length (`u16`), name, data length (`u64`), data, CRC32
//! of the data — and a trailer: `u8 2`, the number of records (`u32`), and a
//! CRC32 over every byte before it. Integers are little-endian.
//! The inventory comes first and the other metadata files before the page
//! files, so a receiver can refuse an image this machine cannot run before
//! its memory crosses the wire. Data is copied in bounded chunks: neither
//! side ever holds more than one chunk of it.

use crate::{ImageError, Result, INVENTORY_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"CRYOSTRM";
const VERSION: u32 = 1;
const RECORD: u8 = 1;
const TRAILER: u8 = 2;
const CHUNK: usize = 1 << 20;

fn stream_err(what: impl Into<String>) -> ImageError {
    ImageError::Stream(what.into())
}

/// Metadata files (`.cryo`) first, the inventory before them all.
fn send_order(names: &mut [String]) {
    names.sort_by_key(|n| (n != INVENTORY_FILE, !n.ends_with(".cryo"), n.clone()));
}

/// What crossed the stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub files: u32,
    pub bytes: u64,
}

/// Writes every file of the complete image in `dir` to `out` as one stream.
pub fn send(dir: &Path, out: &mut impl Write) -> Result<Totals> {
    let dir_err = |source| ImageError::Io { path: dir.display().to_string(), source };
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(dir_err)? {
        let e = e.map_err(dir_err)?;
        if e.file_type().map_err(dir_err)?.is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    send_order(&mut names);
    let mut out = Hashed { inner: out, crc: crc32fast::Hasher::new(), bytes: 0 };
    let sink = |e: std::io::Error| stream_err(format!("writing the image stream: {e}"));
    out.write_all(MAGIC).and_then(|()| out.write_all(&VERSION.to_le_bytes())).map_err(sink)?;
    let mut buf = vec![0u8; CHUNK];
    for name in &names {
        let path = dir.join(name);
        let file_err = |source| ImageError::Io { path: path.display().to_string(), source };
        let mut f = File::open(&path).map_err(file_err)?;
        let len = f.metadata().map_err(file_err)?.len();
        out.write_all(&[RECORD]).map_err(sink)?;
        out.write_all(&(name.len() as u16).to_le_bytes()).map_err(sink)?;
        out.write_all(name.as_bytes()).map_err(sink)?;
        out.write_all(&len.to_le_bytes()).map_err(sink)?;
        let mut crc = crc32fast::Hasher::new();
        let mut left = len;
        while left > 0 {
            let n = CHUNK.min(left as usize);
            f.read_exact(&mut buf[..n]).map_err(file_err)?;
            crc.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(sink)?;
            left -= n as u64;
        }
        out.write_all(&crc.finalize().to_le_bytes()).map_err(sink)?;
    }
    out.write_all(&[TRAILER]).map_err(sink)?;
    let total = out.crc.clone().finalize();
    let bytes = out.bytes;
    let out = out.inner;
    out.write_all(&(names.len() as u32).to_le_bytes()).map_err(sink)?;
    out.write_all(&total.to_le_bytes()).map_err(sink)?;
    out.flush().map_err(sink)?;
    Ok(Totals { files: names.len() as u32, bytes })
}

struct Hashed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.crc.update(&b[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(b)?;
        self.crc.update(&b[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A name a stream may create in the receiving directory: a plain file name
/// of the kinds an image holds, nothing hidden, no path.
fn acceptable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// Reads a stream written by [`send`] from `input` into `dir` (an existing,
/// empty, private directory), checking every record's and the whole
/// stream's checksum. `metadata_done` runs once the inventory and every
/// metadata file are in, before any page data is read, so a receiver can
/// refuse early. Reads nothing past the trailer: what follows it on `input`
/// is the caller's.
pub fn receive(input: &mut impl BufRead, dir: &Path, mut metadata_done: impl FnMut() -> Result<()>) -> Result<Totals> {
    let mut input = Hashed { inner: input, crc: crc32fast::Hasher::new(), bytes: 0 };
    let mut head = [0u8; 12];
    read_full(&mut input, &mut head, "the stream header")?;
    if &head[..8] != MAGIC {
        return Err(stream_err("the input is not a cryo image stream (write one with `cryo checkpoint PID -o -`)"));
    }
    let version = u32::from_le_bytes(head[8..].try_into().unwrap_or_default());
    if version != VERSION {
        return Err(stream_err(format!("image stream version {version}; this cryo reads version {VERSION}: use the same cryo on both ends")));
    }
    let mut files = 0u32;
    let mut checked = false;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut tag = [0u8; 1];
        read_full(&mut input, &mut tag, "the next record")?;
        match tag[0] {
            RECORD => {}
            TRAILER => break,
            t => return Err(stream_err(format!("unknown record type {t} after {} bytes: the stream is damaged", input.bytes))),
        }
        let mut nlen = [0u8; 2];
        read_full(&mut input, &mut nlen, "a record's name")?;
        let mut name = vec![0u8; u16::from_le_bytes(nlen) as usize];
        read_full(&mut input, &mut name, "a record's name")?;
        let name = String::from_utf8(name).ok().filter(|n| acceptable_name(n)).ok_or_else(|| stream_err("a record names no acceptable image file: the stream is damaged"))?;
        if files == 0 && name != INVENTORY_FILE {
            return Err(stream_err(format!("the stream starts with {name}, not the inventory: the stream is damaged")));
        }
        if !checked && !name.ends_with(".cryo") {
            metadata_done()?;
            checked = true;
        }
        let mut len = [0u8; 8];
        read_full(&mut input, &mut len, &name)?;
        let len = u64::from_le_bytes(len);
        let path = dir.join(&name);
        let file_err = |source| ImageError::Io { path: path.display().to_string(), source };
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(file_err)?;
        let mut crc = crc32fast::Hasher::new();
        let mut left = len;
        while left > 0 {
            let n = CHUNK.min(left as usize);
            read_full(&mut input, &mut buf[..n], &name)?;
            crc.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(file_err)?;
            left -= n as u64;
        }
        let mut want = [0u8; 4];
        read_full(&mut input, &mut want, &name)?;
        if u32::from_le_bytes(want) != crc.finalize() {
            return Err(stream_err(format!("{name} arrived damaged (checksum mismatch)")));
        }
        files += 1;
    }
    let total = input.crc.clone().finalize();
    let bytes = input.bytes;
    let mut trailer = [0u8; 8];
    read_full(&mut input.inner, &mut trailer, "the stream trailer")?;
    let count = u32::from_le_bytes(trailer[..4].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(trailer[4..].try_into().unwrap_or_default());
    if count != files || crc != total {
        return Err(stream_err(format!("the stream's trailer does not match what arrived ({files} files, {bytes} bytes): the stream is damaged")));
    }
    if !checked {
        metadata_done()?;
    }
    Ok(Totals { files, bytes })
}

fn read_full(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            stream_err(format!(
                "the image stream ended in {what}: it was cut (the sender stopped or the connection broke); nothing was restored"
            ))
        } else {
            stream_err(format!("reading the image stream ({what}): {e}"))
        }
    })
}
