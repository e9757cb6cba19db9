//! Pseudo-terminals of a rebuilt tree: a new pair from /dev/ptmx (its
//! number may differ) with the old settings and window size, made by its
//! first holder; the session leader takes it back as its controlling
//! terminal with the old foreground process group.
//!
//! The ioctl numbers and `struct termios` (four u32 flags, c_line, 19
//! control characters) are the same on x86_64, arm64 and 32-bit ARM.

use super::{fetch_fd, Restoree, AT_FDCWD};
use crate::check::RestoreError;
use crate::shared::{Registry, Source};
use crate::Result;
use cryo_image::{PtyImage, Termios};
use cryo_injector::{Arg, Batch};
use cryo_tracer::arch::Sysno;

const TCSETS: u64 = 0x5402;
const TIOCSWINSZ: u64 = 0x5414;
const TIOCSCTTY: u64 = 0x540e;
const TIOCSPGRP: u64 = 0x5410;
const TIOCSPTLCK: u64 = 0x4004_5431;
const TIOCGPTPEER: u64 = 0x5441;
const KERNEL_NCCS: usize = 19;

fn kernel_termios(t: &Termios) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    for x in [t.iflag, t.oflag, t.cflag, t.lflag] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.push(t.line);
    let mut cc = t.cc.clone();
    cc.resize(KERNEL_NCCS, 0);
    v.extend_from_slice(&cc[..KERNEL_NCCS]);
    v
}

fn find(all: &[PtyImage], index: u32) -> Result<&PtyImage> {
    all.iter().find(|p| p.index == index).ok_or_else(|| RestoreError::Corrupt(format!("pty {index} is not in the image")))
}

/// Make pty `index` in this process (master and slave above the image's fds).
pub fn create(b: &mut Restoree, all: &[PtyImage], index: u32, reg: &mut Registry) -> Result<()> {
    let p = find(all, index)?;
    let base = b.tmp().base;
    let what = format!("recreating pseudo-terminal {index}");
    let mut batch = Batch::new();
    let path = batch.cstr("/dev/ptmx");
    let flags = (libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
    let m = batch.call(Sysno::Openat, &[AT_FDCWD.into(), Arg::Data(path), flags.into(), 0.into()]);
    let hm = batch.call(Sysno::Fcntl, &[Arg::Result(m), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[Arg::Result(m)]);
    let unlock = batch.data(&0i32.to_ne_bytes());
    batch.call(Sysno::Ioctl, &[Arg::Result(hm), TIOCSPTLCK.into(), Arg::Data(unlock)]);
    let s = batch.call(Sysno::Ioctl, &[Arg::Result(hm), TIOCGPTPEER.into(), flags.into()]);
    let hs = batch.call(Sysno::Fcntl, &[Arg::Result(s), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[Arg::Result(s)]);
    let t = batch.data(&kernel_termios(&p.termios));
    batch.call(Sysno::Ioctl, &[Arg::Result(hs), TCSETS.into(), Arg::Data(t)]);
    let ws: Vec<u8> = p.winsize.iter().flat_map(|x| x.to_ne_bytes()).collect();
    let ws = batch.data(&ws);
    batch.call(Sysno::Ioctl, &[Arg::Result(hm), TIOCSWINSZ.into(), Arg::Data(ws)]);
    let out = b.run(&what, &batch)?;
    let src = |call: usize| Source { pid: b.inside, fd: out.results[call] as i32 };
    reg.ptys.insert(index, (src(hm), src(hs)));
    Ok(())
}

/// In a session leader: take back the pty it had as controlling terminal,
/// and its foreground process group.
pub fn controlling(b: &mut Restoree, all: &[PtyImage], reg: &mut Registry) -> Result<()> {
    let me = b.p.pid;
    for p in all.iter().filter(|p| p.session == Some(me)) {
        if !reg.ptys.contains_key(&p.index) {
            create(b, all, p.index, reg)?;
        }
        let (_, slave) = reg.ptys[&p.index];
        let mut batch = Batch::new();
        let fd = fetch_fd(&mut batch, slave, b.inside);
        batch.call(Sysno::Ioctl, &[Arg::Result(fd), TIOCSCTTY.into(), 0.into()]);
        let fg = (p.foreground > 0).then(|| {
            let pg = batch.data(&p.foreground.to_ne_bytes());
            batch.call_may_fail(Sysno::Ioctl, &[Arg::Result(fd), TIOCSPGRP.into(), Arg::Data(pg)])
        });
        batch.call(Sysno::Close, &[Arg::Result(fd)]);
        let out = b.run(&format!("making pseudo-terminal {} the controlling terminal", p.index), &batch)?;
        if let Some(c) = fg.filter(|&c| cryo_parasite::abi::is_error(out.results[c])) {
            tracing::warn!("pseudo-terminal {}: process group {} could not be made its foreground group again (errno {})", p.index, p.foreground, -out.results[c]);
        }
    }
    Ok(())
}
