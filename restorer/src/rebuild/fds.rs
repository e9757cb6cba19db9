//! Stage 2 of a rebuild: the fd table. Objects shared between processes are
//! made by their first holder and fetched by the others (pidfd_getfd); files
//! are reopened by path; files without a path, FIFOs and kernel objects are
//! created again with what the image recorded (pidfds: of the same process
//! of the restored tree, which exists by now); epoll sets come last, once
//! the fds they watch exist, then the locks.

use super::{fetch_fd, Restoree, AT_FDCWD};
use crate::check::RestoreError;
use crate::shared::{Registry, Source};
use crate::Result;
use cryo_image::{FdImage, FdTarget, FileLock, ImageReader, LockKind, NetlinkSocket, PipeImage, UnlinkedFile, UnlinkedKind};
use cryo_injector::{Arg, Batch};
use cryo_tracer::arch::{flock64, push_word as put_word, Arch, Native, Sysno};
use std::collections::HashMap;

const EFD_SEMAPHORE: u64 = 1;
const TFD_TIMER_ABSTIME: u64 = 1;
const TFD_TIMER_CANCEL_ON_SET: u64 = 2;
/// _IOW('T', 0, u64): set the expirations a timerfd reports as not yet read.
const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
const EPOLL_CTL_ADD: u64 = 1;
const SOL_NETLINK: u64 = 270;
const NETLINK_ADD_MEMBERSHIP: u64 = 1;
const F_OFD_SETLK: u64 = 37;
const LOCK_SH: u64 = 1;
const LOCK_EX: u64 = 2;
const LOCK_NB: u64 = 4;
/// Bytes per sendfile call when filling a recreated file (below MAX_RW_COUNT).
const SENDFILE_CHUNK: u64 = 1 << 30;
/// Flags an open file description never keeps from its open().
const OPEN_ONLY: u32 = (libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) as u32;

