use cryo_arch::Sysno;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Tracer(#[from] cryo_tracer::TracerError),
    #[error("remote {call:?} in {pid} failed: {errno}")]
    Syscall { pid: i32, call: Sysno, errno: nix::errno::Errno },
    #[error("the target {pid} has no private executable mapping to place the syscall gadget in")]
    NoGadgetSpot { pid: i32 },
    #[error("loading the parasite into {pid}: {what}")]
    Load { pid: i32, what: String },
    #[error("the parasite in {pid} faulted with signal {sig} at pc {pc:#x} (a cryo bug; the target was left unharmed)")]
    Fault { pid: i32, sig: i32, pc: u64 },
    #[error("parasite command in {pid}: {what}")]
    Command { pid: i32, what: String },
    #[error("target {pid} has a seccomp filter that killed or blocked cryo's syscall {call:?}; such processes cannot be checkpointed")]
    Seccomp { pid: i32, call: Sysno },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
}

pub type Result<T> = std::result::Result<T, InjectError>;

impl InjectError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> InjectError {
        InjectError::Io { what: what.into(), source }
    }
}
