//! Giving the tree its shape before any process is rebuilt: every process is
//! created by its own parent (so getppid() and wait() work), with its old pid,
//! in its old session and process group; zombies are made to exit with their
//! old status and left for their parent to reap.
//!
//! Each process starts as a fork of cryo parked in pause(). The root is
//! created by the namespace's init; every other process is forked from its
//! restored parent by a clone3 that cryo runs in the parent, and comes
//! into the world already traced (PTRACE_O_TRACEFORK).

use crate::check::RestoreError;
use crate::ns::Sandbox;
use crate::shared::Registry;
use crate::Result;
use cryo_image::{ProcessEntry, ProcessImage, ProcessState};
use cryo_injector::Remote;
use cryo_tracer::arch::{Arch, Native, Sysno};
use cryo_tracer::{proc, ptrace, Seized};
use std::collections::HashMap;

/// One process of the tree being restored, stopped under cryo.
pub struct Member<'a> {
    pub entry: &'a ProcessEntry,
    /// `None` for a zombie.
    pub image: Option<&'a ProcessImage>,
    pub host: i32,
    pub seized: Seized,
    pub remote: Remote,
}

impl Member<'_> {
    pub fn old(&self) -> i32 {
        self.entry.pid
    }

    fn syscall(&mut self, call: Sysno, args: [u64; 6]) -> Result<u64> {
        let old = self.old();
        self.remote
            .syscall(&mut self.seized, call, args)
            .map_err(|e| RestoreError::Rebuild(format!("process {old}: {e}")))
    }
}

const OPTIONS: libc::c_int = ptrace::SEIZE_OPTIONS | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK;
/// Bytes below the parked fork's stack pointer used to pass clone3 its
/// arguments: the fork's memory is cryo's, about to be discarded.
const SCRATCH_BELOW_SP: u64 = 16 << 10;

/// Create every process of the tree, parents first.
pub fn create<'a>(
    entries: &'a [ProcessEntry],
    images: &'a HashMap<i32, ProcessImage>,
    sandbox: &mut Sandbox,
    reg: &mut Registry,
) -> Result<Vec<Member<'a>>> {
    let in_ns = sandbox.init.is_some();
    let mut members: Vec<Member> = Vec::new();
    // (pgid, sid) each process has so far, in old pids; None: cryo's own.
    let mut groups: HashMap<i32, (Option<i32>, Option<i32>)> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let image = match entry.state {
            ProcessState::Live => Some(images.get(&entry.pid).ok_or_else(|| corrupt(entry.pid, "has no process image"))?),
            ProcessState::Zombie { .. } => None,
        };
        let (host, inside, mut seized) = if i == 0 {
            let host = sandbox.spawn(entry.pid)?.host_pid;
            let mut seized = Seized::freeze(host)?;
            // Nothing the tree is sent while it is rebuilt may run a handler
            // or stop it; what was pending at the checkpoint is sent at the end.
            ptrace::set_sigmask(host, !0)?;
            seized.threads[0].sigmask = !0;
            groups.insert(entry.pid, (None, None));
            (host, if in_ns { entry.pid } else { host }, seized)
        } else {
            let parent = members
                .iter_mut()
                .find(|m| m.old() == entry.ppid)
                .ok_or_else(|| corrupt(entry.pid, &format!("comes before its parent {}", entry.ppid)))?;
            let exit_signal = image.map_or(libc::SIGCHLD, |p| p.exit_signal);
            let (host, inside) = fork_in(parent, entry.pid, exit_signal, in_ns)?;
            sandbox.track(host);
            let inherited = groups[&entry.ppid];
            groups.insert(entry.pid, inherited);
            (host, inside, Seized::adopt(host)?)
        };
        ptrace::set_options(host, OPTIONS)?;
        reg.pids.insert(entry.pid, inside);
        let own_vmas = proc::vmas(host)?;
        let remote = Remote::bootstrap(&mut seized, host, &own_vmas)?;
        let mut m = Member { entry, image, host, seized, remote };
        let old = entry.pid;
        if entry.sid == old {
            m.syscall(Sysno::Setsid, [0; 6])?;
            groups.insert(old, (Some(old), Some(old)));
        } else if entry.pgid == old {
            m.syscall(Sysno::Setpgid, [0; 6])?;
            groups.get_mut(&old).expect("inserted above").0 = Some(old);
        }
        members.push(m);
    }
    join_groups(&mut members, &groups, reg)?;
    Ok(members)
}

