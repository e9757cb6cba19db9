//! `cryo migrate PID --to HOST`: move a tree to another host over ssh.
//!
//! A runs `ssh HOST cryo restart - --handshake`; the ssh channel's stdin
//! carries the image stream to B, and B's stdout carries status lines back
//! (see [`protocol`]). The order of events makes the tree run in exactly one
//! place whatever fails:
//!
//! 1. B says `hello` (ssh works, cryo runs there). Only then A freezes.
//! 2. A streams the image; B refuses early (architecture, CPU features,
//!    files) after the metadata, rebuilds the tree's memory as the pages
//!    arrive, verifies every checksum, rebuilds the rest and says
//!    `ready PID` with the tree rebuilt but not yet running.
//! 3. A kills its frozen tree and answers `commit`; B lets its tree run and
//!    says `running PID`.
//!
//! Anything else before `ready` — a refusal, a failed restore, a cut
//! stream, ssh dying — and A lets its tree go on untouched, and B kills what
//! it rebuilt (it sees no `commit`). The one window left is a connection
//! lost between `ready` and `commit`: A has killed its tree and B, without
//! the commit, kills its own; A reports it.
//!
//! With `--precopy`, step 2 is preceded by rounds taken while the tree runs
//! (see [`precopy`]): B rebuilds the tree from the first and brings it up to
//! each later one in place, and the frozen image of step 2 holds only the
//! pages written since the last round.

pub mod postcopy;

use crate::dump;
use crate::streaming::Staging;
use anyhow::{anyhow, bail, Context, Result};
use cryo_tracer::fault;
use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The status lines B writes, and A's answer.
pub mod protocol {
    const TAG: &str = "cryo-migrate";
    pub const VERSION: u32 = 1;
    pub const COMMIT: &str = "commit";

    pub fn hello() -> String {
        format!("{TAG} hello {VERSION}")
    }
    pub fn received(bytes: u64) -> String {
        format!("{TAG} received {bytes}")
    }
    pub fn ready(pid: i32) -> String {
        format!("{TAG} ready {pid}")
    }
    /// Sent by A before each image of a pre-copy.
    pub fn round(k: u32, last: bool) -> String {
        format!("{TAG} round {k} {}", if last { "last" } else { "more" })
    }
    /// B has brought the tree up to round `k`.
    pub fn applied(k: u32) -> String {
        format!("{TAG} applied {k}")
    }
    pub fn running(pid: i32) -> String {
        format!("{TAG} running {pid}")
    }
    pub fn failed(why: &str) -> String {
        format!("{TAG} failed {}", why.replace('\n', " "))
    }
    /// Post-copy: B asks for `len` bytes at `offset` of pages file `name`.
    pub fn want(name: &str, offset: u64, len: usize) -> String {
        format!("{TAG} want {name} {offset} {len}")
    }
    /// Post-copy: A's answer, followed by the bytes.
    pub fn pages(name: &str, offset: u64, len: usize, crc: u32) -> String {
        format!("{TAG} pages {name} {offset} {len} {crc}")
    }
    /// Post-copy: B has every page; A's copy of the tree may go.
    pub fn complete() -> String {
        format!("{TAG} complete")
    }

    /// A status line: its word and the rest.
    pub fn parse(line: &str) -> Option<(&str, &str)> {
        let rest = line.trim_end().strip_prefix(TAG)?.strip_prefix(' ')?;
        Some(rest.split_once(' ').unwrap_or((rest, "")))
    }
}

pub struct Options {
    pub pid: i32,
    pub to: String,
    pub ssh_command: Option<String>,
    pub remote_cryo: String,
    pub allow_changed_files: bool,
    pub tcp_close: bool,
    pub pid_ns: bool,
    pub precopy: bool,
    pub postcopy: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub pid: i32,
    pub host: String,
    /// The restored root's pid on the other host, as seen from outside.
    pub remote_pid: i32,
    /// From the freeze to the other host's "running".
    pub downtime_us: u64,
    pub stream_bytes: u64,
    pub total_us: u64,
    /// The pre-copy rounds sent while the tree ran, then the last one.
    pub rounds: Vec<RoundReport>,
    /// Post-copy: bytes of pages sent once the tree ran on B, and when B
    /// had every page (from the freeze).
    pub postcopy: Option<postcopy::Report>,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy)]