pub fn install(b: &mut Restoree, reg: &mut Registry, img: &ImageReader) -> Result<()> {
    let p = b.p.clone();
    let inv = &img.inventory;
    if !reg.inet_made && !inv.inet.is_empty() {
        super::inet::create_all(b, &inv.inet, reg)?;
    }
    reg.inet_made = true;
    // Objects this process needs that it is the first to hold are made first.
    let mut local: HashMap<(u64, u64), u64> = HashMap::new();
    for f in &p.fds {
        if reg.files.contains_key(&f.file_id) {
            continue;
        }
        match &f.target {
            FdTarget::Pipe { inode, write } if !reg.pipe_ends.contains_key(&(*inode, *write)) => {
                let pipe = inv
                    .pipes
                    .iter()
                    .find(|x| x.inode == *inode)
                    .ok_or_else(|| RestoreError::Corrupt(format!("process {}: fd {} is a pipe the image does not hold", p.pid, f.fd)))?;
                create_pipe(b, pipe, reg)?;
            }
            FdTarget::Unlinked { dev, inode } if !local.contains_key(&(*dev, *inode)) => {
                let u = inv.unlinked.iter().find(|u| u.dev == *dev && u.inode == *inode).ok_or_else(|| {
                    RestoreError::Corrupt(format!("process {}: fd {} is a file the image does not hold", p.pid, f.fd))
                })?;
                let fd = unlinked_here(b, u, img, reg)?;
                local.insert((*dev, *inode), fd);
            }
            FdTarget::Unix { inode } if !reg.sockets.contains_key(inode) => {
                super::sockets::create(b, &inv.unix, *inode, reg)?;
            }
            FdTarget::PtyMaster { index } | FdTarget::PtySlave { index } if !reg.ptys.contains_key(index) => {
                super::pty::create(b, &inv.ptys, *index, reg)?;
            }
            FdTarget::Fifo { path, inode } if !reg.fifos.contains(inode) => {
                let queued = inv.fifos.iter().find(|x| x.inode == *inode);
                keep_fifo(b, path, queued)?;
                reg.fifos.insert(*inode);
            }
            _ => {}
        }
    }
    let base = b.tmp().base;
    let stdio = b.tmp().stdio;
    let mut batch = Batch::new();
    let mut checks = Vec::new();
    // Binds of netlink sockets to their old port ids: (call, fd, port id).
    let mut port_binds = Vec::new();
    // Epoll sets made by an earlier process come like any shared file; the
    // others wait until every fd they may watch is in place.
    let (epoll_here, rest): (Vec<&FdImage>, Vec<&FdImage>) =
        p.fds.iter().partition(|f| matches!(f.target, FdTarget::Epoll { .. }) && !reg.files.contains_key(&f.file_id));
    for f in rest {
        let cloexec = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        let shared_with = match f.target {
            FdTarget::Outside { .. } | FdTarget::Terminal { .. } => None,
            FdTarget::Pipe { inode, write } => reg.files.get(&f.file_id).or_else(|| reg.pipe_ends.get(&(inode, write))),
            _ => reg.files.get(&f.file_id),
        };
        if let Some(&src) = shared_with {
            let got = fetch_fd(&mut batch, src, b.inside);
            place(&mut batch, got, f, base);
            if let FdTarget::Pipe { .. } = f.target {
                set_flags(&mut batch, f);
            }
            reg.files.insert(f.file_id, Source { pid: b.inside, fd: f.fd });
            continue;
        }
        let flags = (f.flags & !OPEN_ONLY) as u64;
        match &f.target {
            FdTarget::File { path, .. } | FdTarget::Device { path, .. } => {
                let o = open(&mut batch, path, flags);
                place(&mut batch, o, f, base);
                if matches!(f.target, FdTarget::File { .. }) {
                    batch.call_may_fail(Sysno::Lseek, &[(f.fd as u64).into(), f.pos.into(), (libc::SEEK_SET as u64).into()]);
                }
            }
            FdTarget::Outside { stdio: which, .. } | FdTarget::Terminal { stdio: which, .. } => match stdio[*which as usize] {
                Some(src) => {
                    batch.call(Sysno::Dup3, &[src.into(), (f.fd as u64).into(), cloexec.into()]);
                    continue;
                }
                None => {
                    let o = open(&mut batch, "/dev/null", flags);
                    place(&mut batch, o, f, base);
                }
            },
            FdTarget::Pipe { .. } => unreachable!("pipes were created above"),
            FdTarget::Unlinked { dev, inode } => {
                // A new open file description of the recreated file, with the old flags.
                let o = open(&mut batch, &format!("/proc/self/fd/{}", local[&(*dev, *inode)]), flags);
                place(&mut batch, o, f, base);
                batch.call_may_fail(Sysno::Lseek, &[(f.fd as u64).into(), f.pos.into(), (libc::SEEK_SET as u64).into()]);
            }
            FdTarget::Fifo { path, .. } => {
                // The keeper holds both ends open, so neither direction blocks.
                let o = open(&mut batch, path, flags | libc::O_NONBLOCK as u64);
                place(&mut batch, o, f, base);
                set_flags(&mut batch, f);
            }
            FdTarget::EventFd { count, semaphore } => {
                let o = batch.call(Sysno::Eventfd2, &[0.into(), (libc::O_CLOEXEC as u64 | if *semaphore { EFD_SEMAPHORE } else { 0 }).into()]);
                if *count > 0 {
                    let at = batch.data(&count.to_le_bytes());
                    batch.call(Sysno::Write, &[Arg::Result(o), Arg::Data(at), 8.into()]);
                }
                place(&mut batch, o, f, base);
                set_flags(&mut batch, f);
            }
            FdTarget::TimerFd { clock, value_ns, interval_ns, ticks, realtime_at_ns, cancel_on_set } => {
                let o = batch.call(Sysno::TimerfdCreate, &[(*clock as u64).into(), (libc::O_CLOEXEC as u64).into()]);
                // Set for a time of day: for that time again (at once if it
                // passed meanwhile, with the periods missed as expirations).
                // Other timers count the time left from now.
                let (value, flags) = match realtime_at_ns {
                    Some(t) => (*t, TFD_TIMER_ABSTIME | if *cancel_on_set { TFD_TIMER_CANCEL_ON_SET } else { 0 }),
                    None => (*value_ns, 0),
                };
                if value > 0 {
                    let at = batch.data(&itimerspec(*interval_ns, value));
                    batch.call(Sysno::TimerfdSettime, &[Arg::Result(o), flags.into(), Arg::Data(at), 0.into()]);
                }
                if *ticks > 0 {
                    // Needs CONFIG_CHECKPOINT_RESTORE; without it the expirations are lost.
                    let at = batch.data(&ticks.to_le_bytes());
                    batch.call_may_fail(Sysno::Ioctl, &[Arg::Result(o), TFD_IOC_SET_TICKS.into(), Arg::Data(at)]);
                }
                place(&mut batch, o, f, base);
                set_flags(&mut batch, f);
            }
            FdTarget::SignalFd { mask } => {
                let at = batch.data(&mask.to_le_bytes());
                let o = batch.call(Sysno::Signalfd4, &[u64::MAX.into(), Arg::Data(at), 8.into(), (libc::O_CLOEXEC as u64).into()]);
                place(&mut batch, o, f, base);
                set_flags(&mut batch, f);
            }
            FdTarget::Inotify { watches } => {
                let o = batch.call(Sysno::InotifyInit1, &[(libc::O_CLOEXEC as u64).into()]);
                for w in watches {
                    let path = batch.cstr(&w.path);
                    let call = batch.call(Sysno::InotifyAddWatch, &[Arg::Result(o), Arg::Data(path), (w.mask as u64).into()]);
                    checks.push((call, w.wd as i64, format!("fd {}: inotify watch on {} came back as", f.fd, w.path)));
                }
                place(&mut batch, o, f, base);
                set_flags(&mut batch, f);
            }
            FdTarget::Epoll { .. } => unreachable!("epoll sets are made below"),
            FdTarget::PtyMaster { index } | FdTarget::PtySlave { index } => {
                let (master, slave) = reg.ptys[index];
                let src = if matches!(f.target, FdTarget::PtyMaster { .. }) { master } else { slave };
                let got = fetch_fd(&mut batch, src, b.inside);
                place(&mut batch, got, f, base);
                set_flags(&mut batch, f);
            }
            FdTarget::Pidfd { pid } => {
                let inside = reg.pids.inside(*pid).ok_or_else(|| {
                    RestoreError::Corrupt(format!("process {}: fd {} is a pidfd of process {pid}, which the image does not hold", p.pid, f.fd))
                })?;
                // PIDFD_NONBLOCK is O_NONBLOCK, PIDFD_THREAD is O_EXCL.
                let kept = f.flags & (libc::O_NONBLOCK | libc::O_EXCL) as u32;
                let o = batch.call(Sysno::PidfdOpen, &[(inside as u64).into(), (kept as u64).into()]);
                place(&mut batch, o, f, base);
            }
            FdTarget::Netlink(n) => {
                let (o, bind) = netlink(&mut batch, n);
                if let Some(call) = bind {
                    port_binds.push((call, f.fd, n.portid));
                }
                place(&mut batch, o, f, base);
                set_flags(&mut batch, f);
            }
            FdTarget::Unix { inode } | FdTarget::Inet { inode } => {
                let src = *reg.sockets.get(inode).ok_or_else(|| RestoreError::Corrupt(format!("process {}: fd {} is a socket the image does not hold", p.pid, f.fd)))?;
                let got = fetch_fd(&mut batch, src, b.inside);
                place(&mut batch, got, f, base);
                set_flags(&mut batch, f);
            }
        }
        reg.files.insert(f.file_id, Source { pid: b.inside, fd: f.fd });
    }
    let out = b.run("reopening files", &batch)?;
    for (call, want, what) in checks {
        if out.results[call] != want {
            return Err(RestoreError::Rebuild(format!("process {}: {what} {} instead of {want}", p.pid, out.results[call])));
        }
    }
    for (call, fd, portid) in port_binds {
        if out.results[call] < 0 {
            tracing::warn!("process {}: fd {fd}: netlink port id {portid} is taken here, so the socket has another one", p.pid);
        }
    }
    epolls(b, reg, &epoll_here)?;
    super::pty::controlling(b, &inv.ptys, reg)?;
    locks(b)
}

