//! Files with no path to reopen: deleted while open, and memfds. Their
//! bytes go into the image (raw, one file per inode, however many fds hold
//! it), with what it takes to recreate them: the old path or memfd name,
//! mode and seals.

use cryo_image::{FdTarget, ImageWriter, UnlinkedFile, UnlinkedKind};
use cryo_tracer::proc;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

#[derive(Default)]
pub struct Saver {
    pub files: Vec<UnlinkedFile>,
}

impl Saver {
    pub fn save(&mut self, pid: i32, f: &proc::FdInfo, md: &std::fs::Metadata, writer: &mut ImageWriter) -> anyhow::Result<FdTarget> {
        // The same encoding as a memory area's dev, so a memfd both mapped
        // and held as an fd is one object after restart.
        let dev = ((libc::major(md.dev()) as u64) << 32) | libc::minor(md.dev()) as u64;
        let inode = md.ino();
        if self.files.iter().any(|u| u.dev == dev && u.inode == inode) {
            return Ok(FdTarget::Unlinked { dev, inode });
        }
        // A new open of the fd's file: readable whatever the fd's own mode.
        let src = std::fs::File::open(format!("/proc/{pid}/fd/{}", f.fd))?;
        let kind = match f.link.strip_prefix("/memfd:") {
            Some(name) => {
                // SAFETY: F_GET_SEALS takes no pointer.
                let seals = unsafe { libc::fcntl(src.as_raw_fd(), libc::F_GET_SEALS) };
                UnlinkedKind::Memfd { name: name.trim_end_matches(" (deleted)").to_string(), seals: seals.max(0) as u32 }
            }
            None => UnlinkedKind::Deleted { path: f.link.trim_end_matches(" (deleted)").to_string() },
        };
        let data = cryo_image::unlinked_file(dev, inode);
        let mut out = writer.create_file(&data)?;
        let copied = std::io::copy(&mut src.take(md.len()), &mut out)?;
        if copied != md.len() {
            anyhow::bail!("copied {copied} of its {} bytes", md.len());
        }
        self.files.push(UnlinkedFile { dev, inode, kind, size: md.len(), mode: md.mode() & 0o7777, data });
        Ok(FdTarget::Unlinked { dev, inode })
    }
}
