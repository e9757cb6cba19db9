//! An image as one byte stream (`cryo checkpoint -o -`, `cryo restart -`,
//! `cryo migrate`): what a pipe or an ssh channel can carry.
//!
//! Layout: a header (`CRYOSTRM`, version), then one record per file of the
//! image — `u8 1`, name length (`u16`), name, data length (`u64`), data, CRC32
//! of the data — and a trailer: `u8 2`, the number of records (`u32`), and a
//! CRC32 over every byte before it. Integers are little-endian.
//! The inventory comes first and the other metadata files before the page
//! files, so a receiver can refuse an image this machine cannot run before
//! its memory crosses the wire; the pages files come last, in the
//! inventory's order, so that a restart can read them straight into the
//! processes' memory (`Receiver`) without storing them. Data is copied in
//! bounded chunks: neither side ever holds more than one chunk of it.

use crate::{is_pages_file, pages_file, ImageError, ImageReader, ProcessImage, ProcessState, Result, INVENTORY_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"CRYOSTRM";
/// 2: pages files in the inventory's order (a receiver reads them into place).
const VERSION: u32 = 2;
const RECORD: u8 = 1;
const TRAILER: u8 = 2;
const CHUNK: usize = 1 << 20;

fn stream_err(what: impl Into<String>) -> ImageError {
    ImageError::Stream(what.into())
}

/// The inventory, the other metadata files (`.cryo`), other files, then the
/// pages files in the order of `pids` (the inventory's), which is the order a
/// receiver restoring from the stream reads them in.
fn send_order(names: &mut [String], pids: &[i32]) {
    let pages_rank = |n: &str| pids.iter().position(|&pid| n == pages_file(pid)).unwrap_or(usize::MAX);
    names.sort_by_key(|n| (n != INVENTORY_FILE, !n.ends_with(".cryo"), is_pages_file(n), pages_rank(n), n.clone()));
}

/// What crossed the stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub files: u32,
    pub bytes: u64,
}

