//! TCP and UDP sockets of a rebuilt tree, all made by the first process
//! rebuilt (the others fetch theirs with pidfd_getfd): connections first,
//! each connected again over a stand-in listener on its old server address
//! (so the accepted end has its old address, and the client its old port
//! where it can), with the unread bytes sent again from the other end and
//! its sides shut down where they were; then the stand-ins for connections
//! that led outside (reset, or closed by their peer); then listeners, which
//! may share a port with the accepted ends (SO_REUSEADDR while they bind);
//! then UDP and unconnected sockets. Each socket gets the options the
//! program had set.

use super::sockopts::Pending;
use super::{Restoree, SOCK_CHUNK};
use crate::check::RestoreError;
use crate::shared::{Registry, Source};
use crate::Result;
use cryo_image::{InetRole, InetSocket};
use cryo_injector::{Arg, Batch, BatchOutput};
use cryo_tracer::arch::Sysno;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const EADDRINUSE: i64 = 98;

/// `struct sockaddr_in` / `sockaddr_in6`.
fn sockaddr(a: &SocketAddr) -> Vec<u8> {
    let mut v = Vec::new();
    match a {
        SocketAddr::V4(a) => {
            v.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.resize(16, 0);
        }
        SocketAddr::V6(a) => {
            v.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.flowinfo().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
    v
}

fn parse(what: &str, s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| RestoreError::Corrupt(format!("{what}: bad address {s:?}")))
}

/// Builds one batch of socket calls whose fds stay above the image's fds.
struct Calls {
    batch: Batch,
    base: u64,
    binds: Vec<(usize, String)>,
    options: Pending,
}

impl Calls {
    fn new(base: u64) -> Self {
        Calls { batch: Batch::new(), base, binds: Vec::new(), options: Pending::default() }
    }

    fn socket(&mut self, family: i32, kind: i32) -> usize {
        let o = self.batch.call(Sysno::Socket, &[(family as u64).into(), ((kind | libc::SOCK_CLOEXEC) as u64).into(), 0.into()]);
        let h = self.batch.call(Sysno::Fcntl, &[Arg::Result(o), (libc::F_DUPFD_CLOEXEC as u64).into(), self.base.into()]);
        self.batch.call(Sysno::Close, &[Arg::Result(o)]);
        h
    }

    fn opt(&mut self, fd: usize, level: i32, opt: i32, v: i32) {
        let at = self.batch.data(&v.to_ne_bytes());
        self.batch.call(Sysno::Setsockopt, &[Arg::Result(fd), (level as u64).into(), (opt as u64).into(), Arg::Data(at), 4.into()]);
    }

    fn options(&mut self, fd: usize, s: &InetSocket) {
        if s.reuseport {
            self.opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1);
        }
        if s.keepalive {
            self.opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
        }
        if s.nodelay {
            self.opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
        self.options.push(&mut self.batch, Arg::Result(fd), &s.options);
    }

    /// bind; EADDRINUSE is reported by `check` with what to do.
    fn bind(&mut self, fd: usize, a: &SocketAddr) {
        let sa = sockaddr(a);
        let at = self.batch.data(&sa);
        let c = self.batch.call_may_fail(Sysno::Bind, &[Arg::Result(fd), Arg::Data(at), (sa.len() as u64).into()]);
        self.binds.push((c, a.to_string()));
    }

    fn connect(&mut self, fd: usize, a: &SocketAddr) -> usize {
        let sa = sockaddr(a);
        let at = self.batch.data(&sa);
        self.batch.call(Sysno::Connect, &[Arg::Result(fd), Arg::Data(at), (sa.len() as u64).into()])
    }

    fn run(self, b: &mut Restoree, what: &str, strict_binds: bool) -> Result<BatchOutput> {
        let out = b.run(what, &self.batch)?;
        self.options.warn_failed(what, &out);
        for (c, addr) in self.binds {
            let r = out.results[c];
            if r == -EADDRINUSE && strict_binds {
                return Err(RestoreError::Rebuild(format!(
                    "{what}: address {addr} is in use: is the checkpointed program (or another) still running? Stop it, or checkpoint with --kill"
                )));
            }
            if cryo_parasite::abi::is_error(r) && strict_binds {
                return Err(RestoreError::Rebuild(format!("{what}: binding {addr}: errno {}", -r)));
            }
        }
        Ok(out)
    }
}

pub fn create_all(b: &mut Restoree, all: &[InetSocket], reg: &mut Registry) -> Result<()> {
    let base = b.tmp().base;
    // Connection ends keep SO_REUSEADDR until the listeners on their ports
    // are bound and listening: a listener without it cannot bind a port
    // that an accepted connection holds (the program made them the other
    // way round).
    let mut reuse_off = Vec::new();
    for s in all {
        if let InetRole::Pair { peer, accepted: true } = s.role {
            let c = all.iter().find(|x| x.inode == peer).ok_or_else(|| RestoreError::Corrupt(format!("TCP socket {peer} is not in the image")))?;
            reuse_off.extend(pair(b, s, c, reg)?);
        }
    }
    for s in all.iter().filter(|s| matches!(s.role, InetRole::Reset | InetRole::PeerClosed)) {
        stand_in(b, s, reg)?;
    }
    for s in all.iter().filter(|s| matches!(s.role, InetRole::Listen { .. } | InetRole::Connected { .. } | InetRole::Unconnected)) {
        let what = format!("recreating {} socket {}", if s.kind == libc::SOCK_STREAM { "TCP" } else { "UDP" }, s.local.as_deref().unwrap_or("(unbound)"));
        let mut k = Calls::new(base);
        let fd = k.socket(s.family, s.kind);
        k.options(fd, s);
        if s.v6only {
            k.opt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1);
        }
        if let Some(l) = &s.local {
            // Accepted connections on the same port were made just before.
            k.opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
            k.bind(fd, &parse(&what, l)?);
        }
        match &s.role {
            InetRole::Listen { backlog } => {
                k.batch.call(Sysno::Listen, &[Arg::Result(fd), (*backlog as u64).into()]);
            }
            InetRole::Connected { peer } => {
                k.connect(fd, &parse(&what, peer)?);
            }
            _ => {}
        }
        if s.local.is_some() && !s.reuseaddr {
            k.opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 0);
        }
        let out = k.run(b, &what, true)?;
        reg.sockets.insert(s.inode, Source { pid: b.inside, fd: out.results[fd] as i32 });
    }
    datagrams(b, all, reg)?;
    let mut batch = Batch::new();
    let off = batch.data(&0i32.to_ne_bytes());
    for fd in reuse_off {
        batch.call(Sysno::Setsockopt, &[fd.into(), (libc::SOL_SOCKET as u64).into(), (libc::SO_REUSEADDR as u64).into(), Arg::Data(off), 4.into()]);
    }
    b.run("turning SO_REUSEADDR of TCP connections off again", &batch).map(drop)
}

