//! Unix sockets of a rebuilt tree. A pair (socketpair, or both ends of an
//! accepted connection) is made by the first process holding either end,
//! with each end's queued bytes sent again from the other end; listeners and
//! bound sockets bind their old names again; a datagram socket connected to
//! a name outside connects again; a stream that led outside (--tcp-close) is
//! one end of a pair whose other end sends what was waiting and closes.

use super::sockopts::Pending;
use super::{Restoree, SOCK_CHUNK};
use crate::check::RestoreError;
use crate::shared::{Registry, Source};
use crate::Result;
use cryo_image::{SockOpt, UnixRole, UnixSocket};
use cryo_injector::{Arg, Batch};
use cryo_tracer::arch::Sysno;
use std::os::unix::ffi::OsStrExt;

/// `struct sockaddr_un` for a name: family, then the path (NUL-terminated)
/// or the abstract name (starting with NUL, taken as is).
pub fn sockaddr(name: &[u8]) -> Vec<u8> {
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(name);
    if name.first() != Some(&0) {
        a.push(0);
    }
    a
}

fn describe(s: &UnixSocket) -> String {
    match &s.name {
        Some(n) => format!("Unix socket {}", String::from_utf8_lossy(n).replace('\0', "@")),
        None => format!("Unix socket {}", s.inode),
    }
}

fn find(all: &[UnixSocket], inode: u64) -> Result<&UnixSocket> {
    all.iter().find(|s| s.inode == inode).ok_or_else(|| RestoreError::Corrupt(format!("Unix socket {inode} is not in the image")))
}