/// Processes that joined a group led by another process of the tree.
fn join_groups(members: &mut [Member], groups: &HashMap<i32, (Option<i32>, Option<i32>)>, reg: &Registry) -> Result<()> {
    for m in members.iter_mut() {
        let (pgid, sid) = groups[&m.old()];
        if sid != Some(m.entry.sid) && m.entry.ppid != 0 {
            tracing::warn!(
                "process {} was in session {}, whose leader is not part of the image; it stays in its parent's session",
                m.old(),
                m.entry.sid
            );
        }
        if pgid == Some(m.entry.pgid) || m.entry.pgid == m.old() {
            continue;
        }
        match reg.pids.inside(m.entry.pgid) {
            Some(leader) if sid == Some(m.entry.sid) => {
                m.syscall(Sysno::Setpgid, [0, leader as u64, 0, 0, 0, 0])?;
            }
            _ => tracing::warn!("process group {} of process {} is not part of the image; not recreated", m.entry.pgid, m.old()),
        }
    }
    Ok(())
}

fn corrupt(pid: i32, what: &str) -> RestoreError {
    RestoreError::Corrupt(format!("process {pid} {what}"))
}

/// Fork a child with pid `old` in `parent`. Returns (host pid, pid inside).
fn fork_in(parent: &mut Member, old: i32, exit_signal: i32, in_ns: bool) -> Result<(i32, i32)> {
    // struct clone_args up to set_tid_size, then the one-entry set_tid array.
    let scratch = (Native::sp(parent.remote.base_gp()) - SCRATCH_BELOW_SP) & !15;
    let set_tid_at = scratch + 80;
    let (set_tid, set_tid_size) = if in_ns { (set_tid_at, 1) } else { (0, 0) };
    let mut args = Vec::with_capacity(88);
    for v in [0, 0, 0, 0, exit_signal as u64, 0, 0, 0, set_tid, set_tid_size] {
        args.extend_from_slice(&v.to_le_bytes());
    }
    args.extend_from_slice(&old.to_le_bytes());
    parent.remote.mem.write(scratch, &args)?;
    parent.remote.cloned.clear();
    let inside = parent.syscall(Sysno::Clone3, [scratch, 80, 0, 0, 0, 0]).map_err(|e| match e {
        RestoreError::Rebuild(m) => RestoreError::Rebuild(format!("creating process {old}: {m}")),
        e => e,
    })? as i32;
    let host = parent
        .remote
        .cloned
        .pop()
        .ok_or_else(|| RestoreError::Rebuild(format!("process {old} was created but not reported to cryo")))?;
    if in_ns && inside != old {
        return Err(RestoreError::Rebuild(format!("process {old} was created with pid {inside}")));
    }
    Ok((host, inside))
}

/// Make a zombie: the process exits the way the original did, and cryo
/// collects the tracer's notification so its parent sees the zombie.
pub fn exit_as(mut m: Member, status: i32) -> Result<()> {
    let host = m.host;
    // A zombie still shows its name (ps, /proc/PID/comm).
    let scratch = (Native::sp(m.remote.base_gp()) - SCRATCH_BELOW_SP) & !15;
    let mut name: Vec<u8> = m.entry.comm.bytes().take(15).collect();
    name.push(0);
    m.remote.mem.write(scratch, &name)?;
    m.syscall(Sysno::Prctl, [libc::PR_SET_NAME as u64, scratch, 0, 0, 0, 0])?;
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // The parked fork has cryo's handlers; the original died of the
        // default action (without a core file: RLIMIT_CORE 0).
        m.remote.mem.write(scratch, &[0u8; 64])?;
        m.syscall(Sysno::Prlimit64, [0, libc::RLIMIT_CORE as u64, scratch, 0, 0, 0])?;
        m.syscall(Sysno::RtSigaction, [sig as u64, scratch + 16, 0, 8, 0, 0])?;
        ptrace::set_sigmask(host, 0)?;
        // SAFETY: kill has no memory arguments.
        unsafe { libc::kill(host, sig) };
        ptrace::cont(host, 0)?;
        loop {
            match ptrace::wait(host)? {
                ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_) => break,
                ptrace::Stop::Signal(s) => ptrace::cont(host, s)?,
                _ => ptrace::cont(host, 0)?,
            }
        }
    } else {
        let code = libc::WEXITSTATUS(status) as u64;
        match m.remote.syscall_raw(&mut m.seized, Sysno::ExitGroup, [code, 0, 0, 0, 0, 0]) {
            Err(cryo_injector::InjectError::Tracer(cryo_tracer::TracerError::Exited { .. })) => {}
            Err(e) => return Err(e.into()),
            Ok(r) => return Err(RestoreError::Rebuild(format!("zombie {}: exit_group returned {r}", m.old()))),
        }
    }
    m.seized.forget();
    Ok(())
}
