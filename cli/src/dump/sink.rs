//! Where a process's pages go once they left it: pages that are all zero
//! are dropped (they read as zero on restart, like untouched ones), the
//! others appended to the pages file, raw, or in compressed frames that
//! worker threads compress while the next pages arrive. A thread of its own
//! writes one piece while the next is read from the process, so reading and
//! writing run on two CPUs. At most a few pieces and frames are held at a
//! time, whatever the size of the process. The file's CRC32 is made while it
//! is written: each compressed frame's by the worker that wrote it, a raw
//! file's by the thread that read the pieces, or by a thread reading behind
//! the splicing.

use anyhow::{anyhow, Context, Result};
use cryo_image::codec::{self, Codec, Compression, FRAME_RAW};
use cryo_image::digest::{self, Follower};
use cryo_image::{PageOrigin, PageRun};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the compressing workers share: where the file ends, each frame's
/// place, and the first error.
#[derive(Default)]
struct Shared {
    file_len: u64,
    frames: Vec<Option<(u64, u32)>>,
    /// (offset, length, CRC32) of every frame written.
    crcs: Vec<(u64, u64, u32)>,
    error: Option<String>,
}

struct Workers {
    tx: Option<SyncSender<(usize, Vec<u8>)>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
    /// Buffers handed back by the workers, so frames are not reallocated.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// The writing end (on the sink's thread when it has one).
pub struct Core {
    file: Arc<File>,
    codec: Option<Codec>,
    ps: u64,
    /// Raw bytes appended so far: the raw offset of the next page.
    raw: u64,
    runs: Vec<PageRun>,
    /// The chosen run the last output run belongs to: output runs never
    /// merge across chosen runs (which never cross a memory area's end).
    group: usize,
    zero_pages: u64,
    /// The next page starts a new output run.
    split: bool,
    /// Compressed mode: raw bytes of the frame being filled.
    frame: Vec<u8>,
    next_frame: usize,
    workers: Option<Workers>,
    /// Raw mode: the file's checksum.
    digest: Option<RawDigest>,
    /// Blocks are reserved before pages are spliced (see [`preallocates`]).
    prealloc: bool,
}

/// How a raw pages file's CRC32 is made: by a thread reading behind the
/// writes when pages are spliced (they never pass through cryo's memory), or
/// from the pieces themselves as they are written, while they are still in
/// the CPU's cache (the file is written in order).
enum RawDigest {
    Follower(Follower),
    Running(digest::Crc),
}

/// Whether to reserve a raw file's blocks before pages are spliced into it:
/// a file system with unwritten extents (ext4, xfs) then skips its
/// reservation per page on the write, about a fifth of a write's cost; tmpfs
/// would allocate and clear pages that the write then fills again.
fn preallocates(file: &File) -> bool {
    // Magic numbers are 32 bits; f_type's C type differs between libcs and CPUs.
    match nix::sys::statfs::fstatfs(file) {
        Ok(st) => ![TMPFS_MAGIC, RAMFS_MAGIC].contains(&(st.filesystem_type().0 as u32)),
        Err(_) => false,
    }
}

/// `len` bytes are about to be written at `at` into a raw pages file:
/// reserve their blocks where that makes writing them cheaper
/// ([`preallocates`]). Only a hint.
fn reserve(file: &File, prealloc: bool, at: u64, len: u64) {
    // A 32-bit off_t (glibc on ARMv7) cannot name offsets past 2 GiB.
    if prealloc && len > 0 && at + len <= libc::off_t::MAX as u64 {
        // SAFETY: fallocate on an fd we own; a failure (a file system
        // without it, no space) leaves the write to find out.
        unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, at as libc::off_t, len as libc::off_t) };
    }
}

/// statfs f_type of tmpfs and ramfs (linux/magic.h).
const TMPFS_MAGIC: u32 = 0x0102_1994;
const RAMFS_MAGIC: u32 = 0x8584_58f6;

/// Does the page hold only zero bytes?
pub fn is_zero(page: &[u8]) -> bool {
    page.chunks(64).all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}