/// Create the socket `inode` (and its peer, for a pair) in this process,
/// above the image's fds, and register where the tree can fetch it.
pub fn create(b: &mut Restoree, all: &[UnixSocket], inode: u64, reg: &mut Registry) -> Result<()> {
    let s = find(all, inode)?;
    let base = b.tmp().base;
    let what = format!("recreating {}", describe(s));
    let kind = (s.kind | libc::SOCK_CLOEXEC) as u64;
    let unix = libc::AF_UNIX as u64;
    let mut batch = Batch::new();
    let high = |batch: &mut Batch, fd: Arg| {
        let h = batch.call(Sysno::Fcntl, &[fd, (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
        batch.call(Sysno::Close, &[fd]);
        h
    };
    let mut made = Vec::new();
    match &s.role {
        UnixRole::Pair { peer } => {
            let peer = find(all, *peer)?;
            let (hx, hy) = pair(b, &what, kind, [&s.options, &peer.options])?;
            // What waits in one end was sent by the other.
            send_all(b, &what, hy, &s.queued, None, s.kind == libc::SOCK_STREAM)?;
            send_all(b, &what, hx, &peer.queued, None, s.kind == libc::SOCK_STREAM)?;
            made.push((s, hx));
            made.push((peer, hy));
        }
        UnixRole::PeerClosed => {
            // The other end of a pair stands for the peer outside: it sends
            // what was waiting, then closes.
            let (hx, hy) = pair(b, &what, kind, [&s.options, &[]])?;
            send_all(b, &what, hy, &s.queued, None, s.kind == libc::SOCK_STREAM)?;
            let mut batch = Batch::new();
            batch.call(Sysno::Close, &[hy.into()]);
            b.run(&what, &batch)?;
            made.push((s, hx));
        }
        role => {
            let o = batch.call(Sysno::Socket, &[unix.into(), kind.into(), 0.into()]);
            let h = high(&mut batch, Arg::Result(o));
            let mut options = Pending::default();
            options.push(&mut batch, Arg::Result(h), &s.options);
            if let Some(name) = &s.name {
                let a = sockaddr(name);
                let at = batch.data(&a);
                batch.call(Sysno::Bind, &[Arg::Result(h), Arg::Data(at), (a.len() as u64).into()]);
            }
            match role {
                UnixRole::Listen { backlog } => {
                    batch.call(Sysno::Listen, &[Arg::Result(h), (*backlog as u64).into()]);
                }
                UnixRole::ConnectedTo { peer_name } => {
                    let a = sockaddr(peer_name);
                    let at = batch.data(&a);
                    batch.call(Sysno::Connect, &[Arg::Result(h), Arg::Data(at), (a.len() as u64).into()]);
                }
                _ => {}
            }
            let out = b.run(&what, &batch)?;
            options.warn_failed(&what, &out);
            let h = out.results[h] as u64;
            if let (Some(name), false) = (&s.name, s.queued.is_empty()) {
                // Datagrams waiting in a bound socket come from a stand-in sender.
                let mut batch = Batch::new();
                let o = batch.call(Sysno::Socket, &[unix.into(), ((libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64).into(), 0.into()]);
                let t = high(&mut batch, Arg::Result(o));
                let t = b.run(&what, &batch)?.results[t] as u64;
                send_all(b, &what, t, &s.queued, Some(name), false)?;
                let mut batch = Batch::new();
                batch.call(Sysno::Close, &[t.into()]);
                b.run(&what, &batch)?;
            }
            made.push((s, h));
        }
    }
    // shutdown() bits last, once the bytes are in: RCV (1) and SEND (2) map to SHUT_RD (0), SHUT_WR (1), SHUT_RDWR (2).
    let mut batch = Batch::new();
    for (s, fd) in &made {
        if s.shutdown & 3 != 0 {
            batch.call(Sysno::Shutdown, &[(*fd).into(), ((s.shutdown & 3) as u64 - 1).into()]);
        }
        reg.sockets.insert(s.inode, Source { pid: b.inside, fd: *fd as i32 });
    }
    b.run(&what, &batch).map(drop)
}

/// A socketpair of `kind` above the image's fds, each end with its options.
fn pair(b: &mut Restoree, what: &str, kind: u64, options: [&[SockOpt]; 2]) -> Result<(u64, u64)> {
    let mut batch = Batch::new();
    let sv = batch.reserve(8);
    batch.call(Sysno::Socketpair, &[(libc::AF_UNIX as u64).into(), kind.into(), 0.into(), Arg::Data(sv)]);
    let out = b.run(what, &batch)?;
    let base = b.tmp().base;
    let mut batch = Batch::new();
    let mut pending = Pending::default();
    let mut ends = [0usize; 2];
    for (i, end) in ends.iter_mut().enumerate() {
        let fd = out.u32_at(sv + 4 * i) as u64;
        *end = batch.call(Sysno::Fcntl, &[fd.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), base.into()]);
        batch.call(Sysno::Close, &[fd.into()]);
        pending.push(&mut batch, Arg::Result(*end), options[i]);
    }
    let out = b.run(what, &batch)?;
    pending.warn_failed(what, &out);
    Ok((out.results[ends[0]] as u64, out.results[ends[1]] as u64))
}

/// Send messages (datagrams/records keep their bounds; a stream's bytes go
/// in pieces) from `fd`, to `to` if given.
fn send_all(b: &mut Restoree, what: &str, fd: u64, msgs: &[Vec<u8>], to: Option<&[u8]>, stream: bool) -> Result<()> {
    let mut pieces: Vec<&[u8]> = Vec::new();
    for m in msgs {
        if stream {
            pieces.extend(m.chunks(SOCK_CHUNK));
        } else if m.len() > 2 * SOCK_CHUNK - 4096 {
            return Err(RestoreError::Rebuild(format!("{what}: a queued message of {} bytes is too large to send again", m.len())));
        } else {
            pieces.push(m);
        }
    }
    let addr = to.map(sockaddr);
    let mut at = 0;
    while at < pieces.len() {
        let mut batch = Batch::new();
        let mut calls = Vec::new();
        let mut bytes = 0;
        let dest = addr.as_ref().map(|a| (batch.data(a), a.len()));
        while at < pieces.len() && (calls.is_empty() || bytes + pieces[at].len() <= SOCK_CHUNK) {
            let p = pieces[at];
            let d = batch.data(p);
            let (da, dl) = match dest {
                Some((da, dl)) => (Arg::Data(da), dl as u64),
                None => (0.into(), 0),
            };
            calls.push((batch.call(Sysno::Sendto, &[fd.into(), Arg::Data(d), (p.len() as u64).into(), (libc::MSG_DONTWAIT as u64).into(), da, dl.into()]), p.len()));
            bytes += p.len();
            at += 1;
        }
        let out = b.run(what, &batch)?;
        for (c, len) in calls {
            if out.results[c] as usize != len {
                return Err(RestoreError::Rebuild(format!("{what}: sent {} of {len} queued bytes", out.results[c])));
            }
        }
    }
    Ok(())
}

/// A socket file left behind by the checkpointed process blocks bind() at
/// restart. It is removed when nothing answers on it any more (connect is
/// refused); if something does, the old process (or another) still has it.
pub fn clear_stale_names(all: &[UnixSocket]) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::{UnixDatagram, UnixStream};
    for s in all.iter().filter(|s| matches!(s.role, UnixRole::Listen { .. } | UnixRole::Unconnected)) {
        let Some(name) = s.name.as_ref().filter(|n| n.first() == Some(&b'/')) else { continue };
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(name));
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            continue;
        }
        let probe = if s.kind == libc::SOCK_DGRAM {
            UnixDatagram::unbound().and_then(|d| d.connect(path)).map(drop)
        } else {
            UnixStream::connect(path).map(drop)
        };
        match probe {
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                std::fs::remove_file(path).map_err(|e| RestoreError::Io { what: format!("removing the stale socket file {}", path.display()), source: e })?;
            }
            Ok(()) => {
                return Err(RestoreError::Rebuild(format!(
                    "{} is in use by a running process; stop it (or checkpoint with --kill) before restarting",
                    path.display()
                )))
            }
            Err(_) => {}
        }
    }
    Ok(())
}
