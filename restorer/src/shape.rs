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

/// EXITKILL: if cryo dies mid-rebuild (even by SIGKILL), the kernel would
/// detach its tracees and let them run before the namespace's init, killed
/// by its parent-death signal, takes them down; a process whose registers
/// were already set would run its program meanwhile. SIGKILL comes first.
pub(crate) const OPTIONS: libc::c_int = ptrace::SEIZE_OPTIONS | libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_EXITKILL;
/// Bytes below the parked fork's stack pointer used to pass clone3 its
/// arguments: the fork's memory is cryo's, about to be discarded.
const SCRATCH_BELOW_SP: u64 = 16 << 10;

/// Create every process of the tree, parents first, but those forked
/// `later` from their restored parent (leaves: see rebuild::forked).
pub fn create<'a>(
    entries: &'a [ProcessEntry],
    images: &'a HashMap<i32, ProcessImage>,
    sandbox: &mut Sandbox,
    reg: &mut Registry,
    later: &std::collections::HashSet<i32>,
) -> Result<Vec<Member<'a>>> {
    let in_ns = sandbox.init.is_some();
    let mut members: Vec<Member> = Vec::new();
    // (pgid, sid) each process has so far, in old pids; None: cryo's own.
    let mut groups: HashMap<i32, (Option<i32>, Option<i32>)> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if later.contains(&entry.pid) {
            continue;
        }
        let image = match entry.state {
            ProcessState::Live => Some(images.get(&entry.pid).ok_or_else(|| corrupt(entry.pid, "has no process image"))?),
            ProcessState::Zombie { .. } => None,
        };
        let (host, inside, mut seized) = if i == 0 {
            let (host, helper_sid) = create_root(entry, entries, sandbox)?;
            groups.insert(entry.pid, (helper_sid, helper_sid));
            (host, if in_ns { entry.pid } else { host }, if helper_sid.is_some() { Seized::adopt(host)? } else { Seized::freeze(host)? })
        } else {
            let parent = members
                .iter_mut()
                .find(|m| m.old() == entry.ppid)
                .ok_or_else(|| corrupt(entry.pid, &format!("comes before its parent {}", entry.ppid)))?;
            let exit_signal = image.map_or(libc::SIGCHLD, |p| p.exit_signal);
            let (host, inside) = fork_in(&mut parent.seized, &mut parent.remote, entry.pid, exit_signal, in_ns)?;
            sandbox.track(host);
            let inherited = groups[&entry.ppid];
            groups.insert(entry.pid, inherited);
            (host, inside, Seized::adopt(host)?)
        };
        // Nothing the tree is sent while it is rebuilt may run a handler or
        // stop it; what was pending at the checkpoint is sent at the end.
        // (Forks inherit the mask.)
        if i == 0 {
            ptrace::set_sigmask(host, !0)?;
            seized.threads[0].sigmask = !0;
        }
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
/// `None` in `groups` is the group or session the restored root got from
/// `cryo restart`, standing in for the one the original root had outside.
fn join_groups(members: &mut [Member], groups: &HashMap<i32, (Option<i32>, Option<i32>)>, reg: &Registry) -> Result<()> {
    let root = members[0].entry.clone();
    let (root_pgid, root_sid) = groups[&root.pid];
    // What the original ids are called after the restore.
    let known = |id: i32, outside: i32, root_has: Option<i32>| -> Option<Option<i32>> {
        if reg.pids.inside(id).is_some() || root_has == Some(id) {
            Some(Some(id))
        } else if id == outside {
            Some(root_has)
        } else {
            None
        }
    };
    for m in members.iter_mut() {
        let (pgid, sid) = groups[&m.old()];
        if known(m.entry.sid, root.sid, root_sid) != Some(sid) {
            tracing::warn!(
                "process {} was in session {}, whose leader is not part of the image; it stays in its parent's session",
                m.old(),
                m.entry.sid
            );
        }
        match known(m.entry.pgid, root.pgid, root_pgid) {
            Some(want) if want == pgid => {}
            Some(Some(leader)) if reg.pids.inside(leader).is_some() && known(m.entry.sid, root.sid, root_sid) == Some(sid) => {
                let leader = reg.pids.inside(leader).expect("checked");
                m.syscall(Sysno::Setpgid, [0, leader as u64, 0, 0, 0, 0])?;
            }
            _ => tracing::warn!("process group {} of process {} could not be recreated", m.entry.pgid, m.old()),
        }
    }
    Ok(())
}

fn corrupt(pid: i32, what: &str) -> RestoreError {
    RestoreError::Corrupt(format!("process {pid} {what}"))
}