impl Core {
    /// `spliced`: raw pages are spliced into the file (with some appended),
    /// not looked at in pieces ([`Behind`]).
    fn new(file: File, codec: Option<Codec>, ps: u64, spliced: bool) -> Result<Core> {
        let file = Arc::new(file);
        let (workers, digest) = match codec {
            None if spliced => (None, Some(RawDigest::Follower(Follower::new(file.clone())))),
            None => (None, Some(RawDigest::Running(digest::Crc::new()))),
            Some(c) if !c.available() => return Err(anyhow!("this cryo was built without {} support; use --compress lz4", c.name())),
            Some(c) => (Some(Workers::start(c, file.clone())), None),
        };
        let prealloc = codec.is_none() && preallocates(&file);
        Ok(Core { file, codec, ps, raw: 0, runs: Vec::new(), group: usize::MAX, split: true, zero_pages: 0, frame: Vec::new(), next_frame: 0, workers, digest, prealloc })
    }

    /// Append `data` (whole pages) that lies at `vaddr` in the process, in
    /// chosen run number `group`. With `dedupe`, pages that are all zero are
    /// dropped.
    fn push(&mut self, group: usize, vaddr: u64, data: &[u8], origin: PageOrigin, dedupe: bool) -> Result<()> {
        for r in self.kept(group, data, dedupe) {
            self.append(vaddr + r.start as u64, &data[r], origin)?;
        }
        Ok(())
    }

    /// The spans of `data`, a piece of chosen run `group`, to store: all of
    /// it, or with `dedupe` the pages that are not all zero (the others are
    /// counted).
    fn kept(&mut self, group: usize, data: &[u8], dedupe: bool) -> Vec<Range<usize>> {
        if group != self.group {
            self.group = group;
            self.split = true;
        }
        let ps = self.ps as usize;
        debug_assert_eq!(data.len() % ps, 0);
        let mut out: Vec<Range<usize>> = Vec::new();
        if !dedupe {
            out.push(0..data.len());
            return out;
        }
        for (i, page) in data.chunks(ps).enumerate() {
            if is_zero(page) {
                self.zero_pages += 1;
                continue;
            }
            match out.last_mut() {
                Some(r) if r.end == i * ps => r.end += ps,
                _ => out.push(i * ps..(i + 1) * ps),
            }
        }
        out
    }

    /// Note `len` bytes at `vaddr` as the next ones of the raw stream.
    fn record(&mut self, group: usize, vaddr: u64, len: u64, origin: PageOrigin) {
        if group != self.group {
            self.group = group;
            self.split = true;
        }
        let npages = len / self.ps;
        let split = std::mem::take(&mut self.split);
        match self.runs.last_mut() {
            Some(r) if !split && r.origin == origin && r.vaddr + r.npages * self.ps == vaddr && r.file_offset + r.npages * self.ps == self.raw => {
                r.npages += npages
            }
            _ => self.runs.push(PageRun { vaddr, npages, file_offset: self.raw, origin }),
        }
        self.raw += len;
    }

    fn append(&mut self, vaddr: u64, bytes: &[u8], origin: PageOrigin) -> Result<()> {
        let group = self.group;
        self.record(group, vaddr, bytes.len() as u64, origin);
        if self.codec.is_none() {
            self.file.write_all_at(bytes, self.raw - bytes.len() as u64).context("writing pages to the image")?;
            self.written_to(self.raw);
            return Ok(());
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = rest.len().min(FRAME_RAW as usize - self.frame.len());
            self.frame.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.frame.len() as u64 == FRAME_RAW {
                self.send_frame()?;
            }
        }
        Ok(())
    }

    fn send_frame(&mut self) -> Result<()> {
        let w = self.workers.as_mut().expect("compressed mode has workers");
        let fresh = w.spare.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        let frame = std::mem::replace(&mut self.frame, fresh);
        self.frame.clear();
        let tx = w.tx.as_ref().expect("workers run until finish");
        if tx.send((self.next_frame, frame)).is_err() {
            return Err(w.error().unwrap_or_else(|| anyhow!("the compressing threads stopped")));
        }
        self.next_frame += 1;
        Ok(())
    }

    /// Raw mode: the file's first `end` bytes are written.
    fn written_to(&self, end: u64) {
        if let Some(RawDigest::Follower(d)) = &self.digest {
            d.written_to(end);
        }
    }