pub struct RoundReport {
    /// Bytes of pages the round's image holds.
    pub pages_bytes: u64,
    pub stream_bytes: u64,
    /// How long the tree was stopped for it (for the last round: the downtime).
    pub frozen_us: u64,
    /// From the round's checkpoint to the other host's "applied" (or "ready").
    pub total_us: u64,
}

/// How long ssh may take to log in and start cryo on the other host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long B may take to receive, check and rebuild the tree.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);
/// Pre-copy rounds sent while the tree runs, at most.
const MAX_ROUNDS: u32 = 8;
/// A round this small (or a fiftieth of the first) is the last one sent
/// while the tree runs: the tree writes little enough now.
const SMALL_ROUND: u64 = 16 << 20;

pub fn run(o: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let mut ssh = Remote::start(o)?;
    ssh.expect("hello", CONNECT_TIMEOUT).map_err(|e| {
        anyhow!("{e}; the process was not touched (check that `ssh {}` works and that {} runs there)", o.to, o.remote_cryo)
    })?;
    if o.postcopy {
        return postcopy::run(o, ssh, t0);
    }
    let staging = Staging::new()?;
    let ssh = RefCell::new(ssh);
    let mut rounds = Vec::new();
    // A failed pre-copy takes the write tracking it started away again.
    let tracked_before = o.precopy.then(|| dump::tracking::TrackedBefore::of(o.pid));
    let untrack = || {
        if let Some(before) = &tracked_before {
            before.take_back();
        }
    };
    let parent = match o.precopy.then(|| precopy(o, &ssh, &staging, &mut rounds)).transpose() {
        Ok(p) => p,
        Err(e) => {
            ssh.borrow_mut().abandon();
            untrack();
            return Err(e.context(format!("migration to {} failed during pre-copy; the process runs on here", o.to)));
        }
    };
    let last_round = rounds.len() as u32;
    let frozen_at = Cell::new(None);
    let sent = Cell::new(0);
    let remote_pid = Cell::new(0);
    let hold = |held: &dump::Held| -> Result<()> {
        frozen_at.set(Some(held.frozen));
        let mut ssh = ssh.borrow_mut();
        if o.precopy {
            ssh.say(&protocol::round(last_round, true))?;
        }
        let t = Instant::now();
        sent.set(ssh.send(held.dir, held.memory)?);
        tracing::debug!("image sent in {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
        ssh.expect("received", RESTORE_TIMEOUT)?;
        let pid = ssh.expect("ready", RESTORE_TIMEOUT)?;
        remote_pid.set(pid.parse().unwrap_or(0));
        Ok(())
    };
    // The tree here can no longer run: B's may, without waiting for this
    // one's memory to be freed. The downtime ends with B's "running".
    let running = RefCell::new(None);
    let downtime = Cell::new(0);
    let killed = || {
        let mut ssh = ssh.borrow_mut();
        let r = ssh.say(protocol::COMMIT).and_then(|()| ssh.expect("running", RESTORE_TIMEOUT));
        downtime.set(frozen_at.get().map_or(0, |f: Instant| f.elapsed().as_micros() as u64));
        *running.borrow_mut() = Some(r);
    };
    let out = if o.precopy { staging.image().with_file_name(format!("round-{last_round}")) } else { staging.image() };
    let checkpoint = dump::checkpoint(&dump::Options {
        pid: o.pid,
        out,
        kill: true,
        tcp_close: o.tcp_close,
        hold: Some(&hold),
        direct: false,
        parent,
        track: false,
        compress: None,
        killed: Some(&killed),
        // The pages cross from the frozen tree to B without a copy on disk.
        // A pre-copy's last round, small, is stored whole by B (and so
        // needs its checksums up front).
        pages_in_tree: !o.precopy,
        inherit: false,
        pre_copy: dump::PreCopy::No,
        jobs: None,
    });
    let mut ssh = ssh.into_inner();
    let checkpoint = match checkpoint {
        Ok(c) => c,
        Err(e) => {
            ssh.abandon();
            untrack();
            return Err(e.context(format!("migration to {} failed; the process runs on here, untouched", o.to)));
        }
    };
    drop(staging);
    // The tree here is gone: from now on B's is the only copy.
    let running = running.into_inner().unwrap_or_else(|| Err(anyhow!("the tree was not killed")));
    let downtime_us = downtime.get();
    ssh.finish();
    let running = running.map_err(|e| {
        anyhow!(
            "{e}; the tree was killed here after {} had rebuilt it, but it did not confirm that it runs there: check on {} (pid {})",
            o.to,
            o.to,
            remote_pid.get()
        )
    })?;
    rounds.push(RoundReport { pages_bytes: checkpoint.bytes, stream_bytes: sent.get(), frozen_us: downtime_us, total_us: checkpoint.total_us });
    Ok(Report {
        pid: o.pid,
        host: o.to.clone(),
        remote_pid: running.parse().unwrap_or(remote_pid.get()),
        downtime_us,
        stream_bytes: rounds.iter().map(|r| r.stream_bytes).sum(),
        total_us: t0.elapsed().as_micros() as u64,
        rounds,
        postcopy: None,
    })
}

/// The rounds of a pre-copy: a tracked checkpoint of the running tree, sent
/// whole, then incremental ones of the pages written meanwhile, until a
/// round is small or no smaller than the one before. Each waits for B to
/// have applied it, so that the last round, taken frozen, finds B ready.
/// Returns the image the last round is to be incremental against.
fn precopy(o: &Options, ssh: &RefCell<Remote>, staging: &Staging, rounds: &mut Vec<RoundReport>) -> Result<std::path::PathBuf> {
    let mut parent: Option<std::path::PathBuf> = None;
    for k in 0..MAX_ROUNDS {
        let t = Instant::now();
        let dir = staging.image().with_file_name(format!("round-{k}"));
        let s = dump::checkpoint(&dump::Options {
            pid: o.pid,
            out: dir.clone(),
            kill: false,
            tcp_close: o.tcp_close,
            hold: None,
            direct: false,
            parent: parent.clone(),
            track: true,
            compress: None,
            killed: None,
            pages_in_tree: false,
            inherit: false,
            // The first round copies memory while the tree runs, without a
            // snapshot's fork: B rebuilds the tree from it but runs it only
            // once the last round brought every page up to date.
            pre_copy: if k == 0 { dump::PreCopy::First } else { dump::PreCopy::No },
            jobs: None,
        })
        .with_context(|| format!("pre-copy round {k}"))?;
        let mut remote = ssh.borrow_mut();
        remote.say(&protocol::round(k, false))?;
        let sent = remote.send(&dir, None)?;
        remote.expect("received", RESTORE_TIMEOUT)?;
        remote.expect("applied", RESTORE_TIMEOUT)?;
        drop(remote);
        // B holds the pages now; the next round needs only the metadata.
        remove_pages(&dir);
        if let Some(p) = parent.replace(dir) {
            let _ = std::fs::remove_dir_all(p);
        }
        let first = rounds.first().map_or(s.bytes, |r: &RoundReport| r.pages_bytes);
        let before = rounds.last().map(|r| r.pages_bytes);
        rounds.push(RoundReport { pages_bytes: s.bytes, stream_bytes: sent, frozen_us: s.frozen_us, total_us: t.elapsed().as_micros() as u64 });
        tracing::info!("pre-copy round {k}: {} KiB of pages", s.bytes >> 10);
        if k > 0 && (s.bytes <= SMALL_ROUND || s.bytes * 50 <= first || before.is_some_and(|b| s.bytes * 2 > b)) {
            break;
        }
    }
    parent.context("no pre-copy round was taken")
}

fn remove_pages(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if cryo_image::is_pages_file(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The ssh process running `cryo restart - --handshake` on the other host.
struct Remote {
    child: Child,
    stdin: Option<ChildStdin>,
    status: BufReader<ChildStdout>,
    host: String,
}

impl Remote {
    fn start(o: &Options) -> Result<Remote> {
        let ssh = o.ssh_command.as_deref().unwrap_or("ssh");
        let mut argv = shlex::split(ssh).filter(|a| !a.is_empty()).ok_or_else(|| anyhow!("--ssh-command {ssh:?}: unbalanced quotes"))?;
        if argv.is_empty() {
            bail!("--ssh-command is empty");
        }
        let mut remote = format!("{} restart - --handshake", o.remote_cryo);
        if o.precopy {
            remote.push_str(" --rounds");
        }
        if o.postcopy {
            remote.push_str(" --postcopy");
        }
        if o.allow_changed_files {
            remote.push_str(" --allow-changed-files");
        }
        if !o.pid_ns {
            remote.push_str(" --no-pid-ns");
        }
        argv.push(o.to.clone());
        argv.push(remote);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", argv[0]))?;
        let stdin = child.stdin.take();
        if let Some(s) = &stdin {
            crate::streaming::widen_pipe(std::os::fd::AsFd::as_fd(s));
        }
        let status = BufReader::new(child.stdout.take().context("ssh has no stdout")?);
        Ok(Remote { child, stdin, status, host: o.to.clone() })
    }

    /// A line to B (a protocol line: `round`, `commit`).
    fn say(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the ssh channel is closed")?;
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).with_context(|| format!("sending `{line}` to {}", self.host))
    }

    /// Streams the image in `dir` (its pages read from `memory` where
    /// given) to B; returns the bytes sent.
    fn send(&mut self, dir: &std::path::Path, memory: Option<&dyn cryo_image::stream::LiveMemory>) -> Result<u64> {
        let stdin = self.stdin.as_mut().context("the ssh channel is closed")?;
        match cryo_image::stream::send_image(dir, memory, stdin) {
            Ok(t) => Ok(t.bytes),
            // B stopped reading: its status says why.
            Err(e) => Err(self.why_failed(&e.to_string())),
        }
    }

    /// Waits for the status line `word` and returns the rest of it. A
    /// `failed` line, the end of the channel, a timeout or a signal to cryo
    /// is an error saying why.
    fn expect(&mut self, word: &str, timeout: Duration) -> Result<String> {
        loop {
            let (w, rest) = self.status(word, timeout)?;
            if w == word {
                return Ok(rest);
            }
        }
    }

    /// The next status line from B, its word and the rest (`waiting_for`
    /// names what is awaited, for messages). A `failed` line, the end of the
    /// channel, `timeout` or a signal to cryo is an error saying why.
    fn status(&mut self, waiting_for: &str, timeout: Duration) -> Result<(String, String)> {
        let word = waiting_for;
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(sig) = fault::aborted() {
                bail!("cryo got {}", cryo_tracer::error::signal_name(sig));
            }
            if self.status.buffer().is_empty() && !readable(&self.status, Duration::from_millis(100))? {
                if deadline.is_some_and(|d| Instant::now() > d) {
                    bail!("{} did not answer `{word}` within {} s", self.host, timeout.as_secs());
                }
                continue;
            }
            let mut line = String::new();
            if self.status.read_line(&mut line).context("reading from ssh")? == 0 {
                return Err(self.ended(word));
            }
            match protocol::parse(&line) {
                Some(("failed", why)) => bail!("{}: {why}", self.host),
                Some((w, rest)) => return Ok((w.to_string(), rest.to_string())),
                // Not ours (a login banner, a shell's message): show it.
                None => eprint!("{}: {line}", self.host),
            }
        }
    }

    /// The channel closed before `word`.
    fn ended(&mut self, word: &str) -> anyhow::Error {
        let status = wait_timeout(&mut self.child, Duration::from_secs(5));
        anyhow!("the connection to {} ended before `{word}` ({status})", self.host)
    }

    /// The error after writing to B failed: B's own reason where it gave one.
    fn why_failed(&mut self, write_error: &str) -> anyhow::Error {
        self.stdin.take();
        loop {
            let mut line = String::new();
            match self.status.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(("failed", why)) = protocol::parse(&line) {
                        return anyhow!("{}: {why}", self.host);
                    }
                }
            }
        }
        let status = wait_timeout(&mut self.child, Duration::from_secs(5));
        anyhow!("the image stream to {} broke ({write_error}; ssh {status})", self.host)
    }

    /// Post-copy: a protocol line and the bytes it announces.
    fn send_piece(&mut self, header: &str, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("the ssh channel is closed")?;
        let sent = writeln!(stdin, "{header}").and_then(|()| stdin.write_all(bytes)).and_then(|()| stdin.flush());
        sent.map_err(|e| self.why_failed(&e.to_string()))
    }

    /// Called off: closing B's stdin makes it kill whatever it rebuilt.
    fn abandon(&mut self) {
        self.stdin.take();
        wait_timeout(&mut self.child, Duration::from_secs(10));
    }

    fn finish(mut self) {
        self.stdin.take();
        wait_timeout(&mut self.child, Duration::from_secs(10));
    }
}

fn readable(r: &BufReader<ChildStdout>, timeout: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd { fd: r.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(anyhow!("waiting for ssh: {e}"));
    }
    Ok(n > 0)
}

/// Waits for the ssh process a while, then kills it; says how it ended.
fn wait_timeout(child: &mut Child, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return "killed: it did not exit".into();
            }
        }
    }
}
