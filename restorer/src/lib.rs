//! `cryo restart`: rebuild a checkpointed process from its image.
//!
//! The restored process starts life as a fork of cryo, created with its old
//! pid (clone3 set_tid) by a small init inside a user+pid+mount namespace that
//! cryo makes. cryo then seizes it and, through the same parasite blob the
//! checkpoint uses, has it unmap cryo's memory, map the image's, read pages
//! straight into place, and set up mm, fds and signal state. Its last syscall
//! unmaps the blob; at that syscall's exit cryo loads the saved registers and
//! lets go.

mod check;
mod foreground;
mod layout;
mod ns;
mod rebuild;

use cryo_image::ImageReader;
use std::path::PathBuf;

pub use check::RestoreError;

pub struct Options {
    pub image: PathBuf,
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
    /// Restore inside a new user+pid namespace so the process keeps its pid.
    pub pid_ns: bool,
}

pub type Result<T> = std::result::Result<T, RestoreError>;

/// Restart the image. Returns the exit status to leave with: the restored
/// root's (foreground), or 0 once it runs (detached).
pub fn restart(opts: &Options) -> Result<u8> {
    let img = ImageReader::open(&opts.image)?;
    check::image_fits_this_machine(&img)?;
    let root = img.inventory.root_pid;
    let process = img.read_process(root)?;
    check::process_is_sane(&process)?;
    check::files_exist(&process)?;
    check::vdso_matches(&img, &process)?;

    let mut sandbox = if opts.pid_ns { ns::Sandbox::with_pid_ns()? } else { ns::Sandbox::plain() };
    let child = sandbox.spawn(root)?;
    match rebuild::rebuild(&img, &process, child.host_pid, opts.pid_ns) {
        Ok(()) => {}
        Err(e) => {
            sandbox.kill_all();
            return Err(e);
        }
    }
    sandbox.done_spawning();
    if let Some(p) = &opts.pidfile {
        std::fs::write(p, format!("{}\n", child.host_pid))
            .map_err(|e| RestoreError::Io { what: format!("writing pidfile {}", p.display()), source: e })?;
    }
    if opts.detach {
        return Ok(0);
    }
    Ok(foreground::wait(&sandbox, child.host_pid))
}
