//! `cryo migrate --postcopy`: the tree runs on B before its memory crossed.
//!
//! A freezes the tree and sends only the image's metadata; the pages stay in
//! A's frozen tree. B rebuilds the tree, asking A for the pages it needs
//! before the tree runs (stacks, code, shared memory: `want` lines on B's
//! status channel, answered by `pages` pieces on the stream), says `ready`,
//! gets `commit`, lets the tree run and says `running`; from then on its
//! lazy restart asks for the rest as the tree touches it and in the
//! background, and says `complete` once it has every byte of every pages
//! file. Only then does A kill its tree.
//!
//! If anything fails before `complete`, A resumes its frozen tree, unless
//! every byte had been sent (B may have the whole tree then: A kills its own
//! and says so). B's copy, short of pages, dies when the channel goes: its
//! next fetch fails and it kills the tree it started, or cryo's death takes
//! it along (PTRACE_O_EXITKILL).

use super::{protocol, Options, Remote, RoundReport, RESTORE_TIMEOUT};
use crate::dump;
use crate::streaming::{Input, Staging};
use anyhow::{anyhow, bail, Context, Result};
use cryo_image::stream::LiveMemory;
use cryo_image::{ImageReader, ProcessState};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read};
use std::path::Path;
use std::time::Instant;

/// The most one `want` may ask for (B asks for 4 MiB at most).
const MAX_PIECE: usize = 64 << 20;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Default)]
pub struct Report {
    /// Bytes of pages sent before the tree ran on B.
    pub before_running: u64,
    /// Bytes of pages sent after.
    pub after_running: u64,
    /// From the freeze to B's `complete`.
    pub complete_us: u64,
}

/// Which bytes of a file were moved: sorted, disjoint [start, end) ranges.
#[derive(Default)]
pub struct Coverage(BTreeMap<u64, u64>);

impl Coverage {
    pub fn add(&mut self, start: u64, len: u64) {
        let (mut lo, mut hi) = (start, start + len);
        let touching: Vec<(u64, u64)> = self.0.range(..=hi).rev().take_while(|&(_, &e)| e >= lo).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            self.0.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        if hi > lo {
            self.0.insert(lo, hi);
        }
    }

    /// The ranges of [0, len) not covered.
    pub fn missing(&self, len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for (&s, &e) in &self.0 {
            if s > at {
                out.push((at, s.min(len)));
            }
            at = at.max(e);
        }
        if at < len {
            out.push((at, len));
        }
        out.retain(|r| r.1 > r.0);
        out
    }
}

/// A: a pages file of the frozen tree, as its runs lie in memory.
struct LiveFile {
    pid: i32,
    /// (file offset, address, length), by file offset, without gaps.
    runs: Vec<(u64, u64, u64)>,
    len: u64,
    sent: Coverage,
}

/// A's side: answers B's `want`s from the frozen tree's memory.
struct Sender<'a> {
    memory: &'a dyn LiveMemory,
    files: HashMap<String, LiveFile>,
    buf: Vec<u8>,
    committed: bool,
    running_at: Option<Instant>,
    remote_pid: i32,
    report: Report,
}

