//! Unix sockets from outside: what the kernel's sock_diag netlink interface
//! says about every Unix socket of the network namespace (type, state, name,
//! peer, connections waiting to be accepted), and the bytes queued in one,
//! copied without taking them out.

use crate::files::take_fd;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_ICONS: u32 = 0x08;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
/// sk_state of a listening socket.
pub const TCP_LISTEN: u8 = 10;

#[derive(Debug, Clone, Default)]
pub struct UnixDiag {
    pub inode: u64,
    pub kind: u8,
    pub state: u8,
    pub name: Option<Vec<u8>>,
    /// Inode of the socket it is connected to (0: none).
    pub peer: u64,
    /// Connections waiting to be accepted (listening sockets).
    pub pending: Vec<u64>,
    /// Receive queue length; for a listening socket, its backlog in `wqueue`.
    pub rqueue: u32,
    pub wqueue: u32,
    pub shutdown: u8,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
}

/// Every Unix socket of this network namespace, by inode.
pub fn unix_sockets() -> io::Result<HashMap<u64, UnixDiag>> {
    // SAFETY: socket takes no pointers; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let nl = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&[0; 8]);
    // unix_diag_req: family, protocol, pad, states (all), ino, show, cookie.
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN).to_ne_bytes());
    req.extend_from_slice(&[0; 8]);
    // SAFETY: req is a valid buffer of req.len() bytes; a NULL address means the kernel.
    if unsafe { libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = 0;
        let n = n as usize;
        while at + 16 <= n {
            let len = u32_at(&buf, at) as usize;
            let ty = u16_at(&buf, at + 4);
            if len < 16 || at + len > n {
                break;
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = -(u32_at(&buf, at + 16) as i32);
                    return Err(io::Error::from_raw_os_error(errno));
                }
                _ => {
                    if let Some(d) = parse_msg(&buf[at + 16..at + len]) {
                        out.insert(d.inode, d);
                    }
                }
            }
            at += len.next_multiple_of(4);
        }
    }
}

fn parse_msg(m: &[u8]) -> Option<UnixDiag> {
    if m.len() < 16 {
        return None;
    }
    let mut d = UnixDiag { kind: m[1], state: m[2], inode: u32_at(m, 4) as u64, ..Default::default() };
    let mut at = 16;
    while at + 4 <= m.len() {
        let len = u16_at(m, at) as usize;
        let ty = u16_at(m, at + 2);
        if len < 4 || at + len > m.len() {
            break;
        }
        let data = &m[at + 4..at + len];
        match ty {
            UNIX_DIAG_NAME => {
                let mut name = data.to_vec();
                // A path is NUL-terminated; an abstract name starts with NUL and is taken whole.
                if name.first() != Some(&0) {
                    while name.last() == Some(&0) {
                        name.pop();
                    }
                }
                d.name = Some(name);
            }
            UNIX_DIAG_PEER if data.len() >= 4 => d.peer = u32_at(data, 0) as u64,
            UNIX_DIAG_ICONS => d.pending = data.chunks_exact(4).map(|c| u32_at(c, 0) as u64).collect(),
            UNIX_DIAG_RQLEN if data.len() >= 8 => {
                d.rqueue = u32_at(data, 0);
                d.wqueue = u32_at(data, 4);
            }
            UNIX_DIAG_SHUTDOWN if !data.is_empty() => d.shutdown = data[0],
            _ => {}
        }
        at += len.next_multiple_of(4);
    }
    Some(d)
}

/// Largest datagram peeked at once (a Unix datagram is at most the send
/// buffer, a few hundred KiB).
const PEEK_BUF: usize = 4 << 20;

/// The bytes queued in a socket of another process, copied with MSG_PEEK
/// through a reference taken with pidfd_getfd; the socket keeps them. One
/// entry per datagram/record, or per run for a stream. Fds in flight
/// (SCM_RIGHTS) are an error: cryo cannot recreate them.
pub fn peek_socket(pid: i32, fd: i32) -> io::Result<Vec<Vec<u8>>> {
    Ok(peek_walk(pid, fd)?.into_iter().map(|(m, _)| m).collect())
}

