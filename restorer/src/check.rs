//! Everything checked before anything is created: an image that cannot be
//! restored here is refused with the reason, and harms nothing.

use cryo_image::{FdTarget, ImageError, ImageReader, Inventory, PageOrigin, PageRun, ProcessImage, ProcessState, Vma, VmaKind};
use std::collections::{HashMap, HashSet};
use cryo_tracer::arch::{Arch, Native};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the image was taken on {image}, this machine is {here}: restart it on a {image} machine")]
    Arch { image: String, here: String },
    #[error("the image was taken on a CPU with {missing} (state components {mask:#x}), which this CPU lacks; its program may use them: restart it on a machine with that CPU feature")]
    CpuFeatures { missing: String, mask: u64 },
    #[error("the image is damaged: {0}")]
    Corrupt(String),
    #[error("{what} {path} is missing or unreadable ({source}); restore needs it at the same path")]
    MissingFile { what: &'static str, path: String, source: std::io::Error },
    #[error("could not create the restore namespace: {what}: {errno}. {hint}")]
    Namespace { what: String, errno: nix::errno::Errno, hint: &'static str },
    #[error("pid {pid} could not be given back to the process: {errno}")]
    Pid { pid: i32, errno: nix::errno::Errno },
    #[error(transparent)]
    Tracer(#[from] cryo_tracer::TracerError),
    #[error(transparent)]
    Inject(#[from] cryo_injector::InjectError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("restoring: {0}")]
    Rebuild(String),
    #[error("{error}; the kernel's out-of-memory killer ended {killed} processes meanwhile: the tree needs more memory than there was (free some, or raise the memory limit of cryo's cgroup); nothing of the tree was left running")]
    OutOfMemory { error: Box<RestoreError>, killed: u64 },
    #[error("{0}; nothing of the tree was left running")]
    Cancelled(String),
    #[error("{0}; the restored process would see other data than it had. Put the file back as it was, or pass --allow-changed-files to restart anyway")]
    ChangedFile(String),
}

pub fn image_fits_this_machine(img: &ImageReader) -> Result<(), RestoreError> {
    let inv = &img.inventory;
    if inv.arch != Native::NAME {
        return Err(RestoreError::Arch { image: inv.arch.clone(), here: Native::NAME.to_string() });
    }
    let ps = cryo_tracer::arch::page_size();
    if inv.page_size != ps {
        return Err(RestoreError::Corrupt(format!("page size {} in the image, {ps} here", inv.page_size)));
    }
    let missing = inv.cpu_features & !Native::host_cpu_features();
    if missing != 0 && Native::host_cpu_features() != 0 {
        let mut names: Vec<String> = (0..64)
            .filter(|b| missing & (1u64 << b) != 0)
            .map(|b| Native::cpu_feature_name(b).map_or(format!("bit {b}"), str::to_string))
            .collect();
        names.dedup();
        return Err(RestoreError::CpuFeatures { missing: names.join(", "), mask: missing });
    }
    if !inv.processes.iter().any(|p| p.pid == inv.root_pid) {
        return Err(RestoreError::Corrupt(format!("root pid {} is not among the image's processes", inv.root_pid)));
    }
    Ok(())
}

/// Bounds and ordering a hostile or damaged image could get wrong; every
/// later step relies on them.
pub fn process_is_sane(p: &ProcessImage) -> Result<(), RestoreError> {
    let bad = |w: String| Err(RestoreError::Corrupt(format!("process {}: {w}", p.pid)));
    if p.threads.is_empty() || p.threads[0].regsets.is_empty() || p.threads[0].regsets[0].data.len() != Native::GP_SIZE {
        return bad("no usable registers".into());
    }
    if p.threads.iter().any(|t| t.regsets.is_empty() || t.regsets[0].data.len() != Native::GP_SIZE) {
        return bad("a thread has no usable registers".into());
    }
    // image_fits_this_machine checked that the image's page size is this machine's.
    let ps = cryo_tracer::arch::page_size();
    let mut prev_end = 0;
    for v in &p.vmas {
        if v.start >= v.end || v.start % ps != 0 || v.end % ps != 0 || v.start < prev_end {
            return bad(format!("memory area {:#x}-{:#x} is malformed or overlaps", v.start, v.end));
        }
        prev_end = v.end;
    }
    // Stored runs lie in the pages file (its raw stream, when compressed),
    // each in its own place: written as they left the process, not
    // necessarily in address order.
    let raw_bytes = p.compression.as_ref().map_or(p.pages_bytes, |c| c.raw_bytes);
    let mut placed = Vec::new();
    let mut prev_end = 0;
    for r in &p.pages {
        let len = r.npages.checked_mul(ps).ok_or_else(|| RestoreError::Corrupt("page run too long".into()))?;
        let Some(v) = p.vmas.iter().find(|v| v.start <= r.vaddr && r.vaddr < v.end) else {
            return bad(format!("pages at {:#x} lie outside every memory area", r.vaddr));
        };
        if r.vaddr < prev_end || r.vaddr.checked_add(len).is_none_or(|e| e > v.end) {
            return bad(format!("pages at {:#x} overlap others or overrun their area", r.vaddr));
        }
        prev_end = r.vaddr + len;
        match r.origin {
            // In a parent image's pages file (cryo_image::chain checks those).
            PageOrigin::Parent => continue,
            PageOrigin::Inherited if v.anonymous() => continue,
            PageOrigin::Inherited => return bad(format!("pages at {:#x} are said to be the parent's, but lie in {}", r.vaddr, v.name)),
            PageOrigin::Here | PageOrigin::Reference => {}
        }
        if matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar | VmaKind::Vsyscall) && r.origin != PageOrigin::Reference {
            return bad(format!("pages at {:#x} target the vDSO", r.vaddr));
        }
        if r.file_offset % ps != 0 || r.file_offset.checked_add(len).is_none_or(|e| e > raw_bytes) {
            return bad(format!("pages at {:#x} lie beyond the end of the pages file", r.vaddr));
        }
        placed.push((r.file_offset, len));
    }
    placed.sort();
    if placed.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return bad("two page runs share bytes of the pages file".into());
    }
    if let Some(c) = &p.compression {
        let frames = c.raw_bytes.div_ceil(cryo_image::codec::FRAME_RAW);
        if c.frames.len() as u64 != frames || c.frames.iter().any(|&(off, len)| off.checked_add(len as u64).is_none_or(|e| e > p.pages_bytes)) {
            return bad("the compressed pages file's frame table does not match it".into());
        }
    }
    if p.sigactions.len() > 64 || p.fds.len() > 1 << 20 {
        return bad("too many signal actions or fds".into());
    }
    Ok(())
}

/// The program holds pointers into its vDSO, which restart moves to the old
/// address: the code there must be this kernel's, or (another kernel's) one
/// that restart can redirect to this kernel's. The image keeps a copy.
pub fn vdso_matches(img: &ImageReader, p: &ProcessImage) -> Result<(), RestoreError> {
    let Some(copy) = read_vdso_copy(p, img.open_pages(p.pid)?)? else { return Ok(()) };
    let (mine, bytes) = own_vdso()?;
    if bytes == copy {
        return Ok(());
    }
    crate::vdso::redirect(&copy, &bytes, mine.start).map(drop)
}

/// The image's copy of `p`'s vDSO, from its own pages file `own`.
pub fn read_vdso_copy(p: &ProcessImage, own: std::fs::File) -> Result<Option<Vec<u8>>, RestoreError> {
    let Some((run, theirs)) = vdso_copy(p) else { return Ok(None) };
    let mut copy = vec![0u8; theirs.len() as usize];
    cryo_image::codec::PagesReader::new(own, p.compression.clone())
        .read_exact_at(&mut copy, run.file_offset)
        .map_err(|e| RestoreError::Io { what: format!("reading the vDSO's copy of process {}", p.pid), source: e })?;
    Ok(Some(copy))
}

/// This kernel's vDSO as cryo has it mapped: its area and its bytes.
pub fn own_vdso() -> Result<(Vma, Vec<u8>), RestoreError> {
    let me = std::process::id() as i32;
    let mine = cryo_tracer::proc::vmas(me)?
        .into_iter()
        .find(|v| v.kind == VmaKind::Vdso)
        .ok_or_else(|| RestoreError::Rebuild("this kernel maps no vDSO, which the image's program uses".into()))?;
    let mut bytes = vec![0u8; mine.len() as usize];
    cryo_tracer::proc::MemFile::open(me)?.read(mine.start, &mut bytes)?;
    Ok((mine, bytes))
}

/// The run of `p`'s pages file holding its copy of the vDSO (kept for this
/// check only), and the vDSO's area.
pub fn vdso_copy(p: &ProcessImage) -> Option<(&PageRun, &Vma)> {
    let theirs = p.vmas.iter().find(|v| v.kind == VmaKind::Vdso)?;
    let run = p.pages.iter().find(|r| r.vaddr == theirs.start && r.origin == PageOrigin::Reference)?;
    Some((run, theirs))
}

pub fn files_exist(p: &ProcessImage) -> Result<(), RestoreError> {
    let check = |what: &'static str, path: &str| {
        std::fs::metadata(path).map(drop).map_err(|source| RestoreError::MissingFile { what, path: path.to_string(), source })
    };
    check("the program", &p.exe)?;
    check("the working directory", &p.cwd)?;
    for v in &p.vmas {
        if v.kind == VmaKind::File {
            check("mapped file", &v.name)?;
        }
    }
    for f in &p.fds {
        if let FdTarget::File { path, .. } | FdTarget::Device { path, .. } | FdTarget::Fifo { path, .. } = &f.target {
            check("open file", path)?;
        }
    }
    Ok(())
}

