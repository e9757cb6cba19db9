//! The parasite's command ABI, shared by the blob (built `no_std` for
//! `<arch>-unknown-none`) and by the injector that drives it from outside.
//!
//! The blob runs in "trap mode": the tracer writes a command into the blob's
//! command area, points the thread's pc at the blob's entry with the command
//! area's address as the first argument, and continues it; the blob executes
//! the command and stops itself with the architecture's trap instruction.
#![no_std]

pub mod abi;
