//! The fd table, classified before anything is injected, so an fd cryo cannot
//! restore fails the checkpoint up front with its number and kind.

use anyhow::{bail, Result};
use cryo_image::{FdImage, FdTarget};
use cryo_tracer::proc;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Character devices any process can open again by path.
const REOPENABLE_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

pub fn collect(pid: i32) -> Result<Vec<FdImage>> {
    let mut out = Vec::new();
    for f in proc::fds(pid)? {
        let cloexec = f.flags & libc::O_CLOEXEC as u32 != 0;
        let flags = f.flags & !(libc::O_CLOEXEC as u32);
        let target = classify(pid, &f)?;
        out.push(FdImage { fd: f.fd, cloexec, flags, pos: f.pos, target });
    }
    Ok(out)
}

/// Which of `cryo restart`'s own stdio fds stands in for an fd that led outside.
fn stdio_for(f: &proc::FdInfo) -> u8 {
    match f.fd {
        0..=2 => f.fd as u8,
        _ if f.flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32 => 0,
        _ => 1,
    }
}

fn classify(pid: i32, f: &proc::FdInfo) -> Result<FdTarget> {
    let link = &f.link;
    if link.starts_with("pipe:") {
        return Ok(FdTarget::Outside { stdio: stdio_for(f), what: link.clone() });
    }
    if link.starts_with("socket:") || link.starts_with("anon_inode:") {
        bail!("fd {} of process {pid} is a {link}, which cryo cannot checkpoint yet; close it or checkpoint another process", f.fd);
    }
    if link.ends_with(" (deleted)") {
        bail!("fd {} of process {pid} is {link}: files deleted while open cannot be checkpointed yet", f.fd);
    }
    if !link.starts_with('/') {
        bail!("fd {} of process {pid} is {link}, which cryo cannot checkpoint yet", f.fd);
    }
    // Follow the fd itself, not the path, so a file replaced meanwhile is noticed.
    let md = std::fs::metadata(format!("/proc/{pid}/fd/{}", f.fd))
        .map_err(|e| anyhow::anyhow!("fd {} of process {pid} ({link}): {e}", f.fd))?;
    let ft = md.file_type();
    if ft.is_file() || ft.is_dir() {
        return Ok(FdTarget::File {
            path: link.clone(),
            dev: md.dev(),
            inode: md.ino(),
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
        });
    }
    if ft.is_char_device() {
        if REOPENABLE_DEVICES.contains(&link.as_str()) {
            return Ok(FdTarget::Device { path: link.clone(), rdev: md.rdev() });
        }
        if link.starts_with("/dev/pts/") || link.starts_with("/dev/tty") || link == "/dev/console" {
            return Ok(FdTarget::Outside { stdio: stdio_for(f), what: format!("terminal {link}") });
        }
    }
    if ft.is_fifo() {
        return Ok(FdTarget::Outside { stdio: stdio_for(f), what: format!("fifo {link}") });
    }
    bail!("fd {} of process {pid} is {link} (a {}), which cryo cannot checkpoint yet", f.fd, kind_name(&ft))
}

fn kind_name(ft: &std::fs::FileType) -> &'static str {
    if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}