    /// Raw mode, pages written behind: note the spans of `piece` to store
    /// (as the next ones of the file) and add them to the checksum.
    fn look(&mut self, piece: &Piece) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut off = 0;
        for s in &piece.segs {
            let data = &piece.buf[off..off + s.len];
            for r in self.kept(s.group, data, s.dedupe) {
                self.record(s.group, s.vaddr + r.start as u64, r.len() as u64, s.origin);
                if let Some(RawDigest::Running(h)) = &mut self.digest {
                    h.update(&data[r.clone()]);
                }
                // Spans next to each other in the piece are one write.
                match out.last_mut() {
                    Some(last) if last.end == off + r.start => last.end = off + r.end,
                    _ => out.push(off + r.start..off + r.end),
                }
            }
            off += s.len;
        }
        out
    }

    /// The page runs written (sorted by address), how the file is
    /// compressed, its length and CRC32.
    fn written(mut self) -> Result<Written> {
        let (compression, crc) = match self.codec {
            None => (None, None),
            Some(codec) => {
                if !self.frame.is_empty() {
                    self.send_frame()?;
                }
                let mut w = self.workers.take().expect("compressed mode has workers");
                let (frames, crc) = w.join()?;
                (Some(Compression { codec, raw_bytes: self.raw, frames }), Some(crc))
            }
        };
        let len = self.file.metadata().context("the pages file")?.len();
        let crc = match (crc, self.digest.take()) {
            (Some(crc), _) => crc,
            (None, Some(RawDigest::Follower(d))) => d.finish(len).context("checksumming the pages file")?,
            (None, Some(RawDigest::Running(h))) => h.finalize(),
            (None, None) => unreachable!("raw mode has a digest"),
        };
        let mut runs = std::mem::take(&mut self.runs);
        runs.sort_by_key(|r| r.vaddr);
        Ok(Written { runs, compression, len, crc, zero_pages: self.zero_pages })
    }
}

/// Bytes of the process in a piece: which chosen run they belong to, where
/// they lie, and whether zero pages among them may be dropped.
pub struct Seg {
    pub group: usize,
    pub vaddr: u64,
    pub len: usize,
    pub origin: PageOrigin,
    pub dedupe: bool,
}

/// A buffer of pages and what they are, in order.
pub struct Piece {
    pub buf: Vec<u8>,
    pub segs: Vec<Seg>,
}

/// What a sink wrote: the page runs (sorted by address), how the file is
/// compressed, its length and CRC32, and how many zero pages it dropped.
pub struct Written {
    pub runs: Vec<PageRun>,
    pub compression: Option<Compression>,
    pub len: u64,
    pub crc: u32,
    pub zero_pages: u64,
}

/// Pieces in flight between the reader and the sink's thread.
const PIECES: usize = 4;

/// Piece buffers the sink's thread is done with, handed back for the next
/// pieces so that they are not allocated again; the bounded channels bound
/// how many live.
struct Spares {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    piece_bytes: usize,
}

impl Spares {
    /// The end the sink's thread hands buffers back through, and this one.
    fn new(piece_bytes: usize) -> (SyncSender<Vec<u8>>, Spares) {
        let (tx, rx) = sync_channel::<Vec<u8>>(PIECES + 2);
        (tx, Spares { rx, piece_bytes })
    }

    fn buffer(&self) -> Vec<u8> {
        self.rx.try_recv().unwrap_or_else(|_| vec![0u8; self.piece_bytes])
    }
}

/// Raw pages go straight from the page pipe to the file (splice, no copy
/// through cryo): the parasite says beforehand which pages are all zero.
/// Compressed pages pass through cryo's memory, in pieces that a thread of
/// the sink looks at, compresses and writes. Raw pages that cryo reads
/// into pieces itself are looked at by the reading thread and written
/// behind it.
pub enum Sink {
    Direct(Core),
    Threaded(Threaded),
    Behind(Box<Behind>),
}

