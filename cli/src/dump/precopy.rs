//! `cryo checkpoint --precopy`: a checkpoint whose stops do not grow with
//! the tree's memory.
//!
//! A low-freeze checkpoint stops the tree for its snapshot's fork, which
//! copies the page tables of all its memory (14–30 ms per GiB here). A
//! pre-copy stops it twice, each time only for its state and a page-table
//! scan: the first pass starts write tracking (tracking.rs) in the frozen
//! tree, lets it go, write-protects its memory from outside and copies it
//! while it runs; the final pass is an incremental checkpoint against the
//! first, which stores only what the tree wrote meanwhile (from a snapshot
//! after all when that is much). The first pass's image, whose pages are
//! of no one moment, moves into the final image as its subdirectory
//! [`SUBDIR`]: restart reads the unchanged pages from there.

use super::{checkpoint as pass, tracking, Options, PreCopy, Summary};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the first pass's image lies in the final one.
pub const SUBDIR: &str = "precopy";

pub fn checkpoint(opts: &Options) -> Result<Summary> {
    if opts.parent.is_some() || opts.pages_in_tree || opts.hold.is_some() {
        anyhow::bail!("internal error: a pre-copy is a checkpoint of its own, into a directory");
    }
    let t0 = Instant::now();
    let pid = opts.pid;
    let first_dir = beside(&opts.out)?;
    // What this checkpoint starts it takes away again, unless asked to
    // leave tracking for later checkpoints (--track).
    let before = tracking::TrackedBefore::of(pid);
    let undo = || {
        let _ = std::fs::remove_dir_all(&first_dir);
        before.take_back();
    };
    let first = pass(&Options {
        pid,
        out: first_dir.clone(),
        kill: false,
        tcp_close: opts.tcp_close,
        hold: None,
        direct: false,
        parent: None,
        track: true,
        compress: opts.compress,
        killed: None,
        pages_in_tree: false,
        inherit: false,
        jobs: opts.jobs,
        pre_copy: PreCopy::First,
    });
    let first = match first {
        Ok(s) => s,
        Err(e) => {
            undo();
            return Err(e.context("the pre-copy's first pass failed; the process runs on as before"));
        }
    };
    tracing::info!("pre-copy: {} MiB copied while the tree ran, stopped {:.1} ms", first.bytes >> 20, first.frozen_us as f64 / 1000.0);
    let started = before.started();
    // Without tracking anywhere (an older kernel: said per process) the
    // copy is of no use: the final pass is a checkpoint of its own.
    let pre_copied = before.any() || !started.is_empty();
    if !pre_copied {
        let _ = std::fs::remove_dir_all(&first_dir);
    }
    let untrack = if opts.track { Vec::new() } else { started };
    let last = pass(&Options {
        pid,
        out: opts.out.clone(),
        kill: opts.kill,
        tcp_close: opts.tcp_close,
        hold: None,
        direct: opts.direct,
        parent: pre_copied.then(|| first_dir.clone()),
        track: opts.track,
        compress: opts.compress,
        killed: opts.killed,
        pages_in_tree: false,
        inherit: opts.inherit,
        jobs: opts.jobs,
        pre_copy: if pre_copied { PreCopy::Final { untrack } } else { PreCopy::No },
    });
    let last = match last {
        Ok(s) => s,
        Err(e) => {
            undo();
            return Err(e);
        }
    };
    let kept = last.parent.is_some();
    if pre_copied && !kept {
        // Nothing was left to the copy (the tracking was lost meanwhile: a
        // process closed it, or exec'd): the image is whole without it.
        std::fs::remove_dir_all(&first_dir).with_context(|| format!("removing {}", first_dir.display()))?;
    }
    let (first_pages, first_bytes) = if kept { (first.pages, first.bytes) } else { (0, 0) };
    Ok(Summary {
        frozen_us: first.frozen_us + last.frozen_us,
        total_us: t0.elapsed().as_micros() as u64,
        pages: first_pages + last.pages,
        bytes: first_bytes + last.bytes,
        parent: None,
        stops_us: vec![first.frozen_us, last.frozen_us],
        ..last
    })
}

/// The first pass's directory: beside the image (a rename away from its
/// place inside it), hidden, and removed by a later checkpoint to the same
/// place if this one is killed.
fn beside(out: &Path) -> Result<PathBuf> {
    cryo_image::scratch_beside(out, SUBDIR).with_context(|| format!("{} is not a usable directory name for an image", out.display()))
}