/// Fork a child with pid `old` in the stopped process `parent`.
/// Returns (host pid, pid inside).
fn fork_in(seized: &mut Seized, parent: &mut Remote, old: i32, exit_signal: i32, in_ns: bool) -> Result<(i32, i32)> {
    // struct clone_args up to set_tid_size, then the one-entry set_tid array.
    let scratch = scratch(parent);
    let set_tid_at = scratch + 80;
    let (set_tid, set_tid_size) = if in_ns { (set_tid_at, 1) } else { (0, 0) };
    let mut args = Vec::with_capacity(88);
    for v in [0, 0, 0, 0, exit_signal as u64, 0, 0, 0, set_tid, set_tid_size] {
        args.extend_from_slice(&v.to_le_bytes());
    }
    args.extend_from_slice(&old.to_le_bytes());
    parent.mem.write(scratch, &args)?;
    parent.cloned.clear();
    let inside = parent
        .syscall(seized, Sysno::Clone3, [scratch, 80, 0, 0, 0, 0])
        .map_err(|e| RestoreError::Rebuild(format!("creating process {old}: {e}")))? as i32;
    let host = parent
        .cloned
        .pop()
        .ok_or_else(|| RestoreError::Rebuild(format!("process {old} was created but not reported to cryo")))?;
    if in_ns && inside != old {
        return Err(RestoreError::Rebuild(format!("process {old} was created with pid {inside}")));
    }
    Ok((host, inside))
}

fn scratch(r: &Remote) -> u64 {
    (Native::sp(r.base_gp()) - SCRATCH_BELOW_SP) & !15
}

/// Create the root. If it was in a session whose leader is not part of the
/// image (a daemon whose parent called setsid() and went away), a helper with
/// the leader's pid makes the session, forks the root into it and exits; the
/// root is reparented to the namespace's init as the original was to its
/// init. Returns the root's host pid and, with a helper, the session id.
fn create_root(root: &ProcessEntry, entries: &[ProcessEntry], sandbox: &mut Sandbox) -> Result<(i32, Option<i32>)> {
    // A session id of 0 is one outside the namespace the image was taken in.
    let leader_gone = root.sid > 0 && !root.session_outside && root.sid != root.pid && !entries.iter().any(|e| e.pid == root.sid);
    if !leader_gone || sandbox.init.is_none() {
        return Ok((sandbox.spawn(root.pid)?.host_pid, None));
    }
    let helper = sandbox.spawn(root.sid)?.host_pid;
    let mut seized = Seized::freeze(helper)?;
    ptrace::set_options(helper, OPTIONS)?;
    let mut remote = Remote::bootstrap(&mut seized, helper, &proc::vmas(helper)?)?;
    remote
        .syscall(&mut seized, Sysno::Setsid, [0; 6])
        .map_err(|e| RestoreError::Rebuild(format!("session helper {}: {e}", root.sid)))?;
    let (host, _) = fork_in(&mut seized, &mut remote, root.pid, libc::SIGCHLD, true)?;
    sandbox.track(host);
    exit_with(&mut seized, &mut remote, "cryo-session", 0)?;
    seized.forget();
    Ok((host, Some(root.sid)))
}

/// Make a zombie: the process exits the way the original did, and cryo
/// collects the tracer's notification so its parent sees the zombie.
pub fn exit_as(mut m: Member, status: i32) -> Result<()> {
    exit_with(&mut m.seized, &mut m.remote, &m.entry.comm, status)?;
    m.seized.forget();
    Ok(())
}

fn exit_with(seized: &mut Seized, remote: &mut Remote, comm: &str, status: i32) -> Result<()> {
    let host = seized.pid;
    let failed = |e: cryo_injector::InjectError| RestoreError::Rebuild(format!("ending process {host} as a zombie: {e}"));
    let scratch = scratch(remote);
    // A zombie still shows its name (ps, /proc/PID/comm).
    let mut name: Vec<u8> = comm.bytes().take(15).collect();
    name.push(0);
    remote.mem.write(scratch, &name)?;
    remote.syscall(seized, Sysno::Prctl, [libc::PR_SET_NAME as u64, scratch, 0, 0, 0, 0]).map_err(failed)?;
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // The parked fork has cryo's handlers; the original died of the
        // default action (without a core file: RLIMIT_CORE 0).
        remote.mem.write(scratch, &[0u8; 64])?;
        remote.syscall(seized, Sysno::Prlimit64, [0, libc::RLIMIT_CORE as u64, scratch, 0, 0, 0]).map_err(failed)?;
        remote.syscall(seized, Sysno::RtSigaction, [sig as u64, scratch + 16, 0, 8, 0, 0]).map_err(failed)?;
        ptrace::set_sigmask(host, 0)?;
        // SAFETY: kill has no memory arguments.
        unsafe { libc::kill(host, sig) };
        ptrace::cont(host, 0)?;
        loop {
            match ptrace::wait(host)? {
                ptrace::Stop::Exited(_) | ptrace::Stop::Killed(_) => return Ok(()),
                ptrace::Stop::Signal(s) => ptrace::cont(host, s)?,
                _ => ptrace::cont(host, 0)?,
            }
        }
    }
    let code = libc::WEXITSTATUS(status) as u64;
    match remote.syscall_raw(seized, Sysno::ExitGroup, [code, 0, 0, 0, 0, 0]) {
        Err(cryo_injector::InjectError::Tracer(cryo_tracer::TracerError::Exited { .. })) => Ok(()),
        Err(e) => Err(failed(e)),
        Ok(r) => Err(RestoreError::Rebuild(format!("process {host}: exit_group returned {r}"))),
    }
}