/// Raw pages read into pieces by cryo: the reading thread looks at each
/// piece (zero pages, runs, checksum) while the piece is in its CPU's
/// cache, and a thread of its own writes what is kept, so that reading and
/// writing overlap. Looked at on the writing thread instead, a piece would
/// come from the other CPU's cache, as slow as from memory.
pub struct Behind {
    core: Core,
    writer: Writer,
    spares: Spares,
}

/// The thread writing behind, and the way to it.
struct Writer {
    tx: Option<SyncSender<Kept>>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// A piece's spans to write, one after the other, from offset `at` on.
struct Kept {
    buf: Vec<u8>,
    spans: Vec<Range<usize>>,
    at: u64,
}

impl Behind {
    fn start(core: Core, piece_bytes: usize) -> Behind {
        let (tx, rx) = sync_channel::<Kept>(PIECES);
        let (spare_tx, spares) = Spares::new(piece_bytes);
        let (file, prealloc) = (core.file.clone(), core.prealloc);
        let thread = std::thread::spawn(move || {
            for Kept { buf, spans, mut at } in rx {
                reserve(&file, prealloc, at, spans.iter().map(|r| r.len() as u64).sum());
                for r in spans {
                    file.write_all_at(&buf[r.clone()], at).context("writing pages to the image")?;
                    at += r.len() as u64;
                }
                let _ = spare_tx.try_send(buf);
            }
            Ok(())
        });
        Behind { core, writer: Writer { tx: Some(tx), thread: Some(thread) }, spares }
    }

    fn send(&mut self, piece: Piece) -> Result<()> {
        let at = self.core.raw;
        let spans = self.core.look(&piece);
        let sent = self.writer.tx.as_ref().is_some_and(|tx| tx.send(Kept { buf: piece.buf, spans, at }).is_ok());
        if sent {
            return Ok(());
        }
        // The thread stopped: its error says why.
        Err(self.writer.join().err().unwrap_or_else(|| anyhow!("the thread writing pages stopped")))
    }

