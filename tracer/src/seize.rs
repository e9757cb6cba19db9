//! Seizing and freezing every thread of a process, and letting go of it
//! exactly as it was.

use crate::arch::{Arch, Native};
use crate::proc;
use crate::ptrace::{self, Stop};
use crate::{fault, Result, TracerError};
use nix::errno::Errno;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// How long a thread may take to reach the interrupt stop before cryo gives up.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Thread {
    pub tid: i32,
    /// Register sets as read at the freeze: (NT_* type, bytes). The first is GP.
    pub regsets: Vec<(u32, Vec<u8>)>,
    pub sigmask: u64,
    /// Signals that arrived while cryo held the thread; sent again on detach.
    pub held_signals: Vec<i32>,
    /// The thread was in a group stop (SIGSTOP'd) before cryo came.
    pub group_stopped: bool,
    /// Registers were changed (by the injector) and must be put back.
    modified: bool,
}

impl Thread {
    pub fn gp(&self) -> &[u8] {
        &self.regsets[0].1
    }
}

/// A frozen process. Dropping it puts every thread's registers back and
/// detaches, so an error anywhere leaves the process running as before.
pub struct Seized {
    pub pid: i32,
    pub threads: Vec<Thread>,
    released: bool,
}

fn my_euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Refuse, with the reason, what cannot be checkpointed before touching it.
fn preflight(pid: i32) -> Result<proc::Status> {
    let st = match proc::status(pid) {
        Ok(s) => s,
        Err(TracerError::Proc { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(TracerError::NoSuchProcess(pid))
        }
        Err(e) => return Err(e),
    };
    if st.tgid != pid {
        // A thread id, not a process: take its process.
        return Err(TracerError::Parse {
            path: format!("/proc/{pid}"),
            what: format!("{pid} is a thread of process {}; checkpoint the process", st.tgid),
        });
    }
    let me = my_euid();
    if me != 0 {
        if let Some(&other) = st.uids[..3].iter().find(|&&u| u != me) {
            return Err(TracerError::OtherUser { pid, owner: other, me });
        }
    }
    if st.seccomp != 0 {
        let mode = if st.seccomp == 1 { "strict mode" } else { "filter" };
        return Err(TracerError::Seccomp { pid, code: st.seccomp, mode });
    }
    if st.state == 'Z' || st.state == 'X' {
        return Err(TracerError::Zombie { pid });
    }
    if st.tracer_pid != 0 {
        return Err(TracerError::traced(pid, st.tracer_pid));
    }
    // A non-dumpable process's /proc directory is owned by root.
    if let Ok(md) = std::fs::metadata(format!("/proc/{pid}")) {
        if md.uid() == 0 && st.uids[0] != 0 {
            return Err(TracerError::NotDumpable { pid });
        }
    }
    Ok(st)
}

fn explain_seize_error(pid: i32, e: Errno) -> TracerError {
    match e {
        Errno::ESRCH => TracerError::Exited { pid },
        Errno::EPERM => {
            let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
            let scope = scope.trim().to_string();
            if !scope.is_empty() && scope != "0" {
                TracerError::Yama { pid, scope }
            } else if let Ok(st) = proc::status(pid) {
                if st.tracer_pid != 0 {
                    TracerError::traced(pid, st.tracer_pid)
                } else {
                    TracerError::NotDumpable { pid }
                }
            } else {
                TracerError::Exited { pid }
            }
        }
        e => TracerError::ptrace("PTRACE_SEIZE", pid, e),
    }
}

impl Seized {
    /// Seize and interrupt every thread of `pid`, re-reading /proc/PID/task until
    /// no new thread appears, then read each thread's registers and signal mask.
    pub fn freeze(pid: i32) -> Result<Seized> {
        Self::freeze_as(pid, true)
    }

    /// [`Seized::freeze`] to take back what a failed checkpoint left in a
    /// process it had already let go: it goes on after cryo was asked to stop.
    pub fn freeze_to_undo(pid: i32) -> Result<Seized> {
        Self::freeze_as(pid, false)
    }

    fn freeze_as(pid: i32, abortable: bool) -> Result<Seized> {
        preflight(pid)?;
        let mut me = Seized { pid, threads: Vec::new(), released: false };
        if abortable {
            fault::check("seize")?;
        }
        let mut seen = BTreeSet::new();
        // A thread can be cloned by one not yet stopped after the task list was
        // read: only a list read after every listed thread has stopped is final.
        loop {
            let fresh: Vec<i32> = proc::tasks(pid)?.into_iter().filter(|t| !seen.contains(t)).collect();
            if fresh.is_empty() {
                break;
            }
            let first_new = me.threads.len();
            for tid in fresh {
                seen.insert(tid);
                match ptrace::seize(tid) {
                    Ok(()) => {}
                    // A thread that exited between readdir and seize.
                    Err(Errno::ESRCH) if tid != pid => continue,
                    Err(e) => return Err(explain_seize_error(pid, e)),
                }
                me.threads.push(Thread {
                    tid,
                    regsets: Vec::new(),
                    sigmask: 0,
                    held_signals: Vec::new(),
                    group_stopped: false,
                    modified: false,
                });
                ptrace::interrupt(tid)?;
            }
            let mut i = first_new;
            while i < me.threads.len() {
                match wait_for_stop(&mut me.threads[i], abortable)? {
                    true => i += 1,
                    false if me.threads[i].tid == pid => return Err(TracerError::Exited { pid }),
                    false => {
                        me.threads.remove(i);
                    }
                }
            }
        }
        if abortable {
            fault::check("regs")?;
        }
        for t in &mut me.threads {
            t.regsets = read_regsets(t.tid)?;
            t.sigmask = ptrace::get_sigmask(t.tid)?;
        }
        Ok(me)
    }

    /// Take over a process this tracer already traces from birth (a fork
    /// auto-attached through PTRACE_O_TRACEFORK), once it reports its first stop.
    pub fn adopt(pid: i32) -> Result<Seized> {
        let mut t = Thread { tid: pid, regsets: Vec::new(), sigmask: 0, held_signals: Vec::new(), group_stopped: false, modified: false };
        if !wait_for_stop(&mut t, true)? {
            return Err(TracerError::Exited { pid });
        }
        t.regsets = read_regsets(pid)?;
        t.sigmask = ptrace::get_sigmask(pid)?;
        Ok(Seized { pid, threads: vec![t], released: false })
    }

    pub fn leader(&self) -> &Thread {
        &self.threads[0]
    }

    pub fn thread(&self, tid: i32) -> &Thread {
        self.threads.iter().find(|t| t.tid == tid).expect("thread is seized")
    }

    /// The injector is about to change this thread's registers. From now on
    /// every signal is blocked in it, so one sent meanwhile stays queued in the
    /// kernel, with its siginfo, until the thread has its own mask back.
    pub fn mark_modified(&mut self, tid: i32) -> Result<()> {
        if let Some(t) = self.threads.iter_mut().find(|t| t.tid == tid) {
            if !t.modified {
                t.modified = true;
                ptrace::set_sigmask(tid, !0)?;
            }
        }
        Ok(())
    }

    /// Remember a signal that arrived while the injector ran the thread.
    pub fn hold_signal(&mut self, tid: i32, sig: i32) {
        if let Some(t) = self.threads.iter_mut().find(|t| t.tid == tid) {
            t.held_signals.push(sig);
        }
    }

    /// Put registers back, re-send held signals, and detach every thread.
    pub fn release(mut self) -> Result<()> {
        // An injected failure here still lets go of the process: through Drop.
        fault::inject("detach")?;
        self.released = true;
        let mut first_err = None;
        for t in &self.threads {
            if let Err(e) = release_thread(self.pid, t) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Stop caring for the process: the caller has set its registers and
    /// detaches it itself (the restorer, whose "original" state is cryo's own).
    pub fn forget(mut self) {
        self.released = true;
    }

    /// Kill the process while it is still frozen, so nothing runs after the
    /// image. Returns its threads, which stay (traced zombies) until their
    /// exits are reaped ([`ptrace::reap_exited`]).
    pub fn kill(mut self) -> Result<Vec<i32>> {
        self.released = true;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| TracerError::ptrace("kill", self.pid, e))?;
        Ok(self.threads.iter().map(|t| t.tid).collect())
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        if !self.released {
            for t in &self.threads {
                if let Err(e) = release_thread(self.pid, t) {
                    tracing::warn!("releasing thread {}: {e}", t.tid);
                }
            }
        }
    }
}

fn release_thread(pid: i32, t: &Thread) -> Result<()> {
    if t.modified {
        // GP last: on x86 the XSAVE set can carry nothing that GP depends on,
        // but GP holds the pc that must be the final word.
        for (nt, data) in t.regsets.iter().skip(1) {
            ptrace::set_regset(t.tid, *nt, data)?;
        }
        let (nt, gp) = &t.regsets[0];
        ptrace::set_regset(t.tid, *nt, gp)?;
        ptrace::set_sigmask(t.tid, t.sigmask)?;
    }
    for &sig in &t.held_signals {
        // SAFETY: tgkill has no memory arguments.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, t.tid, sig) };
    }
    ptrace::detach(t.tid, 0)
}

fn read_regsets(tid: i32) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut out = Vec::new();
    for (i, spec) in Native::REGSETS.iter().enumerate() {
        match ptrace::get_regset(tid, spec.note_type, spec.max_size) {
            // A general-purpose set of another size: a process of another CPU mode
            // (a 32-bit process on a 64-bit kernel).
            Ok(data) if i == 0 && data.len() != Native::GP_SIZE => {
                return Err(TracerError::ForeignArch { pid: tid, bytes: data.len(), arch: Native::NAME })
            }
            Ok(data) => out.push((spec.note_type, data)),
            // Optional sets the CPU or kernel lacks (e.g. no XSAVE).
            Err(Errno::EINVAL | Errno::ENODEV | Errno::EIO) if i > 0 => {}
            Err(e) => return Err(TracerError::ptrace(format!("PTRACE_GETREGSET {}", spec.name), tid, e)),
        }
    }
    Ok(out)
}

/// Wait until the thread reports the interrupt stop (or cryo is asked to
/// stop, if `abortable`). Returns false if it exited.
fn wait_for_stop(t: &mut Thread, abortable: bool) -> Result<bool> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    // A thread that runs or sleeps stops within microseconds of the
    // interrupt: look again soon, then less often (a whole millisecond
    // at first would be most of a small checkpoint's stop).
    let mut pause = Duration::from_micros(10);
    loop {
        let stop = match ptrace::wait_flags(t.tid, libc::WNOHANG)? {
            Some(s) => s,
            None => {
                if Instant::now() > deadline {
                    return Err(stuck(t.tid));
                }
                if let Some(sig) = fault::aborted().filter(|_| abortable) {
                    return Err(TracerError::Interrupted { sig });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(1));
                continue;
            }
        };
        match stop {
            Stop::Event { sig } => {
                t.group_stopped = sig != libc::SIGTRAP;
                return Ok(true);
            }
            Stop::Signal(sig) => {
                // Hold the signal; the interrupt stop follows.
                t.held_signals.push(sig);
                ptrace::cont(t.tid, 0)?;
            }
            Stop::Syscall | Stop::OtherEvent(_) => ptrace::cont(t.tid, 0)?,
            Stop::Exited(_) | Stop::Killed(_) => return Ok(false),
        }
    }
}

fn stuck(tid: i32) -> TracerError {
    let wchan = std::fs::read_to_string(format!("/proc/{tid}/wchan")).unwrap_or_default();
    if wchan.contains("vfork") {
        return TracerError::Vfork { pid: tid };
    }
    let state = proc::stat(tid).map(|s| s.state.to_string()).unwrap_or_else(|_| "?".into());
    TracerError::StopTimeout { pid: tid, secs: STOP_TIMEOUT.as_secs(), state }
}