/// The datagrams queued in a UDP socket of another process, each with the
/// address it came from (as [`peek_socket`]).
pub fn peek_datagrams(pid: i32, fd: i32) -> io::Result<Vec<(Option<std::net::SocketAddr>, Vec<u8>)>> {
    Ok(peek_walk(pid, fd)?.into_iter().map(|(m, from)| (from.as_ref().and_then(to_std), m)).collect())
}

fn peek_walk(pid: i32, fd: i32) -> io::Result<Vec<(Vec<u8>, Option<nix::sys::socket::SockaddrStorage>)>> {
    let s = take_fd(pid, fd)?;
    let sfd = s.as_raw_fd();
    let old = sockopt_int(sfd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
    // With a peek offset each MSG_PEEK moves past what it saw, so the whole
    // queue can be walked; the program's own setting is put back after.
    set_peek_off(sfd, 0)?;
    let r = peek_all(sfd);
    let back = set_peek_off(sfd, old);
    let msgs = r?;
    back?;
    Ok(msgs)
}

fn set_peek_off(fd: i32, v: libc::c_int) -> io::Result<()> {
    // SAFETY: v is a valid int for the duration of the call.
    let r = unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, (&v as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as u32)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Each message with the address it came from (where the socket tells).
fn peek_all(fd: i32) -> io::Result<Vec<(Vec<u8>, Option<nix::sys::socket::SockaddrStorage>)>> {
    let mut msgs = Vec::new();
    let mut buf = vec![0u8; PEEK_BUF];
    let mut control = [0u64; 64];
    loop {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: sockaddr_storage is plain data; zeroed is a valid empty address.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        mh.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: mh points to the valid buffers set up above.
        let n = unsafe { libc::recvmsg(fd, &mut mh, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(msgs);
            }
            return Err(e);
        }
        if has_rights(&mh) || mh.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("file descriptors are in flight in it (SCM_RIGHTS), which cryo cannot recreate"));
        }
        if mh.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::other(format!("a message queued in it is larger than {PEEK_BUF} bytes")));
        }
        if n == 0 {
            // End of stream (peer gone or shut down), or an empty datagram
            // the peek offset cannot move past.
            return Ok(msgs);
        }
        // SAFETY: the kernel wrote msg_namelen bytes of an address into `from`.
        let from = unsafe { <nix::sys::socket::SockaddrStorage as nix::sys::socket::SockaddrLike>::from_raw((&from as *const libc::sockaddr_storage).cast(), Some(mh.msg_namelen)) };
        msgs.push((buf[..n as usize].to_vec(), from));
    }
}

/// Whether a received control message carries fds; those the peek
/// installed in cryo are closed again.
fn has_rights(mh: &libc::msghdr) -> bool {
    let mut found = false;
    // SAFETY: the CMSG_* walk stays within msg_control/msg_controllen as the kernel filled them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                found = true;
                let data = libc::CMSG_DATA(c) as *const libc::c_int;
                let count = ((*c).cmsg_len as usize - (data as usize - c as usize)) / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    libc::close(*data.add(i));
                }
            }
            c = libc::CMSG_NXTHDR(mh, c);
        }
    }
    found
}