    fn finish(self) -> Result<Written> {
        let Behind { core, mut writer, .. } = self;
        writer.join()?;
        core.written()
    }
}

impl Writer {
    fn join(&mut self) -> Result<()> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(anyhow!("the thread writing pages panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

pub struct Threaded {
    tx: Option<SyncSender<Piece>>,
    spares: Spares,
    thread: Option<JoinHandle<Result<Written>>>,
}

impl Sink {
    /// A sink writing `file`; pieces hold up to `piece_bytes`.
    pub fn new(file: File, codec: Option<Codec>, ps: u64, piece_bytes: usize) -> Result<Sink> {
        if codec.is_none() {
            return Ok(Sink::Direct(Core::new(file, codec, ps, true)?));
        }
        Sink::threaded(file, codec, ps, piece_bytes)
    }

    /// A sink whose thread writes the pieces: always so when compressing,
    /// and for raw pages read into its pieces by cryo itself (a pre-copy's
    /// first pass, a frozen process's memory), so that reading and writing
    /// overlap ([`Behind`]).
    pub fn threaded(file: File, codec: Option<Codec>, ps: u64, piece_bytes: usize) -> Result<Sink> {
        let mut core = Core::new(file, codec, ps, false)?;
        if codec.is_none() {
            return Ok(Sink::Behind(Box::new(Behind::start(core, piece_bytes))));
        }
        let (tx, rx) = sync_channel::<Piece>(PIECES);
        let (spare_tx, spares) = Spares::new(piece_bytes);
        let thread = std::thread::spawn(move || {
            for piece in rx {
                let mut at = 0;
                for s in &piece.segs {
                    core.push(s.group, s.vaddr, &piece.buf[at..at + s.len], s.origin, s.dedupe)?;
                    at += s.len;
                }
                let _ = spare_tx.try_send(piece.buf);
            }
            core.written()
        });
        Ok(Sink::Threaded(Threaded { tx: Some(tx), spares, thread: Some(thread) }))
    }

    /// Where spliced pages go: the file and the offset of the next raw byte
    /// (Direct mode only).
    pub fn splice_target(&self) -> Option<(Arc<File>, u64)> {
        match self {
            Sink::Direct(core) => Some((core.file.clone(), core.raw)),
            Sink::Threaded(_) | Sink::Behind(_) => None,
        }
    }

    /// Pieces are looked at by the caller's thread and written behind it.
    pub fn writes_behind(&self) -> bool {
        matches!(self, Sink::Behind(_))
    }

    /// `len` bytes are about to be spliced at `at` (Direct mode): reserve
    /// their blocks where that makes writing them cheaper. Only a hint.
    pub fn reserve(&self, at: u64, len: u64) {
        if let Sink::Direct(core) = self {
            reserve(&core.file, core.prealloc, at, len);
        }
    }

    /// Pages were spliced into the file up to `end` (Direct mode).
    pub fn written_to(&self, end: u64) {
        if let Sink::Direct(core) = self {
            core.written_to(end);
        }
    }

    /// Note pages about to be spliced at the end of the file (Direct mode),
    /// or zero pages left out.
    pub fn spliced(&mut self, group: usize, vaddr: u64, len: u64, origin: PageOrigin) {
        if let Sink::Direct(core) = self {
            core.record(group, vaddr, len, origin);
        }
    }

    pub fn skipped_zero_pages(&mut self, n: u64) {
        if let Sink::Direct(core) = self {
            core.zero_pages += n;
        }
    }

    /// An empty buffer of `piece_bytes` for the next piece: one the thread
    /// is done with, or a new one (the bounded channel bounds how many live).
    pub fn buffer(&mut self) -> Vec<u8> {
        match self {
            Sink::Threaded(t) => t.spares.buffer(),
            Sink::Behind(b) => b.spares.buffer(),
            Sink::Direct(_) => vec![0u8; PIECE_DIRECT],
        }
    }

    pub fn send(&mut self, piece: Piece) -> Result<()> {
        let t = match self {
            Sink::Threaded(t) => t,
            Sink::Behind(b) => return b.send(piece),
            Sink::Direct(core) => {
                let mut at = 0;
                for s in &piece.segs {
                    core.push(s.group, s.vaddr, &piece.buf[at..at + s.len], s.origin, s.dedupe)?;
                    at += s.len;
                }
                return Ok(());
            }
        };
        let sent = t.tx.as_ref().map(|tx| tx.send(piece).is_ok()).unwrap_or(false);
        if sent {
            return Ok(());
        }
        // The thread stopped: its error says why.
        t.tx = None;
        match t.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => Err(e),
            _ => Err(anyhow!("the thread writing pages stopped")),
        }
    }

    /// Send a copy of `data` (whole pages at `vaddr`).
    pub fn push(&mut self, group: usize, vaddr: u64, data: &[u8], origin: PageOrigin, dedupe: bool) -> Result<()> {
        let piece_bytes = match self {
            Sink::Direct(core) => return core.push(group, vaddr, data, origin, dedupe),
            Sink::Threaded(t) => t.spares.piece_bytes,
            Sink::Behind(b) => b.spares.piece_bytes,
        };
        for (i, chunk) in data.chunks(piece_bytes).enumerate() {
            let mut buf = self.buffer();
            buf[..chunk.len()].copy_from_slice(chunk);
            let vaddr = vaddr + (i * piece_bytes) as u64;
            self.send(Piece { buf, segs: vec![Seg { group, vaddr, len: chunk.len(), origin, dedupe }] })?;
        }
        Ok(())
    }

    /// Wait until every page is written.
    pub fn finish(self) -> Result<Written> {
        match self {
            Sink::Direct(core) => core.written(),
            Sink::Behind(b) => (*b).finish(),
            Sink::Threaded(mut t) => {
                t.tx = None;
                match t.thread.take().map(|t| t.join()) {
                    Some(Ok(r)) => r,
                    _ => Err(anyhow!("the thread writing pages panicked")),
                }
            }
        }
    }
}

/// Buffer size for pieces in Direct mode (only reads through /proc/PID/mem).
const PIECE_DIRECT: usize = 1 << 20;

impl Drop for Threaded {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Workers {
    fn start(codec: Codec, file: Arc<File>) -> Workers {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        // Frames in flight: bounded, so memory does not grow with the process.
        let (tx, rx) = sync_channel::<(usize, Vec<u8>)>(n);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let spare = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..n)
            .map(|_| {
                let (rx, shared, spare, file) = (rx.clone(), shared.clone(), spare.clone(), file.clone());
                std::thread::spawn(move || loop {
                    let Ok((i, raw)) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else { return };
                    let done = codec::compress(codec, &raw).and_then(|c| {
                        let off = {
                            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                            let off = s.file_len;
                            s.file_len += c.len() as u64;
                            off
                        };
                        file.write_all_at(&c, off)?;
                        Ok((off, c.len() as u32, crc32fast::hash(&c)))
                    });
                    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                    match done {
                        Ok((off, len, crc)) => {
                            if s.frames.len() <= i {
                                s.frames.resize(i + 1, None);
                            }
                            s.frames[i] = Some((off, len));
                            s.crcs.push((off, len as u64, crc));
                        }
                        Err(e) => {
                            s.error.get_or_insert_with(|| format!("compressing pages: {e}"));
                            return;
                        }
                    }
                    drop(s);
                    spare.lock().unwrap_or_else(|e| e.into_inner()).push(raw);
                })
            })
            .collect();
        Workers { tx: Some(tx), threads, shared, spare }
    }

    fn error(&self) -> Option<anyhow::Error> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).error.clone().map(|e| anyhow!(e))
    }

