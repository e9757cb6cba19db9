//! Creating and opening image directories.

use crate::meta::{self, Kind};
use crate::model::{Inventory, ProcessImage};
use crate::{pages_file, process_file, ImageError, Result, INVENTORY_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.display().to_string(), source }
}

/// Writes an image. Everything goes into a hidden `.NAME.partial-PID`
/// directory beside the target, renamed to the target only once complete; a
/// writer dropped before [`ImageWriter::finish`] removes it, so a failed
/// checkpoint never leaves something that looks like an image, and one killed
/// outright leaves only a hidden directory that the next writer there removes.
pub struct ImageWriter {
    dir: PathBuf,
    partial: PathBuf,
    finished: bool,
}

const PARTIAL: &str = ".partial-";

fn partial_prefix(dir: &Path) -> Option<String> {
    Some(format!(".{}{PARTIAL}", dir.file_name()?.to_str()?))
}

/// Partial images of `dir` left by writers that no longer run.
fn remove_stale_partials(dir: &Path, parent: &Path) {
    let (Some(prefix), Ok(entries)) = (partial_prefix(dir), fs::read_dir(parent)) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // `{prefix}{pid}`, or `{prefix}{pid}.{what}` (see `scratch_beside`).
        let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.split('.').next()?.parse::<i32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A directory beside image `dir` for this process's own work towards it
/// (`what` names it): removed as a stale partial image once this process
/// is gone, as a partial image is.
pub fn scratch_beside(dir: &Path, what: &str) -> Option<PathBuf> {
    Some(parent_of(dir).join(format!("{}{}.{what}", partial_prefix(dir)?, std::process::id())))
}

/// The directory `dir` lies in ("." for a bare name).
fn parent_of(dir: &Path) -> &Path {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl ImageWriter {
    /// Prepares to write `dir`, which must not exist or be an empty directory.
    pub fn create(dir: &Path) -> Result<ImageWriter> {
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(ImageError::NotEmpty { path: dir.display().to_string() });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
        let parent = parent_of(dir);
        let prefix = partial_prefix(dir).ok_or_else(|| ImageError::Invalid {
            path: dir.display().to_string(),
            what: "not a usable directory name for an image".into(),
        })?;
        remove_stale_partials(dir, parent);
        let partial = parent.join(format!("{prefix}{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        // Whatever the umask, images hold memory and so secrets.
        fs::DirBuilder::new().mode(0o700).create(&partial).map_err(io_err(&partial))?;
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o700)).map_err(io_err(&partial))?;
        Ok(ImageWriter { dir: dir.to_path_buf(), partial, finished: false })
    }

    /// Where the image will be once complete.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new file in the image, created 0600.
    pub fn create_file(&mut self, name: &str) -> Result<File> {
        let path = self.partial.join(name);
        OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))
    }

    pub fn create_pages(&mut self, pid: i32) -> Result<File> {
        self.create_file(&pages_file(pid))
    }

    pub fn write_process(&mut self, p: &ProcessImage) -> Result<()> {
        let name = process_file(p.pid);
        self.write_meta(&name, &meta::encode(Kind::Process, p))
    }

    // Not synced: a checkpoint writes a process's metadata while the tree is
    // stopped, and an fsync there waits for the journal (on a file system
    // mounted with discard, also for discarding what was deleted before).
    // Every file is framed and checksummed: one a crash lost is reported
    // as such when the image is read.
    fn write_meta(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut f = self.create_file(name)?;
        let path = self.partial.join(name);
        f.write_all(bytes).map_err(io_err(&path))
    }

    /// Moves the complete image `from` (on the same file system) into this
    /// one as subdirectory `name`: it comes and goes with this image.
    pub fn adopt(&mut self, name: &str, from: &Path) -> Result<()> {
        let to = self.partial.join(name);
        fs::rename(from, &to).map_err(io_err(&to))
    }

    /// Writes the inventory and renames the directory into place: from that
    /// moment, and not before, `dir` is a complete image.
    pub fn finish(&mut self, inv: &Inventory) -> Result<()> {
        self.write_meta(INVENTORY_FILE, &meta::encode(Kind::Inventory, inv))?;
        // Page files are not synced: that would cost a disk write of all of
        // memory, and their checksums catch pages a crash lost.
        // rename(2) replaces an empty directory, and nothing else.
        fs::rename(&self.partial, &self.dir).map_err(io_err(&self.dir))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}

/// Reads an image, checking ownership, completeness, and each file's framing.
pub struct ImageReader {
    dir: PathBuf,
    pub inventory: Inventory,
}

/// Metadata files are small; anything larger than this is not one of ours.
const MAX_META: u64 = 256 << 20;

impl ImageReader {
    pub fn open(dir: &Path) -> Result<ImageReader> {
        let md = fs::metadata(dir).map_err(io_err(dir))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if md.uid() != me {
            return Err(ImageError::Owner { path: dir.display().to_string(), owner: md.uid(), me });
        }
        let inv_path = dir.join(INVENTORY_FILE);
        if !inv_path.exists() {
            return Err(ImageError::Incomplete { path: dir.display().to_string() });
        }
        let inventory = read_meta(&inv_path, Kind::Inventory)?;
        Ok(ImageReader { dir: dir.to_path_buf(), inventory })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses an image whose pages are not those of one moment (the first
    /// pass of a pre-copy), for the uses that need them to be.
    pub fn of_one_moment(&self) -> Result<()> {
        if !self.inventory.live_pages {
            return Ok(());
        }
        let whole = self.dir.parent().filter(|d| d.join(INVENTORY_FILE).exists());
        Err(ImageError::Invalid {
            path: self.dir.display().to_string(),
            what: format!(
                "holds memory copied while the tree ran (the first pass of `cryo checkpoint --precopy`), not a checkpoint of its own; use {}",
                whole.map_or("the image that names it as its parent".to_string(), |d| d.display().to_string())
            ),
        })
    }

    /// A process's metadata only, without looking at its pages file (which a
    /// stream being received may not have delivered yet).
    pub fn read_process_meta(&self, pid: i32) -> Result<ProcessImage> {
        read_meta(&self.dir.join(process_file(pid)), Kind::Process)
    }

    pub fn read_process(&self, pid: i32) -> Result<ProcessImage> {
        let p = self.read_process_meta(pid)?;
        let pages = self.dir.join(pages_file(pid));
        let have = fs::metadata(&pages).map_err(io_err(&pages))?.len();
        if have != p.pages_bytes {
            return Err(ImageError::Truncated {
                path: pages.display().to_string(),
                expected: p.pages_bytes,
                found: have,
            });
        }
        Ok(p)
    }

    pub fn pages_path(&self, pid: i32) -> PathBuf {
        self.dir.join(pages_file(pid))
    }

    pub fn open_pages(&self, pid: i32) -> Result<File> {
        let path = self.pages_path(pid);
        File::open(&path).map_err(io_err(&path))
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(path: &Path, kind: Kind) -> Result<T> {
    let f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    if len > MAX_META {
        return Err(ImageError::Invalid {
            path: path.display().to_string(),
            what: format!("{len} bytes is too large for a metadata file"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(MAX_META).read_to_end(&mut bytes).map_err(io_err(path))?;
    meta::decode(&path.display().to_string(), kind, &bytes)
}
