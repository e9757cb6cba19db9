//! State only the target itself can report, collected by the parasite:
//! per process (signal actions, interval timers, umask, brk) and per thread
//! (clear_child_tid, altstack), each in one batch.

use anyhow::Result;
use cryo_image::{ITimer, PosixTimer, Rlimit, SigAction, SigAltStack};
use cryo_injector::{Arg, Batch, Parasite, Remote};
use cryo_tracer::arch::{word, Arch, Native, Sysno};
use cryo_tracer::Seized;

pub struct State {
    pub sigactions: Vec<SigAction>,
    pub itimers: Vec<ITimer>,
    pub umask: u32,
    pub brk: u64,
    pub child_subreaper: bool,
    pub thp_disable: u32,
    pub mlockall: u32,
}

/// What each thread reports about itself.
pub struct ThreadState {
    pub clear_child_tid: u64,
    pub sigaltstack: SigAltStack,
}

const PR_GET_TID_ADDRESS: u64 = 40;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_GET_THP_DISABLE: u64 = 42;
pub const NSIG: usize = 64;

/// Kernel `struct sigaction`: handler, flags, restorer (words), then a 64-bit mask.
pub fn sigaction_size() -> usize {
    3 * word() + 8
}

pub fn collect(seized: &mut Seized, remote: &mut Remote, parasite: &mut Parasite) -> Result<State> {
    let w = word();
    let mut b = Batch::new();
    let mut sa = Vec::new();
    for sig in 1..=NSIG as u64 {
        let off = b.reserve(sigaction_size());
        b.call_may_fail(Sysno::RtSigaction, &[sig.into(), 0.into(), Arg::Data(off), 8.into()]);
        sa.push(off);
    }
    let mut it = Vec::new();
    for which in 0..3u64 {
        let off = b.reserve(4 * w);
        b.call(Sysno::Getitimer, &[which.into(), Arg::Data(off)]);
        it.push(off);
    }
    let um = b.call(Sysno::Umask, &[0.into()]);
    b.call(Sysno::Umask, &[Arg::Result(um)]);
    let brk = b.call(Sysno::Brk, &[0.into()]);
    let subreaper = b.reserve(4);
    b.call_may_fail(Sysno::Prctl, &[PR_GET_CHILD_SUBREAPER.into(), Arg::Data(subreaper)]);
    let thp = b.call_may_fail(Sysno::Prctl, &[PR_GET_THP_DISABLE.into(), 0.into(), 0.into(), 0.into(), 0.into()]);
    let out = parasite.run(seized, remote, &b)?;

    let is64 = Native::IS_64BIT;
    let sigactions = sa
        .iter()
        .map(|&off| SigAction {
            handler: out.word_at(off, is64),
            flags: out.word_at(off + w, is64),
            restorer: out.word_at(off + 2 * w, is64),
            mask: out.u64_at(off + 3 * w),
        })
        .collect();
    let itimers = it
        .iter()
        .map(|&off| {
            let f = |i: usize| out.word_at(off + i * w, is64);
            ITimer { interval_us: f(0) * 1_000_000 + f(1), value_us: f(2) * 1_000_000 + f(3) }
        })
        .collect();
    Ok(State {
        sigactions,
        itimers,
        umask: out.results[um] as u32,
        brk: out.results[brk] as u64,
        child_subreaper: out.u32_at(subreaper) != 0,
        thp_disable: u32::try_from(out.results[thp]).unwrap_or(0),
        mlockall: parasite.mlockall,
    })
}

/// Run in the thread `remote` is bound to: only a thread can tell its own
/// clear_child_tid and signal stack.
pub fn collect_thread(seized: &mut Seized, remote: &mut Remote, parasite: &mut Parasite) -> Result<ThreadState> {
    let w = word();
    let is64 = Native::IS_64BIT;
    let mut b = Batch::new();
    let tid_addr = b.reserve(w);
    let tid_call = b.call_may_fail(Sysno::Prctl, &[PR_GET_TID_ADDRESS.into(), Arg::Data(tid_addr)]);
    let ss = b.reserve(3 * w);
    b.call(Sysno::Sigaltstack, &[0.into(), Arg::Data(ss)]);
    let out = parasite.run(seized, remote, &b)?;
    Ok(ThreadState {
        clear_child_tid: if out.results[tid_call] == 0 { out.word_at(tid_addr, is64) } else { 0 },
        sigaltstack: SigAltStack {
            sp: out.word_at(ss, is64),
            flags: out.u32_at(ss + w) as i32,
            size: out.word_at(ss + if is64 { 16 } else { 8 }, is64),
        },
    })
}

