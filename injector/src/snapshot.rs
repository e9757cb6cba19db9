//! A copy-on-write snapshot of a frozen target's memory: a process that
//! shares nothing with the target but a frozen copy of its pages, from which
//! the image is written while the target already runs on.
//!
//! The snapshot must never run the program's code, never be seen by the
//! program, and never outlive cryo:
//! - The target clones a helper with CLONE_VM|CLONE_FILES (no page-table copy)
//!   and exit signal 0 (no SIGCHLD); the helper calls setsid() (signals to the
//!   target's process group miss what it forks) and forks the snapshot, which
//!   copies the address space copy-on-write. Both are born traced
//!   (PTRACE_O_TRACECLONE) and stopped: they only ever run the parasite,
//!   whose blob is a shared mapping they inherit, with registers cryo sets.
//! - The helper is killed and reaped by the target itself (a remote wait4
//!   while the target is still frozen), so the target's wait() never finds it.
//!   Its exit reparents the snapshot to the namespace's reaper, which reaps it
//!   when cryo kills it; the target is not its parent.
//! - The snapshot closes every fd but the page pipes before the target runs
//!   again (no pipe end, socket or lock is held on the target's behalf), and
//!   carries PTRACE_O_EXITKILL: it dies with cryo. Dropping a [`Snapshot`]
//!   kills it.
//!
//! Only the cloning thread is copied, which is all memory needs.

use crate::batch::{Arg, Batch};
use crate::parasite::{Drain, PagePipes, Parasite};
use crate::remote::Remote;
use crate::{InjectError, Result};
use cryo_parasite::abi::IoVec;
use cryo_tracer::arch::Sysno;
use cryo_tracer::ptrace::{self, Stop};
use cryo_tracer::{fault, Seized};

/// The stopped copy-on-write fork the image's memory is read from.
pub struct Snapshot {
    /// Host pid of the snapshot process.
    pub pid: i32,
    seized: Option<Seized>,
    remote: Remote,
    /// The page pipes (their write ends have the same numbers in the snapshot).
    pipe: PagePipes,
}