/// Files the tree had open must still be what it saw: a file it only read
/// that changed size or time, or a file it wrote that is now shorter, would
/// hand it data that does not match its state. Refused unless `allow`
/// (`--allow-changed-files`), then warned. A file it writes that only grew
/// (its own log, written on after a checkpoint that left it running) is
/// warned about.
pub fn files_unchanged(p: &ProcessImage, allow: bool) -> Result<(), RestoreError> {
    use std::os::unix::fs::MetadataExt;
    for f in &p.fds {
        let FdTarget::File { path, size, mtime_ns, .. } = &f.target else { continue };
        let Ok(md) = std::fs::metadata(path) else { continue };
        if !md.is_file() {
            continue;
        }
        let now_mtime = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
        if md.len() == *size && now_mtime == *mtime_ns {
            continue;
        }
        let written = f.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32;
        let what = format!(
            "{path} (fd {} of process {}) changed since the checkpoint: {} bytes then, {} now{}",
            f.fd,
            p.pid,
            size,
            md.len(),
            if now_mtime != *mtime_ns { ", modified since" } else { "" }
        );
        if written && md.len() >= *size {
            tracing::warn!("{what}; the process writes it and carries on from its old offset");
        } else if allow {
            tracing::warn!("{what}; restarting anyway (--allow-changed-files)");
        } else {
            return Err(RestoreError::ChangedFile(what));
        }
    }
    Ok(())
}

