//! Keeping the target safe when cryo itself is stopped mid-checkpoint.
//!
//! A catchable signal to cryo (Ctrl-C, SIGTERM, SIGHUP of a closed terminal)
//! makes the next stage boundary fail (`cryo_tracer::fault`), and the usual
//! unwinding puts the target back. SIGKILL cannot be caught, and a tracer that
//! vanishes while the target runs injected code leaves it broken. So the
//! tracing is done by a worker process forked for it, in a process group of
//! its own, while the process the user started only waits: if that one is
//! killed, even with SIGKILL, the worker gets SIGTERM (PR_SET_PDEATHSIG) and
//! unwinds the same way.

use anyhow::{anyhow, Result};
use cryo_tracer::fault;
use serde::{de::DeserializeOwned, Serialize};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

static WORKER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    fault::request_abort(sig);
}

extern "C" fn forward_to_worker(sig: libc::c_int) {
    let w = WORKER.load(Ordering::SeqCst);
    if w > 0 {
        // SAFETY: kill is async-signal-safe and has no memory arguments.
        unsafe { libc::kill(w, sig) };
    }
}

fn set_handlers(handler: extern "C" fn(libc::c_int)) {
    for sig in STOP_SIGNALS {
        // SAFETY: a zeroed sigaction with a handler that only does
        // async-signal-safe work; SA_RESTART so blocking calls carry on and the
        // request is seen at the next stage boundary.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Stop signals make the work in this process unwind instead of killing it.
pub fn abort_on_signals() {
    set_handlers(on_stop_signal);
}

/// Whether a sibling process may trace what this one may: Yama's mode 1
/// allows only descendants, and the worker is not an ancestor of a child of ours.
fn worker_can_trace() -> bool {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
    matches!(scope.trim(), "" | "0")
}

/// Run `work` in a worker process, as explained above, and return its result.
/// Where a worker could not trace the target, runs it here with
/// [`abort_on_signals`] instead.
pub fn in_worker<T: Serialize + DeserializeOwned>(work: impl FnOnce() -> Result<T>) -> Result<T> {
    if !worker_can_trace() {
        abort_on_signals();
        return work();
    }
    let (rd, wr) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // SAFETY: cryo is single-threaded here (no progress bar or worker thread
    // exists yet), so the child's copy of the process is consistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(anyhow!("fork of the checkpoint worker: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(rd);
        worker_main(wr, me, work);
    }
    drop(wr);
    WORKER.store(pid, Ordering::SeqCst);
    set_handlers(forward_to_worker);
    let mut reply = Vec::new();
    let read = std::fs::File::from(rd).read_to_end(&mut reply);
    let mut status = 0;
    // SAFETY: valid out-pointer; the worker is our child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {}
    WORKER.store(0, Ordering::SeqCst);
    if read.is_err() || reply.is_empty() {
        let how = if libc::WIFSIGNALED(status) {
            format!("was killed by {}", cryo_tracer::error::signal_name(libc::WTERMSIG(status)))
        } else {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        };
        return Err(anyhow!(
            "the checkpoint worker (pid {pid}) {how} without reporting; check that the target still runs (kill -CONT it if it is stopped)"
        ));
    }
    let reply: Reply<T> = serde_json::from_slice(&reply)?;
    fault::set_reached(reply.stages_reached);
    match reply.result {
        Outcome::Ok(v) => Ok(v),
        Outcome::Err(e) => Err(anyhow!(e)),
    }
}

#[derive(Serialize, serde::Deserialize)]
struct Reply<T> {
    result: Outcome<T>,
    /// The worker's `fault` counts: a test's `CRYO_FAULT=stage@N` counts on
    /// across the checkpoints of one `cryo attach`.
    stages_reached: std::collections::HashMap<String, usize>,
}

#[derive(Serialize, serde::Deserialize)]
enum Outcome<T> {
    Ok(T),
    Err(String),
}

fn worker_main<T: Serialize>(wr: OwnedFd, parent: i32, work: impl FnOnce() -> Result<T>) -> ! {
    // SAFETY: plain process-attribute calls without memory arguments.
    unsafe {
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        let none: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    abort_on_signals();
    // The parent may have died before PR_SET_PDEATHSIG took effect.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        fault::request_abort(libc::SIGTERM);
    }
    let result = match work() {
        Ok(v) => Outcome::Ok(v),
        Err(e) => Outcome::Err(crate::one_line(&e)),
    };
    let reply = Reply { result, stages_reached: fault::reached() };
    let bytes = serde_json::to_vec(&reply).unwrap_or_default();
    let _ = std::fs::File::from(wr).write_all(&bytes);
    // SAFETY: _exit skips the parent's atexit work, which is not ours to run.
    unsafe { libc::_exit(0) }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(anyhow!("pipe for the checkpoint worker: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned these fds to us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
