use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("no process with pid {0}")]
    NoSuchProcess(i32),
    #[error("process {pid} belongs to uid {owner}, not to you (uid {me}); checkpoint only your own processes")]
    OtherUser { pid: i32, owner: u32, me: u32 },
    #[error("process {pid} is already traced by pid {tracer} ({tracer_comm}); detach that debugger (gdb/strace) first")]
    AlreadyTraced { pid: i32, tracer: i32, tracer_comm: String },
    #[error("process {pid} is being checkpointed or restored by another cryo (pid {by}); wait for it to finish")]
    Busy { pid: i32, by: i32 },
    #[error("process {pid} is not dumpable (it called prctl(PR_SET_DUMPABLE, 0) or runs a setuid/setgid/unreadable program); the kernel forbids tracing it")]
    NotDumpable { pid: i32 },
    #[error("ptrace of {pid} is blocked by Yama (kernel.yama.ptrace_scope = {scope}); run cryo as an ancestor of the process, or ask an admin to set ptrace_scope to 0")]
    Yama { pid: i32, scope: String },
    #[error("process {pid} runs under a seccomp {mode} (/proc/{pid}/status Seccomp: {code}); its filter cannot be read or suspended without privileges, and cryo's injected syscalls could get it killed, so it is not touched")]
    Seccomp { pid: i32, code: u32, mode: &'static str },
    #[error("process {pid} is a zombie (exited, not yet reaped by its parent): nothing to checkpoint")]
    Zombie { pid: i32 },
    #[error("process {pid} is waiting for a vfork()ed child to exec or exit; try again in a moment")]
    Vfork { pid: i32 },
    #[error("process {pid} did not stop within {secs} s (state {state}: blocked in the kernel uninterruptibly); try again later")]
    StopTimeout { pid: i32, secs: u64, state: String },
    #[error("process {pid} exited while cryo was working on it")]
    Exited { pid: i32 },
    #[error("{what} of {pid}: {errno}")]
    Ptrace { what: String, pid: i32, errno: Errno },
    #[error("thread {tid}: register set {note_type:#x} holds {now}, not the saved {saved}, and ptrace cannot write it (the thread sets it itself); this is a cryo bug, please report it")]
    RegisterNotSet { tid: i32, note_type: u32, now: String, saved: String },
    #[error("thread {pid} has {bytes}-byte general registers, not {arch}'s: it is a process of another architecture (e.g. a 32-bit program on a 64-bit kernel); checkpoint it with a cryo built for that architecture (e.g. the armv7 build)")]
    ForeignArch { pid: i32, bytes: usize, arch: &'static str },
    #[error("reading {path}: {source}")]
    Proc { path: String, source: std::io::Error },
    #[error("parsing {path}: {what}")]
    Parse { path: String, what: String },
    #[error("fault injected at stage '{0}' (CRYO_FAULT)")]
    Injected(String),
    #[error("stopped by {} before finishing; everything cryo changed was undone", signal_name(*.sig))]
    Interrupted { sig: i32 },
}

pub type Result<T> = std::result::Result<T, TracerError>;

impl TracerError {
    /// Traced already: by another cryo (a checkpoint in progress), or by a debugger.
    pub fn traced(pid: i32, tracer: i32) -> TracerError {
        let tracer_comm = crate::proc::status(tracer).map(|s| s.name).unwrap_or_else(|_| "?".into());
        if tracer_comm == "cryo" {
            // The tracer is usually the worker of the `cryo` a user started: name that one.
            let parent = crate::proc::status(tracer).map(|s| s.ppid).unwrap_or(0);
            let by = match crate::proc::status(parent) {
                Ok(p) if p.name == "cryo" => parent,
                _ => tracer,
            };
            TracerError::Busy { pid, by }
        } else {
            TracerError::AlreadyTraced { pid, tracer, tracer_comm }
        }
    }

    pub fn ptrace(what: impl Into<String>, pid: i32, errno: Errno) -> TracerError {
        if errno == Errno::ESRCH {
            return TracerError::Exited { pid };
        }
        TracerError::Ptrace { what: what.into(), pid, errno }
    }
    pub fn proc(path: impl Into<String>, source: std::io::Error) -> TracerError {
        TracerError::Proc { path: path.into(), source }
    }
}

pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}
