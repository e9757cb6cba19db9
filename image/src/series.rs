//! A directory of periodic images: `img-0001/`, `img-0002/`, ... and a
//! `latest` symlink that is switched (atomically, by rename) only after an
//! image is complete, so a checkpoint that dies half-way never becomes the one
//! a restart picks.

use crate::dir::ImageReader;
use crate::{ImageError, Result, INVENTORY_FILE};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const LATEST: &str = "latest";
const PREFIX: &str = "img-";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.display().to_string(), source }
}

/// One image of a series, as `cryo list` shows it.
#[derive(Debug, Clone)]
pub struct SeriesEntry {
    pub name: String,
    pub path: PathBuf,
    pub seq: u64,
    /// The inventory is there: the checkpoint finished.
    pub complete: bool,
    pub created_unix_ms: u64,
    pub bytes: u64,
    pub parent: Option<String>,
    pub latest: bool,
}

pub struct Series {
    dir: PathBuf,
}

impl Series {
    /// Opens (creating it 0700 if need be) a directory for periodic images.
    pub fn create(dir: &Path) -> Result<Series> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        Ok(Series { dir: dir.to_path_buf() })
    }

    pub fn open(dir: &Path) -> Series {
        Series { dir: dir.to_path_buf() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Is `dir` a series rather than a single image?
    pub fn is_series(dir: &Path) -> bool {
        !dir.join(INVENTORY_FILE).exists() && (dir.join(LATEST).exists() || Series::open(dir).names().is_ok_and(|n| !n.is_empty()))
    }

    fn names(&self) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io_err(&self.dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(seq) = name.strip_prefix(PREFIX).and_then(|s| s.parse::<u64>().ok()) {
                out.push((seq, name));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Where the next image goes.
    pub fn next_path(&self) -> Result<PathBuf> {
        let next = self.names()?.last().map_or(1, |(s, _)| s + 1);
        Ok(self.dir.join(format!("{PREFIX}{next:04}")))
    }

    /// Make a complete image the latest.
    pub fn commit(&self, image: &Path) -> Result<()> {
        let name = image.file_name().ok_or_else(|| ImageError::Invalid {
            path: image.display().to_string(),
            what: "not an image of this series".into(),
        })?;
        let tmp = self.dir.join(format!(".{LATEST}.tmp"));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp).map_err(io_err(&tmp))?;
        let latest = self.dir.join(LATEST);
        fs::rename(&tmp, &latest).map_err(io_err(&latest))
    }

    /// The newest complete image: `latest` if it is sound, else the highest
    /// numbered image that has its inventory.
    pub fn latest(&self) -> Result<PathBuf> {
        let link = self.dir.join(LATEST);
        if let Ok(target) = fs::read_link(&link) {
            let p = self.dir.join(target);
            if ImageReader::open(&p).is_ok() {
                return Ok(p);
            }
        }
        for (_, name) in self.names()?.iter().rev() {
            let p = self.dir.join(name);
            if ImageReader::open(&p).is_ok() {
                return Ok(p);
            }
        }
        Err(ImageError::Invalid { path: self.dir.display().to_string(), what: "holds no complete image".into() })
    }

    pub fn list(&self) -> Result<Vec<SeriesEntry>> {
        let latest = fs::read_link(self.dir.join(LATEST)).ok().map(|t| t.to_string_lossy().into_owned());
        let mut out = Vec::new();
        for (seq, name) in self.names()? {
            let path = self.dir.join(&name);
            let reader = ImageReader::open(&path).ok();
            let bytes = fs::read_dir(&path)
                .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            out.push(SeriesEntry {
                latest: latest.as_deref() == Some(name.as_str()),
                complete: reader.is_some(),
                created_unix_ms: reader.as_ref().map_or(0, |r| r.inventory.created_unix_ms),
                parent: reader.as_ref().and_then(|r| r.inventory.parent.clone()),
                name,
                path,
                seq,
                bytes,
            });
        }
        Ok(out)
    }

    /// Remove all but the newest `keep` complete images, and incomplete ones
    /// older than the latest. The latest image is never removed, nor an image
    /// that a kept incremental image reads pages from (its parents).
    pub fn prune(&self, keep: usize) -> Result<Vec<PathBuf>> {
        let entries = self.list()?;
        let latest_seq = entries.iter().find(|e| e.latest).map(|e| e.seq);
        let complete: Vec<&SeriesEntry> = entries.iter().filter(|e| e.complete).collect();
        let cut = complete.len().saturating_sub(keep.max(1));
        let mut kept: Vec<&SeriesEntry> = complete[cut..].to_vec();
        kept.extend(entries.iter().filter(|e| e.latest));
        let mut needed: Vec<PathBuf> = Vec::new();
        for e in &kept {
            let mut at = e.path.clone();
            let mut parent = e.parent.clone();
            while let Some(rel) = parent {
                let Ok(p) = fs::canonicalize(at.join(&rel)) else { break };
                if needed.contains(&p) {
                    break;
                }
                needed.push(p.clone());
                parent = ImageReader::open(&p).ok().and_then(|r| r.inventory.parent.clone());
                at = p;
            }
        }
        let mut removed = Vec::new();
        for e in &entries {
            let old_complete = e.complete && complete[..cut].iter().any(|c| c.seq == e.seq);
            let stale_partial = !e.complete && latest_seq.is_some_and(|l| e.seq < l);
            let is_parent = fs::canonicalize(&e.path).is_ok_and(|p| needed.contains(&p));
            if (old_complete || stale_partial) && !e.latest && !is_parent {
                fs::remove_dir_all(&e.path).map_err(io_err(&e.path))?;
                removed.push(e.path.clone());
            }
        }
        Ok(removed)
    }
}