/// struct clone_args up to `tls` (CLONE_ARGS_SIZE_VER0 = 64 bytes).
fn clone_args(flags: u64) -> Vec<u8> {
    // flags, pidfd, child_tid, parent_tid, exit_signal (0: no SIGCHLD), stack, stack_size, tls
    [flags, 0, 0, 0, 0, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Options of the helper and the snapshot: reported forks, and death with cryo.
const CHILD_OPTIONS: libc::c_int = ptrace::SEIZE_OPTIONS | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_EXITKILL;

impl Parasite {
    /// Fork a snapshot of the frozen target whose thread `remote` runs the
    /// parasite (the page pipe must be open). On error nothing is left behind:
    /// no helper, no snapshot, no zombie in the target.
    pub fn fork_snapshot(&mut self, seized: &mut Seized, remote: &mut Remote) -> Result<Snapshot> {
        let pid = seized.pid;
        let pipe = self.page_pipe().ok_or_else(|| InjectError::Command { pid, what: "page pipe not open".into() })?;
        fault::check("snapshot-fork")?;
        // Only for this clone: the target's own forks stay unreported.
        ptrace::set_options(remote.tid, ptrace::SEIZE_OPTIONS | libc::PTRACE_O_TRACECLONE)?;
        remote.cloned.clear();
        let mut b = Batch::new();
        let args = b.data(&clone_args((libc::CLONE_VM | libc::CLONE_FILES) as u64));
        b.call(Sysno::Clone3, &[Arg::Data(args), 64.into()]);
        let made = self.run(seized, remote, &b);
        let reset = ptrace::set_options(remote.tid, ptrace::SEIZE_OPTIONS);
        let Some(host) = remote.cloned.pop() else {
            made?;
            reset?;
            return Err(InjectError::Command { pid, what: "the snapshot helper was created but not reported to cryo".into() });
        };
        // Its pid as the target sees it, for the target's wait4.
        let inner = cryo_tracer::proc::status(host).ok().and_then(|s| s.ns_pid.last().copied()).unwrap_or(host);
        let helper = Helper { host, inner: inner as i64 };
        if let Err(e) = made {
            let _ = helper.reap(self, seized, remote);
            return Err(e);
        }
        let snap = reset.map_err(InjectError::from).and_then(|()| self.fork_from_helper(seized, remote, &helper, pipe));
        let reaped = helper.reap(self, seized, remote);
        let snap = snap?;
        reaped?;
        Ok(snap)
    }

    /// In the helper: leave the target's session, fork the snapshot, and let
    /// the snapshot close every fd but the page pipe.
    fn fork_from_helper(&mut self, seized: &mut Seized, remote: &Remote, helper: &Helper, pipe: PagePipes) -> Result<Snapshot> {
        let mut hseized = Seized::adopt(helper.host)?;
        let result = (|| {
            ptrace::set_options(helper.host, CHILD_OPTIONS)?;
            let gp = seized.thread(remote.tid).gp().to_vec();
            let mut hremote = Remote::with_regs(helper.host, helper.host, self.gadget(), gp.clone())?;
            let mut b = Batch::new();
            b.call(Sysno::Setsid, &[]);
            let args = b.data(&clone_args(0));
            b.call(Sysno::Clone3, &[Arg::Data(args), 64.into()]);
            let made = self.run(&mut hseized, &mut hremote, &b);
            let Some(host) = hremote.cloned.pop() else {
                made?;
                return Err(InjectError::Command { pid: seized.pid, what: "the snapshot was created but not reported to cryo".into() });
            };
            let mut snap = Snapshot {
                pid: host,
                seized: None,
                remote: Remote::with_regs(host, host, self.gadget(), gp)?,
                pipe,
            };
            made?;
            snap.seized = Some(Seized::adopt(host)?);
            ptrace::set_options(host, CHILD_OPTIONS & !libc::PTRACE_O_TRACECLONE)?;
            fault::check("snapshot-fds")?;
            let mut keep = snap.pipe.wr;
            keep.sort_unstable();
            let mut close = Batch::new();
            let mut from = 0;
            for wr in keep {
                if wr > from {
                    close.call(Sysno::CloseRange, &[from.into(), (wr - 1).into(), 0.into()]);
                }
                from = wr + 1;
            }
            close.call(Sysno::CloseRange, &[from.into(), (u32::MAX as u64).into(), 0.into()]);
            let s = snap.seized.as_mut().expect("adopted above");
            self.run(s, &mut snap.remote, &close)?;
            Ok(snap)
        })();
        hseized.forget();
        result
    }
}

/// The helper process: host pid (ptrace) and its pid as the target sees it (wait4).
struct Helper {
    host: i32,
    inner: i64,
}

impl Helper {
    /// Kill the helper and have the target reap it, so that no trace of it is
    /// left for the target's wait().
    fn reap(&self, parasite: &mut Parasite, seized: &mut Seized, remote: &mut Remote) -> Result<()> {
        kill_and_wait(self.host);
        let mut b = Batch::new();
        b.call(Sysno::Wait4, &[(self.inner as u64).into(), 0.into(), ((libc::__WALL | libc::WNOHANG) as u64).into(), 0.into()]);
        // The zombie passes to the target once cryo collected its trace
        // notification; that is immediate, but allow for a slow machine.
        for _ in 0..1000 {
            let out = parasite.run_undo(seized, remote, &b)?;
            if out.results[0] == self.inner {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(InjectError::Command { pid: seized.pid, what: format!("the snapshot helper {} was not reaped", self.host) })
    }
}

/// SIGKILL a traced child of the target and collect its end as its tracer.
fn kill_and_wait(host: i32) {
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(host, libc::SIGKILL) };
    loop {
        match ptrace::wait(host) {
            Ok(Stop::Exited(_) | Stop::Killed(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

impl Snapshot {
    /// Stream memory of the snapshot into `out` at `*offset` (see
    /// [`Parasite::stream_pages`]).
    pub fn stream_pages(&mut self, parasite: &mut Parasite, iovs: &[IoVec], drain: &mut Drain) -> Result<()> {
        fault::check("snapshot-pages")?;
        let seized = self.seized.as_mut().expect("the snapshot is adopted");
        parasite.stream_through(seized, &mut self.remote, &self.pipe, iovs, drain)
    }

    /// [`Parasite::zero_pages`] in the snapshot.
    pub fn zero_pages(&mut self, parasite: &mut Parasite, iovs: &[IoVec], page_size: u64) -> Result<Vec<bool>> {
        let seized = self.seized.as_mut().expect("the snapshot is adopted");
        parasite.zero_pages(seized, &mut self.remote, iovs, page_size)
    }

    /// /proc/PID/mem of the snapshot, for what vmsplice cannot read.
    pub fn mem(&self) -> &cryo_tracer::proc::MemFile {
        &self.remote.mem
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        kill_and_wait(self.pid);
        if let Some(s) = self.seized.take() {
            s.forget();
        }
    }
}