    /// Wait for every frame; their places in the file, in raw order, and
    /// the file's CRC32.
    fn join(&mut self) -> Result<(Vec<(u64, u32)>, u32)> {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(e) = self.error() {
            return Err(e);
        }
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let frames = s.frames.iter().enumerate().map(|(i, f)| f.ok_or_else(|| anyhow!("frame {i} of the pages was not written"))).collect::<Result<_>>()?;
        let crc = digest::combine(std::mem::take(&mut s.crcs)).ok_or_else(|| anyhow!("the compressed frames do not fill the pages file"))?;
        Ok((frames, crc))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_pages_are_dropped_and_runs_follow_the_raw_stream() {
        let dir = std::env::temp_dir().join(format!("cryo-sink-{}", std::process::id()));
        let ps = 4096u64;
        // Raw pages spliced (Direct, here appended), raw pages in pieces
        // written behind, compressed pages.
        for (codec, behind) in [(None, false), (None, true), (Some(Codec::Lz4), false)] {
            let path = dir.with_extension(format!("{}{behind}", codec.map_or("raw", |c| c.name())));
            let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
            let mut sink = if behind { Sink::threaded(file, codec, ps, 64 << 10) } else { Sink::new(file, codec, ps, 64 << 10) }.unwrap();
            assert_eq!(matches!(sink, Sink::Behind(_)), behind);
            let mut data = vec![0u8; 4 * ps as usize];
            data[0] = 1; // page 0 kept, 1 and 2 zero, 3 kept
            data[3 * ps as usize + 5] = 7;
            sink.push(0, 0x10000, &data, PageOrigin::Here, true).unwrap();
            sink.push(1, 0x14000, &vec![0u8; ps as usize], PageOrigin::Here, false).unwrap();
            sink.push(2, 0x20000, &vec![0u8; ps as usize], PageOrigin::Reference, false).unwrap();
            let Written { runs, compression: comp, zero_pages, len, crc } = sink.finish().unwrap();
            assert_eq!(zero_pages, 2);
            let file = std::fs::read(&path).unwrap();
            assert_eq!((len, crc), (file.len() as u64, crc32fast::hash(&file)));
            let pr = |vaddr, npages, file_offset, origin| PageRun { vaddr, npages, file_offset, origin };
            assert_eq!(
                runs,
                vec![
                    pr(0x10000, 1, 0, PageOrigin::Here),
                    pr(0x13000, 1, ps, PageOrigin::Here),
                    pr(0x14000, 1, 2 * ps, PageOrigin::Here),
                    pr(0x20000, 1, 3 * ps, PageOrigin::Reference)
                ]
            );
            let mut r = codec::PagesReader::new(File::open(&path).unwrap(), comp);
            let mut page = vec![0u8; ps as usize];
            r.read_exact_at(&mut page, ps).unwrap();
            assert_eq!(page[5], 7);
            let _ = std::fs::remove_file(&path);
        }
    }
}
