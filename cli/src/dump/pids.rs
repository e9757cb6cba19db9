//! Pids as the tree sees them. A tree that `cryo restart` brought back runs in
//! a pid namespace of its own, where its processes have their old pids; cryo,
//! outside, sees other numbers. The image records the tree's own view, so a
//! restart of a restart gives back the pids the programs know.

use anyhow::{bail, Result};
use cryo_tracer::proc;

pub struct PidView {
    /// Namespace levels from cryo's down to the root's.
    depth: usize,
}

fn last(ids: &[i32], host: i32) -> i32 {
    ids.last().copied().unwrap_or(host)
}

impl PidView {
    pub fn of_root(root: i32) -> Result<PidView> {
        Ok(PidView { depth: proc::status(root)?.ns_pid.len() })
    }

    fn status(&self, host: i32) -> Result<proc::Status> {
        let st = proc::status(host)?;
        if !st.ns_pid.is_empty() && st.ns_pid.len() != self.depth {
            bail!(
                "process {host} is in another pid namespace than the root of the tree; trees spanning nested pid namespaces cannot be checkpointed"
            );
        }
        Ok(st)
    }

    /// (pid, pgid, sid) of a process or thread as its namespace shows them.
    pub fn ids(&self, host: i32) -> Result<(i32, i32, i32)> {
        let st = self.status(host)?;
        let stat = proc::stat(host)?;
        Ok((last(&st.ns_pid, host), last(&st.ns_pgid, stat.pgid), last(&st.ns_sid, stat.sid)))
    }

    pub fn pid(&self, host: i32) -> Result<i32> {
        Ok(last(&self.status(host)?.ns_pid, host))
    }

    /// The parent's pid in the tree's namespace; 0 when the parent lives
    /// outside it (as the namespace's init does for nobody, and cryo's
    /// restart init does not: it is pid 1 inside).
    pub fn parent(&self, host_ppid: i32) -> i32 {
        match proc::status(host_ppid) {
            Ok(st) if st.ns_pid.len() == self.depth => last(&st.ns_pid, host_ppid),
            Ok(_) => 0,
            Err(_) => host_ppid,
        }
    }
}