/// The tree the image describes must be one the restore can build: the root
/// first, every other process after its parent, each pid once, every pipe end
/// backed by a recorded pipe.
pub fn tree_is_sane(inv: &Inventory, images: &HashMap<i32, ProcessImage>) -> Result<(), RestoreError> {
    let bad = |w: String| Err(RestoreError::Corrupt(w));
    if inv.processes.first().map(|e| e.pid) != Some(inv.root_pid) {
        return bad("the root process is not listed first".into());
    }
    let mut seen = HashSet::new();
    for (i, e) in inv.processes.iter().enumerate() {
        if e.pid <= 0 || !seen.insert(e.pid) {
            return bad(format!("process id {} is invalid or listed twice", e.pid));
        }
        if i > 0 && !inv.processes[..i].iter().any(|p| p.pid == e.ppid && p.state == ProcessState::Live) {
            return bad(format!("process {} is listed before its parent {}", e.pid, e.ppid));
        }
    }
    for p in inv.pipes.iter().chain(&inv.fifos) {
        if p.data.len() > p.capacity as usize {
            return bad(format!("pipe {} holds more bytes than its capacity", p.inode));
        }
    }
    for u in &inv.unlinked {
        if u.data.contains('/') || u.data.starts_with('.') {
            return bad(format!("the contents of file {} are said to be outside the image ({})", u.inode, u.data));
        }
    }
    for p in images.values() {
        for f in &p.fds {
            if let FdTarget::Pipe { inode, .. } = f.target {
                if !inv.pipes.iter().any(|x| x.inode == inode) {
                    return bad(format!("process {}: fd {} refers to pipe {inode}, which the image does not hold", p.pid, f.fd));
                }
            }
            if let FdTarget::Unlinked { dev, inode } = f.target {
                if !inv.unlinked.iter().any(|u| u.dev == dev && u.inode == inode) {
                    return bad(format!("process {}: fd {} refers to file {inode}, which the image does not hold", p.pid, f.fd));
                }
            }
        }
    }
    Ok(())
}
