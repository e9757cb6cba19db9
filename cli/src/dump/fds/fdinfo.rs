//! What /proc/PID/fdinfo/FD says beyond pos and flags: the state of kernel
//! objects (eventfd, timerfd, signalfd, epoll, inotify) and the locks held
//! through the fd.

use anyhow::{bail, Result};
use cryo_image::{EpollWatch, FdTarget, FileLock, LockKind};

/// The value of a `key: value` line.
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// `key:value` pairs of one line, as epoll and inotify print their watches.
fn pairs(line: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut toks = line.split_whitespace().peekable();
    std::iter::from_fn(move || loop {
        let t = toks.next()?;
        if let Some((k, v)) = t.split_once(':') {
            if !v.is_empty() {
                return Some((k, v));
            }
            // "tfd:        5": the value is the next token.
            return toks.next().map(|v| (k, v));
        }
    })
}

/// The pid a pidfd refers to, as cryo's /proc shows it: -1 once that
/// process was reaped.
pub fn pidfd_pid(info: &str) -> Option<i32> {
    field(info, "Pid")?.parse().ok()
}

pub fn eventfd(info: &str) -> Option<FdTarget> {
    let count = hex(field(info, "eventfd-count")?)?;
    let semaphore = field(info, "eventfd-semaphore").is_some_and(|v| v == "1");
    Some(FdTarget::EventFd { count, semaphore })
}

/// "(sec, nsec)" as printed for it_value and it_interval.
fn timespec_ns(s: &str) -> Option<u64> {
    let (sec, nsec) = s.trim_start_matches('(').trim_end_matches(')').split_once(',')?;
    Some(sec.trim().parse::<u64>().ok()? * 1_000_000_000 + nsec.trim().parse::<u64>().ok()?)
}

const TFD_TIMER_ABSTIME: u32 = 1;
const TFD_TIMER_CANCEL_ON_SET: u32 = 2;

/// `now_realtime_ns`: CLOCK_REALTIME as `info` was read, to turn the time
/// left of a timer set for a time of day back into that time.
pub fn timerfd(info: &str, now_realtime_ns: u64) -> Option<FdTarget> {
    let clock: i32 = field(info, "clockid")?.parse().ok()?;
    let value_ns = timespec_ns(field(info, "it_value")?)?;
    // Printed in octal ("settime flags: 03"); missing before Linux 3.17.
    let flags = field(info, "settime flags").and_then(|f| u32::from_str_radix(f, 8).ok()).unwrap_or(0);
    let of_day = matches!(clock, libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_ALARM) && flags & TFD_TIMER_ABSTIME != 0 && value_ns > 0;
    Some(FdTarget::TimerFd {
        clock,
        ticks: field(info, "ticks")?.parse().ok()?,
        value_ns,
        interval_ns: timespec_ns(field(info, "it_interval")?)?,
        realtime_at_ns: of_day.then_some(now_realtime_ns + value_ns),
        cancel_on_set: of_day && flags & TFD_TIMER_CANCEL_ON_SET != 0,
    })
}

pub fn signalfd(info: &str) -> Option<FdTarget> {
    Some(FdTarget::SignalFd { mask: hex(field(info, "sigmask")?)? })
}

/// An epoll watch: the fd number it was added with, and the inode of the
/// file it watches (to check that the fd still refers to that file).
pub struct EpollLine {
    pub watch: EpollWatch,
    pub inode: u64,
}

pub fn epoll(info: &str) -> Vec<EpollLine> {
    info.lines()
        .filter(|l| l.starts_with("tfd:"))
        .filter_map(|l| {
            let mut w = EpollLine { watch: EpollWatch { fd: -1, events: 0, data: 0 }, inode: 0 };
            for (k, v) in pairs(l) {
                match k {
                    "tfd" => w.watch.fd = v.parse().ok()?,
                    "events" => w.watch.events = hex(v)? as u32,
                    "data" => w.watch.data = hex(v)?,
                    "ino" => w.inode = hex(v)?,
                    _ => {}
                }
            }
            Some(w)
        })
        .collect()
}

