//! Periodic checkpoints of a running job (`cryo attach`, `cryo launch`), the
//! DMTCP-style workflow: the job runs untouched between checkpoints; each
//! checkpoint goes to a new image of a series and becomes `latest` only once
//! complete, so a crash at any moment leaves the previous image usable.

use crate::dump;
use anyhow::{bail, Context, Result};
use cryo_image::Series;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub const PIDFILE: &str = "attach.pid";
/// "<n> ok <image>" or "<n> failed <reason>" after the nth checkpoint, for
/// `cryo checkpoint --now` to wait on.
const RESULT: &str = "attach.result";

pub struct Schedule {
    pub interval: Duration,
    pub keep: usize,
    pub dir: PathBuf,
    /// Every Nth image is full; the others are incremental against the one
    /// before. The first image of an attach is always full.
    pub full_every: u32,
    pub compress: Option<cryo_image::codec::Codec>,
    /// Processes dumped at once at most (`checkpoint --jobs`).
    pub jobs: Option<usize>,
    /// Full images are taken with a pre-copy (`checkpoint --precopy`).
    pub precopy: bool,
}

/// The chain of images this attach made: the last one and how many images
/// since the last full one.
#[derive(Default)]
struct Chain {
    last: Option<PathBuf>,
    since_full: u32,
}

/// "10m", "30s", "1h", "500ms", or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration (try 30s, 10m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit '{unit}' in '{s}' (use ms, s, m or h)")),
    };
    if secs <= 0.0 {
        return Err(format!("'{s}' must be longer than zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// UTC wall-clock time for log lines, e.g. 2026-11-21T20:15:35Z.
pub fn stamp() -> String {
    format_unix_ms(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64)
}

pub fn format_unix_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("{} cryo: {}", stamp(), format!($($arg)*)) };
}

/// The signals that steer the loop, blocked so they wait for sigtimedwait
/// (and a checkpoint in progress is never interrupted by them).
fn control_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

fn wait_signal(set: &nix::sys::signal::SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: `set` is a valid sigset, the timespec lives across the call and
    // no siginfo is requested.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

/// How the job is watched: our own child (launch) or any process (attach).
pub enum Job {
    Child(std::process::Child),
    Other(i32),
}

impl Job {
    fn pid(&self) -> i32 {
        match self {
            Job::Child(c) => c.id() as i32,
            Job::Other(p) => *p,
        }
    }

    /// The job's exit code once it has ended.
    fn ended(&mut self) -> Option<i32> {
        match self {
            Job::Child(c) => c.try_wait().ok().flatten().map(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
            }),
            Job::Other(p) => {
                let gone = cryo_tracer::proc::stat(*p).map_or(true, |s| s.state == 'Z' || s.state == 'X');
                gone.then_some(0)
            }
        }
    }
}

struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checkpoint `job` every `interval` until it ends; SIGUSR1 asks for one now,
/// SIGTERM/SIGINT/SIGHUP for a last one before leaving. Returns the job's exit
/// code when it ended, 0 when told to stop.
pub fn run(mut job: Job, s: &Schedule) -> Result<i32> {
    let series = Series::create(&s.dir).with_context(|| format!("opening the image directory {}", s.dir.display()))?;
    let pidfile = s.dir.join(PIDFILE);
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).with_context(|| format!("writing {}", pidfile.display()))?;
    let _pidfile = PidFile(pidfile);
    let set = control_signals();
    set.thread_block().context("blocking the control signals")?;
    say!("watching {} (pid {}), a checkpoint every {:?} into {}", comm(job.pid()), job.pid(), s.interval, s.dir.display());
    let mut next = Instant::now() + s.interval;
    let mut chain = Chain::default();
    loop {
        if let Some(code) = job.ended() {
            say!("the job ended (exit {code}); the latest image stays in {}", s.dir.display());
            return Ok(code);
        }
        let now = Instant::now();
        let wait = next.saturating_duration_since(now).min(Duration::from_millis(200));
        match wait_signal(&set, wait) {
            Some(libc::SIGUSR1) => {
                say!("checkpoint requested (SIGUSR1)");
                take(&series, &mut job, s, &mut chain);
                next = Instant::now() + s.interval;
            }
            Some(sig) => {
                say!("signal {sig}: a last checkpoint, then leaving the job running");
                take(&series, &mut job, s, &mut chain);
                return Ok(0);
            }
            None if Instant::now() >= next => {
                take(&series, &mut job, s, &mut chain);
                next = Instant::now() + s.interval;
            }
            None => {}
        }
    }
}

