//! Pseudo-terminals whose master the tree holds (a terminal emulator, tmux,
//! expect, script): the pair comes back with the slave's settings and window
//! size, as the controlling terminal of the same session with the same
//! foreground process group. Bytes waiting in it cannot be read out without
//! taking them: a pty holding some is refused.

use super::super::pids::PidView;
use anyhow::Result;
use cryo_image::PtyImage;
use cryo_tracer::{files, proc};

const PTY_SLAVE_MAJOR: u32 = 136;

pub fn is_master(link: &str) -> bool {
    link == "/dev/ptmx" || link == "/dev/pts/ptmx"
}

pub fn slave_index(link: &str) -> Option<u32> {
    link.strip_prefix("/dev/pts/")?.parse().ok()
}

/// The pts number of a controlling terminal as /proc/PID/stat encodes it.
fn pts_of_tty_nr(tty_nr: u32) -> Option<u32> {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xf_ff00);
    (PTY_SLAVE_MAJOR..PTY_SLAVE_MAJOR + 8).contains(&major).then(|| (major - PTY_SLAVE_MAJOR) * 256 + minor)
}

/// Every pty whose master the tree holds, with the sessions they control.
pub fn collect(tables: &[(i32, Vec<proc::FdInfo>)], view: &PidView) -> Result<Vec<PtyImage>> {
    let mut ptys: Vec<PtyImage> = Vec::new();
    for (pid, fds) in tables {
        for f in fds.iter().filter(|f| is_master(&f.link)) {
            let (index, winsize) = files::pty_master(*pid, f.fd).map_err(|e| anyhow::anyhow!("fd {} of process {pid} (pty master): {e}", f.fd))?;
            if ptys.iter().any(|p| p.index == index) {
                continue;
            }
            let waiting = files::queued_bytes(*pid, f.fd).unwrap_or(0);
            if waiting > 0 {
                anyhow::bail!(
                    "fd {} of process {pid} (pty master of /dev/pts/{index}): {waiting} bytes the terminal wrote are not read yet, which cryo cannot copy out; checkpoint again when its reader has caught up",
                    f.fd
                );
            }
            let termios = files::terminal_settings(*pid, f.fd).map_err(|e| anyhow::anyhow!("fd {} of process {pid}: terminal settings: {e}", f.fd))?;
            ptys.push(PtyImage { index, termios, winsize, session: None, foreground: 0 });
        }
    }
    for (pid, fds) in tables {
        for f in fds.iter().filter(|f| slave_index(&f.link).is_some_and(|i| ptys.iter().any(|p| p.index == i))) {
            let waiting = files::queued_bytes(*pid, f.fd).unwrap_or(0);
            if waiting > 0 {
                anyhow::bail!(
                    "fd {} of process {pid} ({}): {waiting} bytes typed into the terminal are not read yet, which cryo cannot copy out; checkpoint again when its reader has caught up",
                    f.fd,
                    f.link
                );
            }
        }
        let st = proc::stat(*pid)?;
        let Some(index) = pts_of_tty_nr(st.tty_nr) else { continue };
        let Some(p) = ptys.iter_mut().find(|p| p.index == index) else { continue };
        if st.sid == *pid {
            p.session = Some(view.pid(*pid)?);
            p.foreground = if st.tpgid > 0 { view.pid(st.tpgid).unwrap_or(0) } else { 0 };
        }
    }
    Ok(ptys)
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_pts_numbers() {
        assert_eq!(super::pts_of_tty_nr(136 << 8 | 5), Some(5));
        assert_eq!(super::pts_of_tty_nr(137 << 8 | 2), Some(258));
        assert_eq!(super::pts_of_tty_nr(4 << 8 | 1), None);
    }
}