/// `struct sockaddr_nl`: family, padding, port id, groups bitmask.
fn sockaddr_nl(portid: u32, groups: u32) -> Vec<u8> {
    let mut a = (libc::AF_NETLINK as u16).to_le_bytes().to_vec();
    a.extend_from_slice(&[0, 0]);
    a.extend_from_slice(&portid.to_le_bytes());
    a.extend_from_slice(&groups.to_le_bytes());
    a
}

/// A netlink socket as the image has it. Returns the call giving its fd,
/// and the bind to its old port id (which may fail: another socket has it
/// now, and an automatic one is taken instead) if it was bound.
fn netlink(batch: &mut Batch, n: &NetlinkSocket) -> (usize, Option<usize>) {
    let o = batch.call(Sysno::Socket, &[(libc::AF_NETLINK as u64).into(), ((n.kind | libc::SOCK_CLOEXEC) as u64).into(), (n.protocol as u64).into()]);
    let one = batch.data(&1i32.to_le_bytes());
    for &opt in &n.options {
        batch.call_may_fail(Sysno::Setsockopt, &[Arg::Result(o), SOL_NETLINK.into(), (opt as u64).into(), Arg::Data(one), 4.into()]);
    }
    // The kernel doubles what it is given; above net.core.rmem_max/wmem_max it is capped.
    for (opt, size) in [(libc::SO_RCVBUF, n.rcvbuf), (libc::SO_SNDBUF, n.sndbuf)] {
        let at = batch.data(&(size / 2).to_le_bytes());
        batch.call_may_fail(Sysno::Setsockopt, &[Arg::Result(o), (libc::SOL_SOCKET as u64).into(), (opt as u64).into(), Arg::Data(at), 4.into()]);
    }
    let len = sockaddr_nl(0, 0).len() as u64;
    let bind = (n.portid != 0).then(|| {
        let old = batch.data(&sockaddr_nl(n.portid, 0));
        let call = batch.call_may_fail(Sysno::Bind, &[Arg::Result(o), Arg::Data(old), len.into()]);
        // Binds it to any free port id, unless the bind above succeeded (then it fails).
        let any = batch.data(&sockaddr_nl(0, 0));
        batch.call_may_fail(Sysno::Bind, &[Arg::Result(o), Arg::Data(any), len.into()]);
        call
    });
    for &group in &n.groups {
        let at = batch.data(&group.to_le_bytes());
        batch.call(Sysno::Setsockopt, &[Arg::Result(o), SOL_NETLINK.into(), NETLINK_ADD_MEMBERSHIP.into(), Arg::Data(at), 4.into()]);
    }
    if n.dst_portid != 0 || n.dst_group != 0 {
        let dst = batch.data(&sockaddr_nl(n.dst_portid, n.dst_group));
        batch.call(Sysno::Connect, &[Arg::Result(o), Arg::Data(dst), len.into()]);
    }
    (o, bind)
}