/// Resource limits, read from outside with prlimit.
pub fn rlimits(pid: i32) -> Vec<Rlimit> {
    (0..16u32)
        .filter_map(|res| {
            let mut old = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: `old` is a valid out-pointer; no new limit is passed.
            let r = unsafe { libc::prlimit64(pid, res as _, std::ptr::null(), &mut old) };
            (r == 0).then_some(Rlimit { resource: res, cur: old.rlim_cur, max: old.rlim_max })
        })
        .collect()
}

/// POSIX timers: what /proc/PID/timers tells (id, clock, notification),
/// and, from timer_gettime in the process, when each fires next.
pub fn posix_timers(
    seized: &mut Seized,
    remote: &mut Remote,
    parasite: &mut Parasite,
    view: &super::pids::PidView,
) -> Result<Vec<PosixTimer>> {
    let pid = seized.pid;
    let text = std::fs::read_to_string(format!("/proc/{pid}/timers")).unwrap_or_default();
    let mut timers = parse_timers(&text);
    if timers.is_empty() {
        return Ok(timers);
    }
    for t in timers.iter_mut().filter(|t| t.tid != 0) {
        t.tid = view.pid(t.tid)?;
    }
    let w = word();
    let is64 = Native::IS_64BIT;
    let mut b = Batch::new();
    let offs: Vec<usize> = timers
        .iter()
        .map(|t| {
            let off = b.reserve(4 * w);
            b.call(Sysno::TimerGettime, &[(t.id as u64).into(), Arg::Data(off)]);
            off
        })
        .collect();
    let out = parasite.run(seized, remote, &b)?;
    for (t, off) in timers.iter_mut().zip(offs) {
        let f = |i: usize| out.word_at(off + i * w, is64);
        t.interval_ns = f(0) * 1_000_000_000 + f(1);
        t.value_ns = f(2) * 1_000_000_000 + f(3);
    }
    Ok(timers)
}

/// `ID:`, `signal: SIG/VALUE`, `notify: KIND/pid.N` or `KIND/tid.N`, `ClockID:` blocks.
fn parse_timers(text: &str) -> Vec<PosixTimer> {
    const SIGEV_THREAD_ID: i32 = 4;
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if k == "ID" {
            out.push(PosixTimer { id: v.parse().unwrap_or(0), clock: 0, notify: 0, signo: 0, value: 0, tid: 0, value_ns: 0, interval_ns: 0 });
            continue;
        }
        let Some(t) = out.last_mut() else { continue };
        match k {
            "signal" => {
                if let Some((sig, val)) = v.split_once('/') {
                    t.signo = sig.parse().unwrap_or(0);
                    t.value = u64::from_str_radix(val, 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let Some((kind, who)) = v.split_once('/') {
                    t.notify = match kind {
                        "none" => 1,
                        "thread" => 2,
                        _ => 0,
                    };
                    if let Some(tid) = who.strip_prefix("tid.") {
                        t.notify |= SIGEV_THREAD_ID;
                        t.tid = tid.parse().unwrap_or(0);
                    }
                }
            }
            "ClockID" => t.clock = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    out
}

/// A thread frozen in restart_syscall (a sleep resumed after an earlier stop,
/// e.g. a previous checkpoint) would, restored, run restart_syscall without
/// the kernel state it needs and get EINTR. Record instead the syscall its
/// code made, which the restore issues again with the arguments still in
/// its registers.
pub fn record_original_syscall(pid: i32, tid: i32, gp: &mut [u8]) {
    let (Some(restart), Some((nr, _))) = (Native::RESTART_SYSCALL, Native::interrupted_syscall(gp)) else { return };
    if nr != restart {
        return;
    }
    let pc = Native::pc(gp);
    let mut code = [0u8; 16];
    let found = pc
        .checked_sub(code.len() as u64)
        .and_then(|at| cryo_tracer::proc::MemFile::open(pid).ok()?.read(at, &mut code).ok())
        .and_then(|()| Native::syscall_nr_in_code(&code));
    match found {
        Some(orig) => Native::set_interrupted_syscall(gp, orig),
        None => tracing::warn!(
            "thread {tid} sleeps in a resumed syscall whose number its code does not show; after a restart that call returns EINTR"
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_proc_timers() {
        let t = super::parse_timers("ID: 0\nsignal: 14/00000000deadbeef\nnotify: signal/pid.77\nClockID: 1\nID: 3\nsignal: 10/0000000000000000\nnotify: signal/tid.78\nClockID: 0\n");
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].id, t[0].signo, t[0].value, t[0].notify, t[0].clock, t[0].tid), (0, 14, 0xdeadbeef, 0, 1, 0));
        assert_eq!((t[1].id, t[1].signo, t[1].notify, t[1].tid), (3, 10, 4, 78));
    }
}
