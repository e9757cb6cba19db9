//! Looking at a frozen process's open files from outside: taking a copy of
//! an fd, telling whether two fds share one open file description, and
//! reading what sits in a pipe without taking it out.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const KCMP_FILE: libc::c_int = 0;

fn owned(r: libc::c_long) -> std::io::Result<OwnedFd> {
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// pidfd_getfd: this process gets a reference to another process's open file.
pub fn take_fd(pid: i32, fd: i32) -> std::io::Result<OwnedFd> {
    let pidfd = crate::pidfd::Pidfd::open(pid)?;
    // SAFETY: pidfd_getfd takes no memory arguments.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.raw(), fd, 0) })
}

/// Whether two fds refer to one open file description (kcmp KCMP_FILE);
/// `None` where kcmp is unavailable (CONFIG_KCMP off, or not permitted).
pub fn same_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Option<bool> {
    // SAFETY: kcmp with KCMP_FILE takes no memory arguments.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) };
    (r >= 0).then_some(r == 0)
}

/// A pipe's capacity and unread bytes, copied with tee(2) so the pipe keeps them.
pub fn peek_pipe(pid: i32, fd: i32) -> std::io::Result<(u32, Vec<u8>)> {
    let src = take_fd(pid, fd)?;
    // SAFETY: F_GETPIPE_SZ takes no pointer.
    let capacity = unsafe { libc::fcntl(src.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if capacity < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the valid pointer.
    if unsafe { libc::ioctl(src.as_raw_fd(), libc::FIONREAD, &mut queued) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if queued == 0 {
        return Ok((capacity as u32, Vec::new()));
    }
    let (copy_r, copy_w) = pipe()?;
    // SAFETY: F_SETPIPE_SZ takes no pointer. The copy must hold all the bytes.
    if unsafe { libc::fcntl(copy_w.as_raw_fd(), libc::F_SETPIPE_SZ, capacity) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: tee takes no memory arguments.
    let n = unsafe { libc::tee(src.as_raw_fd(), copy_w.as_raw_fd(), queued as usize, libc::SPLICE_F_NONBLOCK) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as i32 != queued {
        return Err(std::io::Error::other(format!("tee copied {n} of the {queued} bytes queued")));
    }
    drop(copy_w);
    let mut data = Vec::with_capacity(n as usize);
    std::fs::File::from(copy_r).read_to_end(&mut data)?;
    Ok((capacity as u32, data))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned both fds to us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The settings of a terminal another process holds open.
pub fn terminal_settings(pid: i32, fd: i32) -> std::io::Result<cryo_image::Termios> {
    let t = nix::sys::termios::tcgetattr(take_fd(pid, fd)?).map_err(std::io::Error::from)?;
    Ok(cryo_image::Termios {
        iflag: t.input_flags.bits() as u32,
        oflag: t.output_flags.bits() as u32,
        cflag: t.control_flags.bits() as u32,
        lflag: t.local_flags.bits() as u32,
        line: t.line_discipline,
        cc: t.control_chars.to_vec(),
    })
}

/// Give the terminal on `fd` (one of our own) saved settings; returns the
/// settings it had, to put back later.
pub fn set_terminal(fd: std::os::fd::BorrowedFd, t: &cryo_image::Termios) -> std::io::Result<nix::sys::termios::Termios> {
    use nix::sys::termios::{tcgetattr, tcsetattr, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg};
    let old = tcgetattr(fd).map_err(std::io::Error::from)?;
    let mut new = old.clone();
    new.input_flags = InputFlags::from_bits_retain(t.iflag as _);
    new.output_flags = OutputFlags::from_bits_retain(t.oflag as _);
    new.control_flags = ControlFlags::from_bits_retain(t.cflag as _);
    new.local_flags = LocalFlags::from_bits_retain(t.lflag as _);
    new.line_discipline = t.line;
    let n = new.control_chars.len().min(t.cc.len());
    new.control_chars[..n].copy_from_slice(&t.cc[..n]);
    tcsetattr(fd, SetArg::TCSANOW, &new).map_err(std::io::Error::from)?;
    Ok(old)
}

/// Bytes waiting to be read from an fd another process holds (FIONREAD).
pub fn queued_bytes(pid: i32, fd: i32) -> std::io::Result<i32> {
    let f = take_fd(pid, fd)?;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

/// A pseudo-terminal master another process holds: its number in /dev/pts,
/// and the slave's window size (rows, columns, x and y pixels).
pub fn pty_master(pid: i32, fd: i32) -> std::io::Result<(u32, [u16; 4])> {
    let f = take_fd(pid, fd)?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to the valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one struct winsize to the valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((n, [ws.ws_row, ws.ws_col, ws.ws_xpixel, ws.ws_ypixel]))
}