fn comm(pid: i32) -> String {
    cryo_tracer::proc::status(pid).map(|s| s.name).unwrap_or_else(|_| "?".into())
}

/// One checkpoint into the series. A failure is reported and the loop goes
/// on: the job was left running and the previous image stays the latest.
fn take(series: &Series, job: &mut Job, s: &Schedule, chain: &mut Chain) {
    let keep = s.keep;
    let result = (|| -> Result<PathBuf> {
        let out = series.next_path()?;
        let parent = chain.last.clone().filter(|_| chain.since_full + 1 < s.full_every);
        let opts = dump::Options {
            pid: job.pid(),
            out: out.clone(),
            kill: false,
            tcp_close: false,
            hold: None,
            direct: false,
            parent,
            track: s.full_every > 1,
            compress: s.compress,
            killed: None,
            pages_in_tree: false,
            inherit: true,
            pre_copy: dump::PreCopy::No,
            jobs: s.jobs,
        };
        let sum = if s.precopy && opts.parent.is_none() {
            crate::guard::in_worker(|| dump::precopy::checkpoint(&opts))?
        } else {
            crate::guard::in_worker(|| dump::checkpoint(&opts))?
        };
        series.commit(&out)?;
        chain.since_full = if sum.parent.is_some() { chain.since_full + 1 } else { 0 };
        chain.last = Some(out.clone());
        say!(
            "checkpoint {} complete: {} pages{}, job stopped for {:.1} ms",
            out.display(),
            sum.pages,
            if sum.parent.is_some() { " written since the one before" } else { "" },
            sum.frozen_us as f64 / 1000.0
        );
        Ok(out)
    })();
    // Numbered on from what an earlier attach on this directory reported.
    let n = last_result(series.dir()).0 + 1;
    let line = match &result {
        Ok(p) => format!("{n} ok {}\n", p.display()),
        Err(e) => format!("{n} failed {}\n", crate::one_line(e)),
    };
    let result_file = series.dir().join(RESULT);
    let tmp = series.dir().join(format!(".{RESULT}.tmp"));
    if std::fs::write(&tmp, line).and_then(|_| std::fs::rename(&tmp, &result_file)).is_err() {
        say!("could not write {}", result_file.display());
    }
    match result {
        Ok(_) => match series.prune(keep) {
            Ok(removed) => removed.iter().for_each(|p| say!("removed old image {}", p.display())),
            Err(e) => say!("could not remove old images: {e}"),
        },
        Err(e) if job.ended().is_some() => say!("the job ended during the checkpoint ({})", crate::one_line(&e)),
        Err(e) => say!("checkpoint failed, the previous image stays the latest: {}", crate::one_line(&e)),
    }
}

fn last_result(dir: &Path) -> (u64, String) {
    let text = std::fs::read_to_string(dir.join(RESULT)).unwrap_or_default();
    let (n, rest) = text.trim().split_once(' ').unwrap_or(("0", ""));
    (n.parse().unwrap_or(0), rest.to_string())
}

/// `cryo checkpoint --now DIR`: ask the `cryo attach` working on DIR for a
/// checkpoint and wait for its outcome.
pub fn now(dir: &Path, timeout: Duration) -> Result<PathBuf> {
    let pidfile = dir.join(PIDFILE);
    let text = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("no cryo attach is working on {} ({} unreadable)", dir.display(), pidfile.display()))?;
    let pid: i32 = text.trim().parse().with_context(|| format!("{} holds {text:?}", pidfile.display()))?;
    let (before, _) = last_result(dir);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGUSR1)
        .with_context(|| format!("signalling cryo attach (pid {pid}); is it still running?"))?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let (n, outcome) = last_result(dir);
        if n > before {
            return match outcome.split_once(' ') {
                Some(("ok", image)) => Ok(PathBuf::from(image)),
                Some((_, why)) => bail!("the checkpoint failed (the previous image stays the latest): {why}"),
                None => bail!("cryo attach reported {outcome:?}"),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("cryo attach (pid {pid}) made no new image within {timeout:?}; see its log")
}