/// A connection of the tree: a stand-in listener on the accepted end's old
/// address, the other end bound to its old port (if still free) connects,
/// accept gives the accepted end; each end's unread bytes are sent from the other.
/// Returns the ends whose SO_REUSEADDR is to be turned off once the listeners are made.
fn pair(b: &mut Restoree, acc: &InetSocket, cli: &InetSocket, reg: &mut Registry) -> Result<Vec<u64>> {
    let what = format!("reconnecting TCP {} -> {}", cli.local.as_deref().unwrap_or("?"), acc.local.as_deref().unwrap_or("?"));
    let server = parse(&what, acc.local.as_deref().unwrap_or(""))?;
    let mut k = Calls::new(b.tmp().base);
    let l = k.socket(acc.family, libc::SOCK_STREAM);
    k.opt(l, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    k.bind(l, &server);
    k.batch.call(Sysno::Listen, &[Arg::Result(l), 1.into()]);
    let c = k.socket(cli.family, libc::SOCK_STREAM);
    k.opt(c, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    let out = k.run(b, &what, true)?;
    let (l, c) = (out.results[l] as u64, out.results[c] as u64);
    // The client's old port, where it is free again; else any.
    let mut k = Calls::new(b.tmp().base);
    let cfd = k.batch.call(Sysno::Fcntl, &[c.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), 0.into()]);
    if let Some(local) = &cli.local {
        k.bind(cfd, &parse(&what, local)?);
    }
    k.connect(cfd, &server);
    k.batch.call(Sysno::Close, &[Arg::Result(cfd)]);
    let a = k.batch.call(Sysno::Accept4, &[l.into(), 0.into(), 0.into(), (libc::SOCK_CLOEXEC as u64).into()]);
    let ah = k.batch.call(Sysno::Fcntl, &[Arg::Result(a), (libc::F_DUPFD_CLOEXEC as u64).into(), b.tmp().base.into()]);
    k.batch.call(Sysno::Close, &[Arg::Result(a)]);
    k.batch.call(Sysno::Close, &[l.into()]);
    let binds = k.binds.clone();
    let out = k.run(b, &what, false)?;
    for (call, addr) in binds {
        if cryo_parasite::abi::is_error(out.results[call]) {
            tracing::warn!("{what}: the client's old address {addr} is taken (errno {}); it gets another port", -out.results[call]);
        }
    }
    let a = out.results[ah] as u64;
    let mut k = Calls::new(b.tmp().base);
    let mut reuse_off = Vec::new();
    for (fd, s) in [(a, acc), (c, cli)] {
        let idx = k.batch.call(Sysno::Fcntl, &[fd.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), 0.into()]);
        k.options(idx, s);
        k.opt(idx, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        k.batch.call(Sysno::Close, &[Arg::Result(idx)]);
        if !s.reuseaddr {
            reuse_off.push(fd);
        }
    }
    k.run(b, &what, true)?;
    send_stream(b, &what, c, &acc.queued)?;
    send_stream(b, &what, a, &cli.queued)?;
    // After the bytes, as the program shut them down after sending them.
    shut_wr(b, &what, &[(a, acc), (c, cli)])?;
    reg.sockets.insert(acc.inode, Source { pid: b.inside, fd: a as i32 });
    reg.sockets.insert(cli.inode, Source { pid: b.inside, fd: c as i32 });
    Ok(reuse_off)
}

fn send_stream(b: &mut Restoree, what: &str, fd: u64, data: &[u8]) -> Result<()> {
    for chunk in data.chunks(SOCK_CHUNK) {
        let mut batch = Batch::new();
        let at = batch.data(chunk);
        let n = batch.call(Sysno::Sendto, &[fd.into(), Arg::Data(at), (chunk.len() as u64).into(), (libc::MSG_DONTWAIT as u64).into(), 0.into(), 0.into()]);
        let out = b.run(what, &batch)?;
        if out.results[n] as usize != chunk.len() {
            return Err(RestoreError::Rebuild(format!("{what}: sent {} of {} unread bytes", out.results[n], chunk.len())));
        }
    }
    Ok(())
}

/// The datagrams that waited in UDP sockets, sent again by the sockets of
/// the tree that had sent them, in the order they were queued.
fn datagrams(b: &mut Restoree, all: &[InetSocket], reg: &Registry) -> Result<()> {
    for s in all.iter().filter(|s| !s.datagrams.is_empty()) {
        let what = format!("sending the datagrams waiting in UDP socket {} again", s.local.as_deref().unwrap_or("(unbound)"));
        let Some(local) = &s.local else { continue };
        let to = sockaddr(&parse(&what, local)?);
        for chunk in s.datagrams.chunks(64) {
            let mut batch = Batch::new();
            let dest = batch.data(&to);
            let mut sent = Vec::new();
            for d in chunk {
                // Every TCP and UDP socket of the tree is made by this process.
                let src = reg.sockets.get(&d.sender).filter(|src| src.pid == b.inside);
                let src = src.ok_or_else(|| RestoreError::Corrupt(format!("{what}: UDP socket {} is not in the image", d.sender)))?;
                let data = batch.data(&d.data);
                let fd = (src.fd as u64).into();
                sent.push((batch.call_may_fail(Sysno::Sendto, &[fd, Arg::Data(data), (d.data.len() as u64).into(), (libc::MSG_DONTWAIT as u64).into(), Arg::Data(dest), (to.len() as u64).into()]), d.data.len()));
            }
            let out = b.run(&what, &batch)?;
            for (c, len) in sent {
                if out.results[c] != len as i64 {
                    tracing::warn!("{what}: one of {len} bytes is lost (errno {})", -out.results[c]);
                }
            }
        }
    }
    Ok(())
}

/// shutdown(SHUT_WR) of the ends the program had shut down.
fn shut_wr(b: &mut Restoree, what: &str, ends: &[(u64, &InetSocket)]) -> Result<()> {
    let mut batch = Batch::new();
    for (fd, _) in ends.iter().filter(|(_, s)| s.shut_wr) {
        batch.call(Sysno::Shutdown, &[(*fd).into(), (libc::SHUT_WR as u64).into()]);
    }
    b.run(what, &batch).map(drop)
}

/// A connection that led outside (--tcp-close): connected to a stand-in on
/// loopback. For a connection that was open, the stand-in aborts at once,
/// so the program's next read or write on it reports ECONNRESET; for one
/// whose peer had closed (`PeerClosed`), it sends the bytes the program had
/// not read and closes, so the program reads them, then end of file.
fn stand_in(b: &mut Restoree, s: &InetSocket, reg: &mut Registry) -> Result<()> {
    let closed = s.role == InetRole::PeerClosed;
    let what = format!("recreating TCP connection {} as {}", s.local.as_deref().unwrap_or("?"), if closed { "closed by its peer" } else { "reset" });
    let lo: IpAddr = if s.family == libc::AF_INET6 { Ipv6Addr::LOCALHOST.into() } else { Ipv4Addr::LOCALHOST.into() };
    let mut k = Calls::new(b.tmp().base);
    let l = k.socket(s.family, libc::SOCK_STREAM);
    k.bind(l, &SocketAddr::new(lo, 0));
    k.batch.call(Sysno::Listen, &[Arg::Result(l), 1.into()]);
    let name = k.batch.reserve(32);
    let len = k.batch.data(&32u32.to_ne_bytes());
    k.batch.call(Sysno::Getsockname, &[Arg::Result(l), Arg::Data(name), Arg::Data(len)]);
    let c = k.socket(s.family, libc::SOCK_STREAM);
    k.options(c, s);
    let out = k.run(b, &what, true)?;
    let port = u16::from_be_bytes([out.data[name + 2], out.data[name + 3]]);
    let (l, c) = (out.results[l] as u64, out.results[c] as u64);
    let mut k = Calls::new(b.tmp().base);
    let cfd = k.batch.call(Sysno::Fcntl, &[c.into(), (libc::F_DUPFD_CLOEXEC as u64).into(), 0.into()]);
    k.connect(cfd, &SocketAddr::new(lo, port));
    k.batch.call(Sysno::Close, &[Arg::Result(cfd)]);
    let a = k.batch.call(Sysno::Accept4, &[l.into(), 0.into(), 0.into(), (libc::SOCK_CLOEXEC as u64).into()]);
    let ah = k.batch.call(Sysno::Fcntl, &[Arg::Result(a), (libc::F_DUPFD_CLOEXEC as u64).into(), b.tmp().base.into()]);
    k.batch.call(Sysno::Close, &[Arg::Result(a)]);
    k.batch.call(Sysno::Close, &[l.into()]);
    let a = k.run(b, &what, true)?.results[ah] as u64;
    if closed {
        send_stream(b, &what, a, &s.queued)?;
    }
    let mut batch = Batch::new();
    if !closed {
        let linger = batch.data(&[1i32.to_ne_bytes(), 0i32.to_ne_bytes()].concat());
        batch.call(Sysno::Setsockopt, &[a.into(), (libc::SOL_SOCKET as u64).into(), (libc::SO_LINGER as u64).into(), Arg::Data(linger), 8.into()]);
    }
    batch.call(Sysno::Close, &[a.into()]);
    b.run(&what, &batch)?;
    shut_wr(b, &what, &[(c, s)])?;
    reg.sockets.insert(s.inode, Source { pid: b.inside, fd: c as i32 });
    Ok(())
}
