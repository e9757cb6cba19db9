//! The image: a directory (0700) of files (0600).
//!
//! - `inventory.cryo`: what the image is (format, arch, kernel, cryo version,
//!   the processes, an optional parent image for incremental chains). Written
//!   last: an image without it is incomplete.
//! - `proc-<pid>.cryo`: one process: threads, registers, memory map, page index,
//!   fds, signal state.
//! - `pages-<pid>.img`: raw page contents, page-aligned, in the order of the
//!   page index; never serialized through serde, so dump and restore stream it.
//!   Its CRC32 is in the process file (unless the pages went from the frozen
//!   process straight into a stream: see `stream::send_image`).
//!
//! Every metadata file is framed as [`meta::Header`] + postcard payload, and the
//! header carries the payload's length and CRC32. Because each file is one
//! framed blob, a directory can later travel as a stream of (name, length,
//! bytes) records without changing what a file holds.

pub mod digest;
pub mod meta;
pub mod model;
pub mod chain;
pub mod ranges;
pub mod codec;
mod dir;
pub mod series;
pub mod stream;

pub use dir::{scratch_beside, ImageReader, ImageWriter};
pub use series::{Series, SeriesEntry};
pub use model::*;

/// Version of the on-disk layout; an image of another version is refused.
/// 4: a process's pages_crc may be unknown (pages sent from the process).
/// 5: the siginfo of pending signals.
/// 6: PR_SET_THP_DISABLE.
/// 7: socket options, half-closed TCP connections, UDP datagrams, a timerfd's
///    time of day, mlockall(MCL_FUTURE).
/// 8: pages a child shares with its parent since a fork, stored once.
/// 9: images of pages read while the tree ran (`checkpoint --precopy`).
pub const FORMAT_VERSION: u32 = 9;

pub const INVENTORY_FILE: &str = "inventory.cryo";

pub fn process_file(pid: i32) -> String {
    format!("proc-{pid}.cryo")
}

pub fn pages_file(pid: i32) -> String {
    format!("pages-{pid}.img")
}

/// Is `name` a pages file ([`pages_file`])?
pub fn is_pages_file(name: &str) -> bool {
    name.starts_with("pages-")
}

/// The bytes of an unlinked file (see `UnlinkedFile`), raw.
pub fn unlinked_file(dev: u64, inode: u64) -> String {
    format!("file-{dev:x}-{inode}.img")
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a cryo image file (bad magic); is this the right directory?")]
    BadMagic { path: String },
    #[error("{path}: image format version {found}, this cryo reads version {expected}; restart it with the cryo that made it")]
    Version { path: String, found: u32, expected: u32 },
    #[error("{path}: holds a {found}, expected a {expected}")]
    Kind { path: String, found: &'static str, expected: &'static str },
    #[error("{path}: truncated: header says {expected} bytes, file has {found}")]
    Truncated { path: String, expected: u64, found: u64 },
    #[error("{path}: checksum mismatch: the file is corrupt")]
    Checksum { path: String },
    #[error("{0}")]
    Stream(String),
    #[error("{path}: undecodable contents: {source}")]
    Decode { path: String, source: postcard::Error },
    #[error("{path}: {what}")]
    Invalid { path: String, what: String },
    #[error("{path}: image is incomplete ({INVENTORY_FILE} missing): the checkpoint that wrote it did not finish")]
    Incomplete { path: String },
    #[error("{path}: already exists and is not empty; choose a new directory for the image")]
    NotEmpty { path: String },
    #[error("{path}: owned by uid {owner}, not by you (uid {me}); refusing to restore another user's image")]
    Owner { path: String, owner: u32, me: u32 },
}

pub type Result<T> = std::result::Result<T, ImageError>;
