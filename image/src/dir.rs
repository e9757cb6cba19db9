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

/// Writes an image. Dropped before [`ImageWriter::finish`], it removes what it
/// wrote, so a failed checkpoint never leaves something that looks like an image.
pub struct ImageWriter {
    dir: PathBuf,
    created_dir: bool,
    files: Vec<PathBuf>,
    finished: bool,
}

impl ImageWriter {
    /// Creates `dir` (0700), or takes an existing empty directory of ours.
    pub fn create(dir: &Path) -> Result<ImageWriter> {
        let created_dir = match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(ImageError::NotEmpty { path: dir.display().to_string() });
                }
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o700).create(dir).map_err(io_err(dir))?;
                true
            }
            Err(e) => return Err(io_err(dir)(e)),
        };
        // Whatever the umask, images hold memory and so secrets.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        Ok(ImageWriter { dir: dir.to_path_buf(), created_dir, files: Vec::new(), finished: false })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new file in the image, created 0600.
    pub fn create_file(&mut self, name: &str) -> Result<File> {
        let path = self.dir.join(name);
        let f = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        self.files.push(path);
        Ok(f)
    }

    pub fn create_pages(&mut self, pid: i32) -> Result<File> {
        self.create_file(&pages_file(pid))
    }

    pub fn write_process(&mut self, p: &ProcessImage) -> Result<()> {
        let bytes = meta::encode(Kind::Process, p);
        let name = process_file(p.pid);
        let mut f = self.create_file(&name)?;
        let path = self.dir.join(&name);
        f.write_all(&bytes).map_err(io_err(&path))
    }

    /// Writes the inventory under a temporary name and renames it into place:
    /// from that moment, and not before, the directory is a complete image.
    pub fn finish(mut self, inv: &Inventory) -> Result<()> {
        let bytes = meta::encode(Kind::Inventory, inv);
        let tmp = format!("{INVENTORY_FILE}.tmp");
        let mut f = self.create_file(&tmp)?;
        let tmp_path = self.dir.join(&tmp);
        f.write_all(&bytes).map_err(io_err(&tmp_path))?;
        f.sync_all().map_err(io_err(&tmp_path))?;
        let final_path = self.dir.join(INVENTORY_FILE);
        fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
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

    pub fn read_process(&self, pid: i32) -> Result<ProcessImage> {
        let path = self.dir.join(process_file(pid));
        let p: ProcessImage = read_meta(&path, Kind::Process)?;
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