/// An inotify watch as fdinfo shows it: the watched inode, not its path.
pub struct InotifyLine {
    pub wd: i32,
    pub inode: u64,
    /// Kernel dev_t (major << 20 | minor).
    pub sdev: u64,
    pub mask: u32,
}

pub fn inotify(info: &str) -> Vec<InotifyLine> {
    info.lines()
        .filter_map(|l| l.strip_prefix("inotify "))
        .filter_map(|l| {
            let mut w = InotifyLine { wd: 0, inode: 0, sdev: 0, mask: 0 };
            for (k, v) in pairs(l) {
                match k {
                    "wd" => w.wd = hex(v)? as i32,
                    "ino" => w.inode = hex(v)?,
                    "sdev" => w.sdev = hex(v)?,
                    "mask" => w.mask = hex(v)? as u32,
                    _ => {}
                }
            }
            Some(w)
        })
        .collect()
}

/// `lock:\t1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF` lines. Leases
/// and delegations cannot be taken back unprivileged: refused.
pub fn locks(info: &str) -> Result<Vec<FileLock>> {
    let mut out = Vec::new();
    for l in info.lines().filter_map(|l| l.strip_prefix("lock:")) {
        let t: Vec<&str> = l.split_whitespace().collect();
        if t.len() < 8 || t[0].starts_with("->") {
            continue;
        }
        let kind = match t[1] {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            other => bail!("holds a {other} lock (lease or delegation), which cryo cannot take back"),
        };
        let write = t[3] == "WRITE";
        let start: u64 = t[6].parse().unwrap_or(0);
        let len = match t[7] {
            "EOF" => 0,
            end => end.parse::<u64>().map(|e| e + 1 - start).unwrap_or(0),
        };
        out.push(FileLock { kind, write, start, len });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_objects_and_locks() {
        let ev = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1\neventfd-count:               2a\neventfd-id: 3\neventfd-semaphore: 1\n";
        assert_eq!(eventfd(ev), Some(FdTarget::EventFd { count: 42, semaphore: true }));
        let tf = "clockid: 1\nticks: 3\nsettime flags: 00\nit_value: (1, 500)\nit_interval: (0, 250000000)\n";
        let monotonic = FdTarget::TimerFd { clock: 1, ticks: 3, value_ns: 1_000_000_500, interval_ns: 250_000_000, realtime_at_ns: None, cancel_on_set: false };
        assert_eq!(timerfd(tf, 7), Some(monotonic));
        let of_day = "clockid: 0\nticks: 0\nsettime flags: 03\nit_value: (60, 0)\nit_interval: (0, 0)\n";
        let Some(FdTarget::TimerFd { realtime_at_ns, cancel_on_set, .. }) = timerfd(of_day, 1_000) else { panic!("not parsed") };
        assert_eq!((realtime_at_ns, cancel_on_set), (Some(60_000_001_000), true));
        let relative = of_day.replace("settime flags: 03", "settime flags: 00");
        let Some(FdTarget::TimerFd { realtime_at_ns, cancel_on_set, .. }) = timerfd(&relative, 1_000) else { panic!("not parsed") };
        assert_eq!((realtime_at_ns, cancel_on_set), (None, false));
        let ep = "pos:\t0\ntfd:        5 events:       19 data:                7  pos:0 ino:1a2b sdev:d\n";
        let w = &epoll(ep)[0];
        assert_eq!((w.watch.fd, w.watch.events, w.watch.data, w.inode), (5, 0x19, 7, 0x1a2b));
        let ino = "inotify wd:2 ino:3e8 sdev:800001 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:e8030000\n";
        let w = &inotify(ino)[0];
        assert_eq!((w.wd, w.inode, w.sdev, w.mask), (2, 1000, 0x800001, 0xfff));
        let lk = "lock:\t1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF\nlock:\t2: POSIX  ADVISORY  READ 1234 08:01:5678 10 19\n";
        let l = locks(lk).unwrap();
        assert_eq!(l[0], FileLock { kind: LockKind::Flock, write: true, start: 0, len: 0 });
        assert_eq!(l[1], FileLock { kind: LockKind::Posix, write: false, start: 10, len: 10 });
    }
}