impl<'a> Sender<'a> {
    fn new(dir: &Path, memory: &'a dyn LiveMemory) -> Result<Sender<'a>> {
        let img = ImageReader::open(dir)?;
        let ps = img.inventory.page_size;
        let mut files = HashMap::new();
        for e in img.inventory.processes.iter().filter(|e| e.state == ProcessState::Live) {
            let p = img.read_process_meta(e.pid)?;
            let mut runs: Vec<_> = p.pages.iter().filter(|r| r.origin.in_pages_file()).map(|r| (r.file_offset, r.vaddr, r.npages * ps)).collect();
            runs.sort();
            files.insert(cryo_image::pages_file(p.pid), LiveFile { pid: p.pid, runs, len: p.pages_bytes, sent: Coverage::default() });
        }
        Ok(Sender { memory, files, buf: Vec::new(), committed: false, running_at: None, remote_pid: 0, report: Report::default() })
    }

    /// Could B have every page? (Then A must not resume its copy.)
    fn everything_sent(&self) -> bool {
        self.files.values().all(|f| f.sent.missing(f.len).is_empty())
    }

    /// Serves B until it says `complete`.
    fn serve(&mut self, ssh: &mut Remote, frozen: Instant) -> Result<()> {
        loop {
            let waiting = if self.running_at.is_some() { "complete" } else { "ready" };
            // Once B's tree runs, B asks until it is complete or gone: no
            // timeout could tell A that B's copy stopped.
            let timeout = if self.committed { std::time::Duration::MAX } else { RESTORE_TIMEOUT };
            let (word, rest) = ssh.status(waiting, timeout)?;
            match word.as_str() {
                "want" => self.send(ssh, &rest)?,
                "ready" => {
                    self.remote_pid = rest.trim().parse().unwrap_or(0);
                    self.committed = true;
                    ssh.say(protocol::COMMIT)?;
                }
                "running" if self.committed => {
                    self.running_at = Some(Instant::now());
                    tracing::debug!("post-copy: the tree runs on {} after {:.1} ms", ssh.host, frozen.elapsed().as_secs_f64() * 1000.0);
                }
                "complete" if self.running_at.is_some() => {
                    self.report.complete_us = frozen.elapsed().as_micros() as u64;
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    fn send(&mut self, ssh: &mut Remote, want: &str) -> Result<()> {
        let bad = || anyhow!("{} asked for pages with {want:?}: is it the same cryo version?", ssh.host);
        let mut parts = want.split(' ');
        let (Some(name), Some(offset), Some(len), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
        let (Ok(offset), Ok(len)) = (offset.parse::<u64>(), len.parse::<usize>()) else { return Err(bad()) };
        let file = self.files.get_mut(name).ok_or_else(bad)?;
        if len > MAX_PIECE || offset.checked_add(len as u64).is_none_or(|end| end > file.len) {
            return Err(bad());
        }
        self.buf.resize(len, 0);
        read_live(self.memory, file, offset, &mut self.buf)?;
        file.sent.add(offset, len as u64);
        ssh.send_piece(&protocol::pages(name, offset, len, crc32fast::hash(&self.buf)), &self.buf)?;
        match self.running_at {
            Some(_) => self.report.after_running += len as u64,
            None => self.report.before_running += len as u64,
        }
        Ok(())
    }
}

/// Bytes [offset, offset + buf.len()) of a pages file, from the frozen process.
fn read_live(memory: &dyn LiveMemory, f: &LiveFile, offset: u64, buf: &mut [u8]) -> Result<()> {
    let end = offset + buf.len() as u64;
    let mut at = offset;
    let first = f.runs.partition_point(|r| r.0 + r.2 <= offset);
    for &(off, vaddr, len) in &f.runs[first..] {
        if at >= end {
            break;
        }
        if off > at {
            bail!("process {}: its pages file has a gap at {at}, so its pages cannot be read from memory", f.pid);
        }
        let n = (off + len).min(end) - at;
        let dst = &mut buf[(at - offset) as usize..(at - offset + n) as usize];
        memory.read(f.pid, vaddr + (at - off), dst).with_context(|| format!("reading process {}'s memory at {:#x}", f.pid, vaddr + (at - off)))?;
        at += n;
    }
    if at < end {
        bail!("process {}: {} bytes asked past its pages", f.pid, end - at);
    }
    Ok(())
}

/// `cryo migrate --postcopy` once B said hello.
pub(super) fn run(o: &Options, ssh: Remote, t0: Instant) -> Result<super::Report> {
    let staging = Staging::new()?;
    let ssh = RefCell::new(ssh);
    let sent = Cell::new(0);
    let outcome = RefCell::new(None);
    // Lost B after every byte went: the tree is killed here all the same.
    let lost_after_all = RefCell::new(None);
    let hold = |held: &dump::Held| -> Result<()> {
        let memory = held.memory.context("the frozen tree's memory is not at hand")?;
        let mut ssh = ssh.borrow_mut();
        // The image's pages files are not in `dir`: this sends the metadata.
        sent.set(ssh.send(held.dir, None)?);
        let mut sender = Sender::new(held.dir, memory)?;
        let served = sender.serve(&mut ssh, held.frozen);
        let everything = sender.everything_sent();
        let (down, report, remote) = (sender.running_at.map(|r| r - held.frozen), sender.report, sender.remote_pid);
        *outcome.borrow_mut() = Some((down, report, remote));
        match served {
            Ok(()) => Ok(()),
            Err(e) if sender.committed && everything => {
                *lost_after_all.borrow_mut() = Some(e);
                Ok(())
            }
            Err(e) if sender.committed => {
                // B's copy dies without its pages once the channel is gone.
                ssh.abandon();
                Err(e.context(format!("the copy on {} ran without all of its memory and stops", o.to)))
            }
            Err(e) => Err(e),
        }
    };
    let checkpoint = dump::checkpoint(&dump::Options {
        pid: o.pid,
        out: staging.image(),
        kill: true,
        tcp_close: o.tcp_close,
        hold: Some(&hold),
        direct: false,
        parent: None,
        track: false,
        compress: None,
        killed: None,
        pages_in_tree: true,
        inherit: false,
        pre_copy: dump::PreCopy::No,
        jobs: None,
    });
    let mut ssh = ssh.into_inner();
    let checkpoint = match checkpoint {
        Ok(c) => c,
        Err(e) => {
            ssh.abandon();
            return Err(e.context(format!("migration to {} failed; the process runs on here from where it was frozen", o.to)));
        }
    };
    ssh.finish();
    let (down, postcopy, remote_pid) = outcome.into_inner().unwrap_or_default();
    if let Some(e) = lost_after_all.into_inner() {
        bail!(
            "{e}; every page had been sent to {}, so the tree was killed here: check on {} (pid {remote_pid}) that it runs there",
            o.to,
            o.to
        );
    }
    let downtime_us = down.map_or(0, |d| d.as_micros() as u64);
    let stream_bytes = sent.get() + postcopy.before_running + postcopy.after_running;
    Ok(super::Report {
        pid: o.pid,
        host: o.to.clone(),
        remote_pid,
        downtime_us,
        stream_bytes,
        total_us: t0.elapsed().as_micros() as u64,
        rounds: vec![RoundReport { pages_bytes: checkpoint.bytes, stream_bytes, frozen_us: downtime_us, total_us: checkpoint.total_us }],
        postcopy: Some(postcopy),
    })
}

/// B's side: fetches pieces of the pages files from A over the channel.
pub struct Fetcher<'a> {
    input: &'a Input,
    say: &'a dyn Fn(String),
    /// Pages file name → its length.
    files: HashMap<String, u64>,
    have: RefCell<HashMap<String, Coverage>>,
}

fn fetch_err(what: String) -> cryo_image::ImageError {
    cryo_image::ImageError::Stream(what)
}

impl<'a> Fetcher<'a> {
    /// For the image whose metadata is in `dir`.
    pub fn new(input: &'a Input, say: &'a dyn Fn(String), dir: &Path) -> Result<Fetcher<'a>> {
        let img = ImageReader::open(dir)?;
        let mut files = HashMap::new();
        for e in img.inventory.processes.iter().filter(|e| e.state == ProcessState::Live) {
            files.insert(cryo_image::pages_file(e.pid), img.read_process_meta(e.pid)?.pages_bytes);
        }
        Ok(Fetcher { input, say, files, have: RefCell::new(HashMap::new()) })
    }

    fn fetch(&self, name: &str, offset: u64, buf: &mut [u8]) -> cryo_image::Result<()> {
        let len = *self.files.get(name).ok_or_else(|| fetch_err(format!("{name} is no pages file of this image")))?;
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > len) {
            return Err(fetch_err(format!("{name}: {} bytes at {offset} run past its end", buf.len())));
        }
        (self.say)(protocol::want(name, offset, buf.len()));
        let mut input = self.input.borrow_mut();
        let mut line = String::new();
        let gone = |e: std::io::Error| fetch_err(format!("fetching pages from the sending side: {e}"));
        if input.read_line(&mut line).map_err(gone)? == 0 {
            return Err(fetch_err("the connection to the sending side ended while pages were still missing".into()));
        }
        let header = protocol::parse(&line).filter(|(w, _)| *w == "pages").and_then(|(_, rest)| rest.rsplit_once(' '));
        let Some((what, crc)) = header else {
            return Err(fetch_err(format!("expected pages from the sending side, got {:?}: the stream is damaged", line.trim())));
        };
        if what != format!("{name} {offset} {}", buf.len()) {
            return Err(fetch_err(format!("asked for {name} at {offset}, got {what}: the stream is damaged")));
        }
        input.read_exact(buf).map_err(gone)?;
        if crc.parse::<u32>().ok() != Some(crc32fast::hash(buf)) {
            return Err(fetch_err(format!("{name} at {offset}: the pages arrived damaged (checksum mismatch)")));
        }
        self.have.borrow_mut().entry(name.to_string()).or_default().add(offset, buf.len() as u64);
        Ok(())
    }
}

impl cryo_restorer::PagesOnDemand for Fetcher<'_> {
    fn read(&self, path: &Path, offset: u64, buf: &mut [u8]) -> cryo_image::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        self.fetch(name, offset, buf)
    }

    fn released(&self, root: i32) {
        (self.say)(protocol::running(root));
    }

    /// Also takes the bytes no page needed (zero pages' gaps, the vDSO
    /// copy if unread): A resumes its copy unless it sent every byte.
    fn complete(&self) -> cryo_image::Result<()> {
        let mut rest = Vec::new();
        for (name, &len) in &self.files {
            let missing = self.have.borrow().get(name).map_or_else(|| vec![(0, len)], |c| c.missing(len));
            rest.extend(missing.into_iter().map(|r| (name.clone(), r)));
        }
        let mut buf = Vec::new();
        for (name, (mut at, end)) in rest {
            while at < end {
                let n = (end - at).min(4 << 20);
                buf.resize(n as usize, 0);
                self.fetch(&name, at, &mut buf)?;
                at += n;
            }
        }
        (self.say)(protocol::complete());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Coverage;

    #[test]
    fn coverage_merges_and_finds_holes() {
        let mut c = Coverage::default();
        assert_eq!(c.missing(10), vec![(0, 10)]);
        c.add(2, 3);
        c.add(7, 1);
        assert_eq!(c.missing(10), vec![(0, 2), (5, 7), (8, 10)]);
        c.add(4, 4);
        assert_eq!(c.missing(10), vec![(0, 2), (8, 10)]);
        c.add(0, 2);
        c.add(8, 2);
        assert!(c.missing(10).is_empty());
        assert_eq!(c.0.len(), 1, "merged into one range");
    }
}
