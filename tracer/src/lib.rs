//! Seizing and freezing process trees with ptrace, and everything the tracer
//! reads from outside: registers, signal masks, rseq, /proc.

pub mod arch;
pub mod error;
pub mod fault;
pub mod files;
pub mod netlink;
pub mod pidfd;
pub mod uffd;
pub mod proc;
pub mod ptrace;
pub mod relay;
pub mod seize;
pub mod sockets;
pub mod sockopts;
pub mod tree;

pub use error::{Result, TracerError};
pub use seize::{Seized, Thread};
pub use tree::{Tree, Zombie};