/// An int socket option at `level`.
pub(crate) fn sockopt_int(fd: i32, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid out-pointers of the sizes given.
    if unsafe { libc::getsockopt(fd, level, opt, (&mut v as *mut libc::c_int).cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Address family (SO_DOMAIN) and type (SO_TYPE) of a socket another process holds.
pub fn domain_and_type(pid: i32, fd: i32) -> io::Result<(i32, i32)> {
    let s = take_fd(pid, fd)?;
    Ok((sockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)?, sockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE)?))
}

/// A name for an address family, for messages.
pub fn family_name(domain: i32) -> String {
    match domain {
        libc::AF_UNIX => "Unix".into(),
        libc::AF_INET => "IPv4".into(),
        libc::AF_INET6 => "IPv6".into(),
        libc::AF_NETLINK => "netlink".into(),
        libc::AF_PACKET => "packet".into(),
        d => format!("family {d}"),
    }
}

/// An IPv4/IPv6 socket another process holds, as the socket API tells it
/// through a reference taken with pidfd_getfd.
#[derive(Debug, Clone)]
pub struct InetInfo {
    pub domain: i32,
    pub kind: i32,
    pub local: Option<std::net::SocketAddr>,
    pub peer: Option<std::net::SocketAddr>,
    /// tcpi_state (TCP only): 1 established, 7 closed, 10 listening, ...
    pub tcp_state: u8,
    /// Listening TCP socket: connections waiting to be accepted, and the backlog.
    pub accept_queue: u32,
    pub backlog: u32,
    /// Bytes sent but not yet acknowledged by the peer (SIOCOUTQ).
    pub unacked: i32,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub keepalive: bool,
    pub nodelay: bool,
    pub v6only: bool,
}

fn to_std(a: &nix::sys::socket::SockaddrStorage) -> Option<std::net::SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(std::net::SocketAddr::V4(std::net::SocketAddrV4::new(v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6().map(|v6| std::net::SocketAddr::V6(std::net::SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
}

fn opt_at(fd: i32, level: i32, opt: i32) -> i32 {
    sockopt_int(fd, level, opt).unwrap_or(0)
}

pub fn inet_info(pid: i32, fd: i32) -> io::Result<InetInfo> {
    use nix::sys::socket::{getpeername, getsockname, SockaddrStorage};
    let s = take_fd(pid, fd)?;
    let raw = s.as_raw_fd();
    let domain = sockopt_int(raw, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let kind = sockopt_int(raw, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let local = getsockname::<SockaddrStorage>(raw).ok().as_ref().and_then(to_std).filter(|a| a.port() != 0 || !a.ip().is_unspecified());
    let peer = getpeername::<SockaddrStorage>(raw).ok().as_ref().and_then(to_std);
    let mut info = InetInfo {
        domain,
        kind,
        local,
        peer,
        tcp_state: 0,
        accept_queue: 0,
        backlog: 0,
        unacked: 0,
        reuseaddr: opt_at(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR) != 0,
        reuseport: opt_at(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT) != 0,
        keepalive: opt_at(raw, libc::SOL_SOCKET, libc::SO_KEEPALIVE) != 0,
        nodelay: false,
        v6only: domain == libc::AF_INET6 && opt_at(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) != 0,
    };
    if kind == libc::SOCK_STREAM {
        // struct tcp_info: state (u8) first; unacked and sacked (u32) at 24 and 28
        // hold the accept queue and the backlog of a listening socket.
        let mut ti = [0u8; 104];
        let mut len = ti.len() as libc::socklen_t;
        // SAFETY: ti and len are valid out-pointers of the sizes given.
        if unsafe { libc::getsockopt(raw, libc::IPPROTO_TCP, libc::TCP_INFO, ti.as_mut_ptr().cast(), &mut len) } == 0 {
            info.tcp_state = ti[0];
            info.accept_queue = u32_at(&ti, 24);
            info.backlog = u32_at(&ti, 28);
        }
        info.nodelay = opt_at(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY) != 0;
        let mut outq: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int to the valid pointer.
        unsafe { libc::ioctl(raw, libc::TIOCOUTQ, &mut outq) };
        info.unacked = outq;
    }
    Ok(info)
}

/// Make a TCP socket another process holds send a reset instead of a FIN
/// when it is closed (SO_LINGER with no time), so no TIME_WAIT keeps its
/// ports from being bound again at restart.
pub fn abort_on_close(pid: i32, fd: i32) -> io::Result<()> {
    let s = take_fd(pid, fd)?;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: l is a valid linger for the duration of the call.
    let r = unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&l as *const libc::linger).cast(), std::mem::size_of::<libc::linger>() as u32)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
