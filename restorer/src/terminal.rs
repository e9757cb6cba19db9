//! A program that ran on the user's terminal gets `cryo restart`'s terminal
//! (like criu --shell-job), set up the way it had its own: a full-screen
//! program or a line editor left it in raw mode, and expects it so. A
//! foreground restart puts the terminal's settings back when the tree is gone.

use cryo_image::{FdTarget, ProcessImage, Termios};
use std::os::fd::BorrowedFd;

pub struct Terminal {
    fd: i32,
    before: nix::sys::termios::Termios,
}

/// Apply the saved settings of the terminal the image's processes had to
/// the one cryo runs on (the first stdio fd of cryo's that is a terminal
/// and stands in for one).
pub fn adopt<'a>(processes: impl Iterator<Item = &'a ProcessImage>) -> Option<Terminal> {
    for p in processes {
        for f in &p.fds {
            let FdTarget::Terminal { stdio, termios: Some(t), path } = &f.target else { continue };
            let fd = *stdio as i32;
            // SAFETY: isatty takes no pointers.
            if unsafe { libc::isatty(fd) } != 1 {
                continue;
            }
            // SAFETY: fds 0-2 stay open for all of cryo's life.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            match apply(borrowed, t) {
                Ok(before) => return Some(Terminal { fd, before }),
                Err(e) => tracing::warn!("could not give this terminal the settings {path} had: {e}"),
            }
        }
    }
    None
}

fn apply(fd: BorrowedFd, t: &Termios) -> std::io::Result<nix::sys::termios::Termios> {
    cryo_tracer::files::set_terminal(fd, t)
}

impl Terminal {
    /// Tell the restored root to look at its (new) terminal's size.
    pub fn notify(&self, root_host: i32) {
        // SAFETY: kill takes no pointers.
        unsafe { libc::kill(root_host, libc::SIGWINCH) };
    }

    /// Put back the settings the terminal had before the restart.
    pub fn restore(self) {
        // SAFETY: fds 0-2 stay open for all of cryo's life.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = nix::sys::termios::tcsetattr(fd, nix::sys::termios::SetArg::TCSANOW, &self.before);
    }
}