/// Where the pages of the image's processes are when their pages files are
/// not in its directory: still in the processes, which stay frozen while
/// the stream is written (`cryo checkpoint --kill -o -`, `cryo migrate`).
pub trait LiveMemory {
    /// Reads `buf.len()` bytes at `vaddr` of the process that is `pid` in the image.
    fn read(&self, pid: i32, vaddr: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// Writes every file of the complete image in `dir` to `out` as one stream.
/// With `memory`, the pages files of processes whose pages stayed in memory
/// (no file, no checksum in their process files) are read from there as the
/// process files describe them: runs without gaps, in file order. Their
/// checksum is made as they are sent.
pub fn send_image(dir: &Path, memory: Option<&dyn LiveMemory>, out: &mut impl Write) -> Result<Totals> {
    let dir_err = |source| ImageError::Io { path: dir.display().to_string(), source };
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(dir_err)? {
        let e = e.map_err(dir_err)?;
        if e.file_type().map_err(dir_err)?.is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    let image = ImageReader::open(dir)?;
    let inventory = &image.inventory;
    let pids: Vec<i32> = inventory.processes.iter().map(|e| e.pid).collect();
    let mut in_memory = Vec::new();
    if memory.is_some() {
        for e in inventory.processes.iter().filter(|e| e.state == ProcessState::Live) {
            let name = pages_file(e.pid);
            if !names.contains(&name) {
                let p = image.read_process_meta(e.pid)?;
                if p.pages_crc.is_none() {
                    names.push(name.clone());
                    in_memory.push((name, p));
                }
            }
        }
    }
    send_order(&mut names, &pids);
    let mut out = Hashed { inner: out, crc: crc32fast::Hasher::new(), bytes: 0 };
    let sink = |e: std::io::Error| stream_err(format!("writing the image stream: {e}"));
    out.write_all(MAGIC).and_then(|()| out.write_all(&VERSION.to_le_bytes())).map_err(sink)?;
    let mut buf = vec![0u8; CHUNK];
    for name in &names {
        let live = in_memory.iter().find(|(n, _)| n == name).map(|(_, p)| p);
        let crc = match (live, memory) {
            (Some(p), Some(memory)) => {
                write_header(&mut out, name, p.pages_bytes).map_err(sink)?;
                copy_from_memory(p, inventory.page_size, memory, &mut out, &mut buf)?
            }
            _ => {
                let path = dir.join(name);
                let file_err = |source| ImageError::Io { path: path.display().to_string(), source };
                let mut f = File::open(&path).map_err(file_err)?;
                let len = f.metadata().map_err(file_err)?.len();
                write_header(&mut out, name, len).map_err(sink)?;
                let mut crc = crc32fast::Hasher::new();
                let mut left = len;
                while left > 0 {
                    let n = CHUNK.min(left as usize);
                    f.read_exact(&mut buf[..n]).map_err(file_err)?;
                    crc.update(&buf[..n]);
                    out.write_all(&buf[..n]).map_err(sink)?;
                    left -= n as u64;
                }
                crc.finalize()
            }
        };
        out.write_all(&crc.to_le_bytes()).map_err(sink)?;
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

fn write_header(out: &mut impl Write, name: &str, len: u64) -> std::io::Result<()> {
    out.write_all(&[RECORD])?;
    out.write_all(&(name.len() as u16).to_le_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&len.to_le_bytes())
}

/// Writes the pages file of `p` from the process's memory; returns its CRC32.
fn copy_from_memory(p: &ProcessImage, page_size: u64, memory: &dyn LiveMemory, out: &mut impl Write, buf: &mut [u8]) -> Result<u32> {
    let name = pages_file(p.pid);
    let mut runs: Vec<_> = p.pages.iter().filter(|r| r.origin.in_pages_file()).collect();
    runs.sort_by_key(|r| r.file_offset);
    let mut crc = crc32fast::Hasher::new();
    let mut at = 0u64;
    for r in runs {
        if r.file_offset != at {
            return Err(ImageError::Invalid { path: name, what: "its page runs leave gaps, so it cannot be read from memory".into() });
        }
        let len = r.npages * page_size;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let vaddr = r.vaddr + done;
            memory.read(p.pid, vaddr, &mut buf[..n]).map_err(|source| ImageError::Io { path: format!("memory of process {} at {vaddr:#x}", p.pid), source })?;
            crc.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| stream_err(format!("writing the image stream: {e}")))?;
            done += n as u64;
        }
        at += len;
    }
    if at != p.pages_bytes {
        return Err(ImageError::Invalid { path: name, what: format!("its page runs hold {at} bytes, its file {}", p.pages_bytes) });
    }
    Ok(crc.finalize())
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

/// A stream being read: its records one by one, each file's bytes in
/// order, every record's checksum and the whole stream's checked on the way.
pub struct Receiver<R> {
    input: Hashed<R>,
    files: u32,
    /// The file whose bytes come next: its name, bytes left, their CRC so far.
    open: Option<(String, u64, crc32fast::Hasher)>,
    /// A record whose header was read but not handed out yet.
    ahead: Option<(String, u64)>,
    ended: bool,
}

impl<R: Read> Receiver<R> {
    /// Reads and checks the stream's header.
    pub fn start(input: R) -> Result<Receiver<R>> {
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
        Ok(Receiver { input, files: 0, open: None, ahead: None, ended: false })
    }

    /// The next file's name and length, or None once the trailer (which is
    /// then checked) was reached. The file before must have been read to its end.
    pub fn next_file(&mut self) -> Result<Option<(String, u64)>> {
        let next = self.peek()?.cloned();
        self.ahead = None;
        if let Some((name, len)) = &next {
            self.open = Some((name.clone(), *len, crc32fast::Hasher::new()));
        }
        Ok(next)
    }

    /// The next file's name and length without taking it.
    pub fn peek(&mut self) -> Result<Option<&(String, u64)>> {
        if self.open.is_some() {
            return Err(stream_err("a file of the stream was left before its end"));
        }
        if self.ahead.is_none() && !self.ended {
            self.ahead = self.read_header()?;
        }
        Ok(self.ahead.as_ref())
    }

    fn read_header(&mut self) -> Result<Option<(String, u64)>> {
        let mut tag = [0u8; 1];
        read_full(&mut self.input, &mut tag, "the next record")?;
        match tag[0] {
            RECORD => {}
            TRAILER => {
                self.check_trailer()?;
                return Ok(None);
            }
            t => return Err(stream_err(format!("unknown record type {t} after {} bytes: the stream is damaged", self.input.bytes))),
        }
        let mut nlen = [0u8; 2];
        read_full(&mut self.input, &mut nlen, "a record's name")?;
        let mut name = vec![0u8; u16::from_le_bytes(nlen) as usize];
        read_full(&mut self.input, &mut name, "a record's name")?;
        let name = String::from_utf8(name).ok().filter(|n| acceptable_name(n)).ok_or_else(|| stream_err("a record names no acceptable image file: the stream is damaged"))?;
        if self.files == 0 && name != INVENTORY_FILE {
            return Err(stream_err(format!("the stream starts with {name}, not the inventory: the stream is damaged")));
        }
        let mut len = [0u8; 8];
        read_full(&mut self.input, &mut len, &name)?;
        self.files += 1;
        Ok(Some((name, u64::from_le_bytes(len))))
    }

    fn check_trailer(&mut self) -> Result<()> {
        self.ended = true;
        let total = self.input.crc.clone().finalize();
        let mut trailer = [0u8; 8];
        read_full(&mut self.input.inner, &mut trailer, "the stream trailer")?;
        let count = u32::from_le_bytes(trailer[..4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(trailer[4..].try_into().unwrap_or_default());
        if count != self.files || crc != total {
            return Err(stream_err(format!(
                "the stream's trailer does not match what arrived ({} files, {} bytes): the stream is damaged",
                self.files, self.input.bytes
            )));
        }
        Ok(())
    }

    /// The next bytes of the open file; no more than it has left.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        let Some((name, left, crc)) = self.open.as_mut() else { return Err(stream_err("read with no file of the stream open")) };
        if buf.len() as u64 > *left {
            return Err(stream_err(format!("{name} is shorter in the stream than its image says: the stream is damaged")));
        }
        read_full(&mut self.input, buf, name)?;
        crc.update(buf);
        *left -= buf.len() as u64;
        Ok(())
    }

    /// Ends the open file, all of it read: checks it against the checksum
    /// the stream carries for it, and returns that CRC32.
    pub fn end_file(&mut self) -> Result<u32> {
        let Some((name, left, crc)) = self.open.take() else { return Err(stream_err("no file of the stream open")) };
        if left != 0 {
            return Err(stream_err(format!("{name}: {left} bytes left unread")));
        }
        let mut want = [0u8; 4];
        read_full(&mut self.input, &mut want, &name)?;
        let got = crc.finalize();
        if u32::from_le_bytes(want) != got {
            return Err(stream_err(format!("{name} arrived damaged (checksum mismatch)")));
        }
        Ok(got)
    }

    /// Copies the open file to `f` (at `path`, for messages) and ends it.
    fn copy_to(&mut self, f: &mut File, path: &Path, buf: &mut [u8]) -> Result<()> {
        let file_err = |source| ImageError::Io { path: path.display().to_string(), source };
        let mut left = self.open.as_ref().map_or(0, |&(_, left, _)| left);
        while left > 0 {
            let n = buf.len().min(left as usize);
            self.read(&mut buf[..n])?;
            f.write_all(&buf[..n]).map_err(file_err)?;
            left -= n as u64;
        }
        self.end_file().map(drop)
    }

    /// What has arrived so far.
    pub fn totals(&self) -> Totals {
        Totals { files: self.files, bytes: self.input.bytes }
    }
}

/// Reads a stream written by [`send_image`] from `input` into `dir` (an existing,
/// empty, private directory), checking every record's and the whole
/// stream's checksum. `metadata_done` runs once the inventory and every
/// metadata file are in, before any page data is read, so a receiver can
/// refuse early. Reads nothing past the trailer: what follows it on `input`
/// is the caller's.
pub fn receive(input: &mut impl BufRead, dir: &Path, metadata_done: impl FnMut() -> Result<()>) -> Result<Totals> {
    let mut rx = Receiver::start(input)?;
    receive_until(&mut rx, dir, metadata_done, |_| false)?;
    Ok(rx.totals())
}

/// Like [`receive`], but stops before the first pages file and hands the
/// rest of the stream back: the pages files follow one another in the
/// inventory's order of live processes, for the receiver to read straight
/// into place (`cryo restart -`). Every other file is in `dir` by then.
pub fn receive_metadata<R: Read>(input: R, dir: &Path, metadata_done: impl FnMut() -> Result<()>) -> Result<Receiver<R>> {
    let mut rx = Receiver::start(input)?;
    receive_until(&mut rx, dir, metadata_done, is_pages_file)?;
    Ok(rx)
}

/// Stores files of the stream in `dir` up to the trailer or the first file
/// `stop` names, which is left for the caller.
fn receive_until<R: Read>(rx: &mut Receiver<R>, dir: &Path, mut metadata_done: impl FnMut() -> Result<()>, stop: impl Fn(&str) -> bool) -> Result<()> {
    let mut checked = false;
    let mut buf = vec![0u8; CHUNK];
    while let Some((name, _)) = rx.peek()? {
        if !checked && !name.ends_with(".cryo") {
            metadata_done()?;
            checked = true;
        }
        if stop(name) {
            return Ok(());
        }
        let (name, _) = rx.next_file()?.expect("peeked");
        let path = dir.join(&name);
        let file_err = |source| ImageError::Io { path: path.display().to_string(), source };
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(file_err)?;
        rx.copy_to(&mut f, &path, &mut buf)?;
    }
    if !checked {
        metadata_done()?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{self, Kind};
    use crate::model::{DumpStats, Inventory, ProcessEntry, ProcessState};
    use crate::{PageOrigin, ProcessImage};

    fn entry(pid: i32, ppid: i32) -> ProcessEntry {
        ProcessEntry { pid, ppid, pgid: 1, sid: 1, comm: "t".into(), threads: 1, session_outside: false, state: ProcessState::Live }
    }

    /// An image directory of a three-process tree whose pids do not sort
    /// as the inventory lists them.
    fn image_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory {
            cryo_version: "test".into(),
            arch: "x86_64".into(),
            kernel: String::new(),
            hostname: String::new(),
            created_unix_ms: 0,
            page_size: 4096,
            root_pid: 9,
            processes: vec![entry(9, 0), entry(10, 9), entry(8, 9)],
            pipes: Vec::new(),
            fifos: Vec::new(),
            unlinked: Vec::new(),
            unix: Vec::new(),
            inet: Vec::new(),
            ptys: Vec::new(),
            parent: None,
            cpu_features: 0,
            stats: DumpStats::default(),
            live_pages: false,
        };
        fs::write(dir.path().join(INVENTORY_FILE), meta::encode(Kind::Inventory, &inv)).unwrap();
        for pid in [8, 9, 10] {
            fs::write(dir.path().join(crate::process_file(pid)), b"meta").unwrap();
            fs::write(dir.path().join(pages_file(pid)), vec![pid as u8; 3 * CHUNK / 2]).unwrap();
        }
        fs::write(dir.path().join("file-1-2.img"), b"deleted file").unwrap();
        dir
    }

    #[test]
    fn pages_come_last_in_the_inventorys_order_and_read_in_place() {
        let src = image_dir();
        let mut stream = Vec::new();
        send_image(src.path(), None, &mut stream).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let mut checked = 0;
        let mut rx = receive_metadata(stream.as_slice(), dst.path(), || {
            checked += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(checked, 1, "the metadata check runs once, before the first file that is not metadata");
        let mut stored: Vec<String> = fs::read_dir(dst.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        stored.sort();
        assert_eq!(stored, ["file-1-2.img", "inventory.cryo", "proc-10.cryo", "proc-8.cryo", "proc-9.cryo"]);
        for pid in [9, 10, 8] {
            let (name, len) = rx.next_file().unwrap().expect("a pages file");
            assert_eq!((name.as_str(), len), (pages_file(pid).as_str(), 3 * CHUNK as u64 / 2));
            let mut buf = vec![0u8; len as usize];
            rx.read(&mut buf[..100]).unwrap();
            rx.read(&mut buf[100..]).unwrap();
            assert!(buf.iter().all(|&b| b == pid as u8));
            assert!(rx.read(&mut [0u8]).is_err(), "no byte beyond the file");
            assert_eq!(rx.end_file().unwrap(), crc32fast::hash(&buf));
        }
        assert!(rx.next_file().unwrap().is_none(), "the trailer follows");
    }

    #[test]
    fn damaged_pages_are_caught_at_the_files_end() {
        let src = image_dir();
        let mut stream = Vec::new();
        send_image(src.path(), None, &mut stream).unwrap();
        let at = stream.len() - 1000;
        stream[at] ^= 1;
        let dst = tempfile::tempdir().unwrap();
        let mut rx = receive_metadata(stream.as_slice(), dst.path(), || Ok(())).unwrap();
        let mut errors = Vec::new();
        while let Some((_, len)) = rx.next_file().unwrap() {
            let mut buf = vec![0u8; len as usize];
            rx.read(&mut buf).unwrap();
            match rx.end_file() {
                Ok(_) => {}
                Err(e) => {
                    errors.push(e.to_string());
                    break;
                }
            }
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("pages-8.img arrived damaged"), "{errors:?}");
    }

    /// Memory whose every byte is the low byte of its page number.
    struct PagePattern;

    impl LiveMemory for PagePattern {
        fn read(&self, pid: i32, vaddr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            assert_eq!(pid, 9, "only process 9's pages stayed in memory");
            for (i, b) in buf.iter_mut().enumerate() {
                *b = ((vaddr + i as u64) >> 12) as u8;
            }
            Ok(())
        }
    }

    /// Process 9 of [`image_dir`] with its pages left in memory: two runs.
    fn pages_in_memory(dir: &Path, runs: Vec<crate::PageRun>) {
        let mut p = ProcessImage::empty();
        p.pid = 9;
        p.pages_bytes = runs.iter().map(|r| r.npages * 4096).sum();
        p.pages = runs;
        p.pages_crc = None;
        fs::write(dir.join(crate::process_file(9)), meta::encode(Kind::Process, &p)).unwrap();
        fs::remove_file(dir.join(pages_file(9))).unwrap();
    }

    fn run(vaddr: u64, npages: u64, file_offset: u64) -> crate::PageRun {
        crate::PageRun { vaddr, npages, file_offset, origin: PageOrigin::Here }
    }

    #[test]
    fn pages_left_in_memory_are_read_from_it_in_file_order() {
        let src = image_dir();
        // Sorted by address, the second run comes first in the file.
        pages_in_memory(src.path(), vec![run(0x10000, 2, 0x1000), run(0x40000, 1, 0)]);
        let mut stream = Vec::new();
        send_image(src.path(), Some(&PagePattern), &mut stream).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let mut rx = receive_metadata(stream.as_slice(), dst.path(), || Ok(())).unwrap();
        let (name, len) = rx.next_file().unwrap().expect("process 9's pages first");
        assert_eq!((name.as_str(), len), ("pages-9.img", 3 * 4096));
        let mut buf = vec![0u8; len as usize];
        rx.read(&mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0x40) && buf[4096..8192].iter().all(|&b| b == 0x10) && buf[8192..].iter().all(|&b| b == 0x11));
        assert_eq!(rx.end_file().unwrap(), crc32fast::hash(&buf), "the record's checksum is made as the pages are sent");
        for pid in [10, 8] {
            let (name, len) = rx.next_file().unwrap().expect("the pages files on disk follow");
            assert_eq!(name, pages_file(pid));
            let mut buf = vec![0u8; len as usize];
            rx.read(&mut buf).unwrap();
            rx.end_file().unwrap();
        }
        assert!(rx.next_file().unwrap().is_none());
    }

    #[test]
    fn pages_in_memory_with_gaps_are_refused() {
        let src = image_dir();
        pages_in_memory(src.path(), vec![run(0x10000, 1, 0), run(0x40000, 1, 0x2000)]);
        let err = send_image(src.path(), Some(&PagePattern), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("gaps"), "{err}");
    }
}
