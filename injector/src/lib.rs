//! Running code inside a frozen target: remote syscalls through a
//! "syscall; trap" gadget, and the parasite blob loaded into the target's
//! address space and driven over shared memory.

pub mod batch;
pub mod blob;
pub mod error;
pub mod parasite;
pub mod remote;
pub mod snapshot;

pub use batch::{Arg, Batch, BatchOutput};
pub use error::{InjectError, Result};
pub use parasite::Parasite;
pub use remote::Remote;
pub use snapshot::Snapshot;