fn open(batch: &mut Batch, path: &str, flags: u64) -> usize {
    let path = batch.cstr(path);
    batch.call(Sysno::Openat, &[AT_FDCWD.into(), Arg::Data(path), flags.into(), 0.into()])
}

/// Put the fd made by call `made` at its number. It moves above the image's
/// fds first: the lowest free fd may be the target number itself.
fn place(batch: &mut Batch, made: usize, f: &FdImage, base: u64) {
    let cloexec = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
    let h = batch.call(Sysno::Fcntl, &[Arg::Result(made), (libc::F_DUPFD as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[Arg::Result(made)]);
    batch.call(Sysno::Dup3, &[Arg::Result(h), (f.fd as u64).into(), cloexec.into()]);
    batch.call(Sysno::Close, &[Arg::Result(h)]);
}

/// O_NONBLOCK, O_APPEND, O_ASYNC...: what F_SETFL can set back.
fn set_flags(batch: &mut Batch, f: &FdImage) {
    batch.call(Sysno::Fcntl, &[(f.fd as u64).into(), (libc::F_SETFL as u64).into(), (f.flags as u64).into()]);
}

/// `struct itimerspec`: interval, then value, each (seconds, nanoseconds) in words.
pub(super) fn itimerspec(interval_ns: u64, value_ns: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for ns in [interval_ns, value_ns] {
        put_word(&mut v, ns / 1_000_000_000);
        put_word(&mut v, ns % 1_000_000_000);
    }
    v
}

/// The epoll sets first held by this process, once every fd they watch is in place.
fn epolls(b: &mut Restoree, reg: &mut Registry, fds: &[&FdImage]) -> Result<()> {
    let base = b.tmp().base;
    let mut batch = Batch::new();
    for f in fds {
        let FdTarget::Epoll { watches } = &f.target else { continue };
        if let Some(&src) = reg.files.get(&f.file_id) {
            let got = fetch_fd(&mut batch, src, b.inside);
            place(&mut batch, got, f, base);
            continue;
        }
        let o = batch.call(Sysno::EpollCreate1, &[(libc::O_CLOEXEC as u64).into()]);
        for w in watches {
            let (ev, len) = Native::epoll_event(w.events, w.data);
            let at = batch.data(&ev[..len]);
            batch.call(Sysno::EpollCtl, &[Arg::Result(o), EPOLL_CTL_ADD.into(), (w.fd as u64).into(), Arg::Data(at)]);
        }
        place(&mut batch, o, f, base);
        set_flags(&mut batch, f);
        reg.files.insert(f.file_id, Source { pid: b.inside, fd: f.fd });
    }
    b.run("recreating epoll sets", &batch).map(drop)
}

/// flock, POSIX and OFD locks, taken again without waiting: if another
/// process holds a conflicting lock now, the restart fails saying so.
fn locks(b: &mut Restoree) -> Result<()> {
    let p = b.p.clone();
    let mut batch = Batch::new();
    let mut taken: Vec<(usize, &FdImage, &FileLock)> = Vec::new();
    for f in &p.fds {
        for l in &f.locks {
            let fd = (f.fd as u64).into();
            let call = match l.kind {
                LockKind::Flock => batch.call_may_fail(Sysno::Flock, &[fd, ((if l.write { LOCK_EX } else { LOCK_SH }) | LOCK_NB).into()]),
                LockKind::Posix | LockKind::Ofd => {
                    let ty = if l.write { libc::F_WRLCK } else { libc::F_RDLCK } as i16;
                    let at = batch.data(&flock64(ty, l.start, l.len));
                    let cmd = if l.kind == LockKind::Ofd { F_OFD_SETLK } else { Native::F_SETLK64 };
                    batch.call_may_fail(Sysno::FcntlLock, &[fd, cmd.into(), Arg::Data(at)])
                }
            };
            taken.push((call, f, l));
        }
    }
    let out = b.run("taking file locks back", &batch)?;
    for (call, f, l) in taken {
        let r = out.results[call];
        if cryo_parasite::abi::is_error(r) {
            let path = match &f.target {
                FdTarget::File { path, .. } => path.as_str(),
                _ => "its file",
            };
            return Err(RestoreError::Rebuild(format!(
                "process {}: fd {} held a {:?} lock on {path} that cannot be taken again (errno {}): another process holds a conflicting lock now",
                p.pid,
                f.fd,
                l.kind,
                -r
            )));
        }
    }
    Ok(())
}

/// Bytes of pipe data written per batch (the command area holds 256 KiB).
const PIPE_CHUNK: usize = 128 << 10;

/// Write queued bytes into a pipe or FIFO end, chunk by chunk.
fn fill_pipe(b: &mut Restoree, what: &str, fd: u64, data: &[u8]) -> Result<()> {
    for chunk in data.chunks(PIPE_CHUNK) {
        let mut batch = Batch::new();
        let at = batch.data(chunk);
        let n = batch.call(Sysno::Write, &[fd.into(), Arg::Data(at), (chunk.len() as u64).into()]);
        let out = b.run(what, &batch)?;
        if out.results[n] as usize != chunk.len() {
            return Err(RestoreError::Rebuild(format!("{what}: wrote {} of {} bytes", out.results[n], chunk.len())));
        }
    }
    Ok(())
}

/// Make room for a pipe's old contents; a write that does not fit would
/// block the parasite forever.
fn check_room(what: &str, got: i64, want: usize) -> Result<()> {
    if got < 0 || (got as usize) < want {
        return Err(RestoreError::Rebuild(format!(
            "{what}: it held {want} bytes but can only be given {got} bytes of room here (fs.pipe-max-size?)"
        )));
    }
    Ok(())
}

/// Create a pipe of the tree with its old capacity and the bytes that were
/// in it; both ends wait above the image's fds for their holders.
fn create_pipe(b: &mut Restoree, pipe: &PipeImage, reg: &mut Registry) -> Result<()> {
    let base = b.tmp().base;
    let what = format!("recreating pipe {}", pipe.inode);
    let mut batch = Batch::new();
    let fds = batch.reserve(8);
    batch.call(Sysno::Pipe2, &[Arg::Data(fds), (libc::O_CLOEXEC as u64).into()]);
    let out = b.run(&what, &batch)?;
    let (r, w) = (out.u32_at(fds) as u64, out.u32_at(fds + 4) as u64);
    let mut batch = Batch::new();
    let hr = batch.call(Sysno::Fcntl, &[r.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    let hw = batch.call(Sysno::Fcntl, &[w.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[r.into()]);
    batch.call(Sysno::Close, &[w.into()]);
    let size = batch.call_may_fail(Sysno::Fcntl, &[Arg::Result(hw), (libc::F_SETPIPE_SZ as u64).into(), (pipe.capacity as u64).into()]);
    let out = b.run(&what, &batch)?;
    let (hr, hw) = (out.results[hr] as i32, out.results[hw] as i32);
    check_room(&what, out.results[size], pipe.data.len())?;
    fill_pipe(b, &what, hw as u64, &pipe.data)?;
    reg.pipe_ends.insert((pipe.inode, false), Source { pid: b.inside, fd: hr });
    reg.pipe_ends.insert((pipe.inode, true), Source { pid: b.inside, fd: hw });
    Ok(())
}

/// A FIFO's first holder opens it read-write above the image's fds and
/// keeps it open until every process of the tree has opened it: the FIFO
/// then has both ends, so no open blocks and the queued bytes stay in it.
fn keep_fifo(b: &mut Restoree, path: &str, queued: Option<&PipeImage>) -> Result<()> {
    let base = b.tmp().base;
    let what = format!("reopening FIFO {path}");
    let mut batch = Batch::new();
    let o = open(&mut batch, path, (libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64);
    let h = batch.call(Sysno::Fcntl, &[Arg::Result(o), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[Arg::Result(o)]);
    let size = queued.map(|q| {
        batch.call_may_fail(Sysno::Fcntl, &[Arg::Result(h), (libc::F_SETPIPE_SZ as u64).into(), (q.capacity as u64).into()])
    });
    let out = b.run(&what, &batch)?;
    if let (Some(q), Some(size)) = (queued, size) {
        check_room(&what, out.results[size], q.data.len())?;
        fill_pipe(b, &what, out.results[h] as u64, &q.data)?;
    }
    Ok(())
}

/// The recreated file without a path, as an fd of this process above the
/// image's fds: made here if this is its first holder, else fetched.
fn unlinked_here(b: &mut Restoree, u: &UnlinkedFile, img: &ImageReader, reg: &mut Registry) -> Result<u64> {
    let base = b.tmp().base;
    let key = (u.dev, u.inode);
    let what = format!("recreating {}", describe(u));
    // Made by an earlier holder, or (mapped shared) by the memory stage.
    if let Some(&src) = reg.objects.get(&key).or_else(|| reg.shmem.get(&key)) {
        let mut batch = Batch::new();
        let got = fetch_fd(&mut batch, src, b.inside);
        let h = batch.call(Sysno::Fcntl, &[Arg::Result(got), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
        batch.call(Sysno::Close, &[Arg::Result(got)]);
        let out = b.run(&what, &batch)?;
        let fd = out.results[h] as u64;
        if let std::collections::hash_map::Entry::Vacant(e) = reg.objects.entry(key) {
            // Made by the memory stage: it holds the mapped pages, not yet the whole file.
            e.insert(Source { pid: b.inside, fd: fd as i32 });
            fill(b, u, img, fd, &what)?;
            seal(b, u, fd, &what)?;
        }
        return Ok(fd);
    }
    let made = match &u.kind {
        UnlinkedKind::Deleted { path } => {
            // An unlinked file in its old directory, on its old file system;
            // where that cannot be (directory gone, no O_TMPFILE), a memfd.
            let dir = std::path::Path::new(path).parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into());
            let mut batch = Batch::new();
            let o = open_mode(&mut batch, &dir, (libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC) as u64, u.mode);
            let out = b.run(&what, &batch)?;
            if cryo_parasite::abi::is_error(out.results[o]) {
                tracing::warn!("{path}: cannot recreate it as an unlinked file in its directory (errno {}); it comes back as a memfd", -out.results[o]);
                memfd(b, &what, path.rsplit('/').next().unwrap_or("deleted"), 0)?
            } else {
                out.results[o] as u64
            }
        }
        UnlinkedKind::Memfd { name, .. } => memfd(b, &what, name, libc::MFD_ALLOW_SEALING as u64)?,
    };
    let mut batch = Batch::new();
    let h = batch.call(Sysno::Fcntl, &[made.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[made.into()]);
    let out = b.run(&what, &batch)?;
    let fd = out.results[h] as u64;
    fill(b, u, img, fd, &what)?;
    seal(b, u, fd, &what)?;
    reg.objects.insert(key, Source { pid: b.inside, fd: fd as i32 });
    Ok(fd)
}

/// A memfd's seals, once its bytes are in.
fn seal(b: &mut Restoree, u: &UnlinkedFile, fd: u64, what: &str) -> Result<()> {
    let UnlinkedKind::Memfd { seals, .. } = u.kind else { return Ok(()) };
    if seals == 0 {
        return Ok(());
    }
    let mut batch = Batch::new();
    batch.call(Sysno::Fcntl, &[fd.into(), (libc::F_ADD_SEALS as u64).into(), (seals as u64).into()]);
    b.run(&format!("{what}: sealing it"), &batch).map(drop)
}

fn describe(u: &UnlinkedFile) -> String {
    match &u.kind {
        UnlinkedKind::Deleted { path } => format!("deleted file {path}"),
        UnlinkedKind::Memfd { name, .. } => format!("memfd {name}"),
    }
}

fn open_mode(batch: &mut Batch, path: &str, flags: u64, mode: u32) -> usize {
    let path = batch.cstr(path);
    batch.call_may_fail(Sysno::Openat, &[AT_FDCWD.into(), Arg::Data(path), flags.into(), (mode as u64).into()])
}

fn memfd(b: &mut Restoree, what: &str, name: &str, flags: u64) -> Result<u64> {
    let mut batch = Batch::new();
    // memfd names are at most 249 bytes.
    let name: String = name.chars().take(240).collect();
    let name = batch.cstr(&name);
    let m = batch.call(Sysno::MemfdCreate, &[Arg::Data(name), (libc::MFD_CLOEXEC as u64 | flags).into()]);
    Ok(b.run(what, &batch)?.results[m] as u64)
}

/// The file's bytes, from the image straight into it (sendfile in the process).
fn fill(b: &mut Restoree, u: &UnlinkedFile, img: &ImageReader, fd: u64, what: &str) -> Result<()> {
    let base = b.tmp().base;
    let mut batch = Batch::new();
    let src = open(&mut batch, &img.dir().join(&u.data).to_string_lossy(), (libc::O_RDONLY | libc::O_CLOEXEC) as u64);
    let hs = batch.call(Sysno::Fcntl, &[Arg::Result(src), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
    batch.call(Sysno::Close, &[Arg::Result(src)]);
    batch.call(Sysno::Ftruncate, &[fd.into(), u.size.into()]);
    batch.call(Sysno::Lseek, &[fd.into(), 0.into(), (libc::SEEK_SET as u64).into()]);
    let mut sends = Vec::new();
    let mut left = u.size;
    while left > 0 {
        let n = left.min(SENDFILE_CHUNK);
        sends.push((batch.call(Sysno::Sendfile, &[fd.into(), Arg::Result(hs), 0.into(), n.into()]), n));
        left -= n;
    }
    batch.call(Sysno::Close, &[Arg::Result(hs)]);
    let out = b.run(what, &batch)?;
    for (call, n) in sends {
        if out.results[call] as u64 != n {
            return Err(RestoreError::Rebuild(format!("{what}: copied {} of {n} bytes from the image", out.results[call])));
        }
    }
    Ok(())
}
