//! Socket options a program set. Each option cryo can set again is read
//! from the program's socket and from a new socket of the same family, type
//! and protocol: those whose values differ were set by the program (or, for
//! some, by the kernel as the socket was used: those are not in the list).

use crate::files::take_fd;
use cryo_image::{SockOpt, SockOptValue};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Int,
    Timeval,
    Linger,
    Text,
}

/// SOL_UDP options (libc lacks some of them for some targets).
const SOL_UDP: i32 = 17;
const UDP_CORK: i32 = 1;
const UDP_SEGMENT: i32 = 103;
const UDP_GRO: i32 = 104;

/// Level, option, how its value looks, its name for messages. Left out:
/// what is restored on its own (SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE,
/// TCP_NODELAY, IPV6_V6ONLY), what the kernel changes on a connection by
/// itself (TCP_MAXSEG, TCP_WINDOW_CLAMP, TCP_QUICKACK, SO_INCOMING_CPU),
/// and what only reads (SO_TYPE, SO_ERROR, ...).
const KNOWN: &[(i32, i32, Shape, &str)] = &[
    (libc::SOL_SOCKET, libc::SO_BROADCAST, Shape::Int, "SO_BROADCAST"),
    (libc::SOL_SOCKET, libc::SO_DONTROUTE, Shape::Int, "SO_DONTROUTE"),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE, Shape::Int, "SO_OOBINLINE"),
    (libc::SOL_SOCKET, libc::SO_PRIORITY, Shape::Int, "SO_PRIORITY"),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT, Shape::Int, "SO_RCVLOWAT"),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, Shape::Int, "SO_SNDBUF"),
    (libc::SOL_SOCKET, libc::SO_RCVBUF, Shape::Int, "SO_RCVBUF"),
    (libc::SOL_SOCKET, libc::SO_PASSCRED, Shape::Int, "SO_PASSCRED"),
    (libc::SOL_SOCKET, libc::SO_TIMESTAMP, Shape::Int, "SO_TIMESTAMP"),
    (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, Shape::Int, "SO_TIMESTAMPNS"),
    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, Shape::Int, "SO_RXQ_OVFL"),
    (libc::SOL_SOCKET, libc::SO_PEEK_OFF, Shape::Int, "SO_PEEK_OFF"),
    (libc::SOL_SOCKET, libc::SO_MARK, Shape::Int, "SO_MARK"),
    (libc::SOL_SOCKET, libc::SO_BUSY_POLL, Shape::Int, "SO_BUSY_POLL"),
    (libc::SOL_SOCKET, libc::SO_ZEROCOPY, Shape::Int, "SO_ZEROCOPY"),
    (libc::SOL_SOCKET, libc::SO_RCVTIMEO, Shape::Timeval, "SO_RCVTIMEO"),
    (libc::SOL_SOCKET, libc::SO_SNDTIMEO, Shape::Timeval, "SO_SNDTIMEO"),
    (libc::SOL_SOCKET, libc::SO_LINGER, Shape::Linger, "SO_LINGER"),
    (libc::SOL_SOCKET, libc::SO_BINDTODEVICE, Shape::Text, "SO_BINDTODEVICE"),
    (libc::IPPROTO_IP, libc::IP_TOS, Shape::Int, "IP_TOS"),
    (libc::IPPROTO_IP, libc::IP_TTL, Shape::Int, "IP_TTL"),
    (libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, Shape::Int, "IP_MULTICAST_TTL"),
    (libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, Shape::Int, "IP_MULTICAST_LOOP"),
    (libc::IPPROTO_IP, libc::IP_RECVERR, Shape::Int, "IP_RECVERR"),
    (libc::IPPROTO_IP, libc::IP_RECVTTL, Shape::Int, "IP_RECVTTL"),
    (libc::IPPROTO_IP, libc::IP_RECVTOS, Shape::Int, "IP_RECVTOS"),
    (libc::IPPROTO_IP, libc::IP_PKTINFO, Shape::Int, "IP_PKTINFO"),
    (libc::IPPROTO_IP, libc::IP_FREEBIND, Shape::Int, "IP_FREEBIND"),
    (libc::IPPROTO_IP, libc::IP_TRANSPARENT, Shape::Int, "IP_TRANSPARENT"),
    (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, Shape::Int, "IP_BIND_ADDRESS_NO_PORT"),
    (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, Shape::Int, "IP_MTU_DISCOVER"),
    (libc::IPPROTO_IP, libc::IP_RECVORIGDSTADDR, Shape::Int, "IP_RECVORIGDSTADDR"),
    (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, Shape::Int, "IPV6_UNICAST_HOPS"),
    (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, Shape::Int, "IPV6_MULTICAST_HOPS"),
    (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, Shape::Int, "IPV6_MULTICAST_LOOP"),
    (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, Shape::Int, "IPV6_RECVPKTINFO"),
    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS, Shape::Int, "IPV6_TCLASS"),
    (libc::IPPROTO_IPV6, libc::IPV6_RECVERR, Shape::Int, "IPV6_RECVERR"),
    (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, Shape::Int, "IPV6_MTU_DISCOVER"),
    (libc::IPPROTO_TCP, libc::TCP_CORK, Shape::Int, "TCP_CORK"),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, Shape::Int, "TCP_KEEPIDLE"),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, Shape::Int, "TCP_KEEPINTVL"),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, Shape::Int, "TCP_KEEPCNT"),
    (libc::IPPROTO_TCP, libc::TCP_SYNCNT, Shape::Int, "TCP_SYNCNT"),
    (libc::IPPROTO_TCP, libc::TCP_LINGER2, Shape::Int, "TCP_LINGER2"),
    (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, Shape::Int, "TCP_DEFER_ACCEPT"),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, Shape::Int, "TCP_USER_TIMEOUT"),
    (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, Shape::Int, "TCP_NOTSENT_LOWAT"),
    (libc::IPPROTO_TCP, libc::TCP_FASTOPEN, Shape::Int, "TCP_FASTOPEN"),
    (libc::IPPROTO_TCP, libc::TCP_THIN_LINEAR_TIMEOUTS, Shape::Int, "TCP_THIN_LINEAR_TIMEOUTS"),
    (libc::IPPROTO_TCP, libc::TCP_CONGESTION, Shape::Text, "TCP_CONGESTION"),
    (SOL_UDP, UDP_CORK, Shape::Int, "UDP_CORK"),
    (SOL_UDP, UDP_SEGMENT, Shape::Int, "UDP_SEGMENT"),
    (SOL_UDP, UDP_GRO, Shape::Int, "UDP_GRO"),
];

/// The option's name for messages ("SO_RCVTIMEO"), or its numbers.
pub fn name(level: i32, opt: i32) -> String {
    KNOWN.iter().find(|k| k.0 == level && k.1 == opt).map_or_else(|| format!("socket option {level}/{opt}"), |k| k.3.to_string())
}

/// The options of fd `fd` of `pid` that a new socket like it does not have.
/// `kernel_tuned_buffers`: a TCP connection, whose buffer sizes the kernel
/// grows by itself; they are left out.
pub fn changed(pid: i32, fd: i32, kernel_tuned_buffers: bool) -> io::Result<Vec<SockOpt>> {
    let theirs = take_fd(pid, fd)?;
    let t = theirs.as_raw_fd();
    let int = |opt| crate::sockets::sockopt_int(t, libc::SOL_SOCKET, opt);
    let kind = (int(libc::SO_DOMAIN)?, int(libc::SO_TYPE)?, int(libc::SO_PROTOCOL)?);
    let defaults = defaults_of(kind)?;
    // A socket to try values on, made only if some differ.
    let mut scratch: Option<OwnedFd> = None;
    let mut out = Vec::new();
    for (&(level, opt, shape, label), default) in KNOWN.iter().zip(&defaults) {
        if kernel_tuned_buffers && level == libc::SOL_SOCKET && (opt == libc::SO_SNDBUF || opt == libc::SO_RCVBUF) {
            continue;
        }
        // An option this kind of socket lacks fails on both.
        let Ok(value) = get(t, level, opt, shape) else { continue };
        if default.as_ref() == Some(&value) {
            continue;
        }
        let wanted = match &value {
            // The kernel doubles what it is given.
            SockOptValue::Int(v) if level == libc::SOL_SOCKET && (opt == libc::SO_SNDBUF || opt == libc::SO_RCVBUF) => SockOptValue::Int(v / 2),
            v => v.clone(),
        };
        let f = match &scratch {
            Some(f) => f.as_raw_fd(),
            None => scratch.insert(new_socket(kind)?).as_raw_fd(),
        };
        // Kept only if a new socket takes it and then reads as the program's:
        // the kernel sets some itself (the multicast TTL of an accepted
        // connection), which cannot be set on such a socket.
        match set(f, level, opt, &wanted) {
            Ok(()) if get(f, level, opt, shape).ok().as_ref() == Some(&value) => out.push(SockOpt { level, name: opt, value: wanted }),
            Ok(()) => tracing::debug!("process {pid} fd {fd}: {label} reads back otherwise when set again; left out"),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                tracing::warn!("process {pid} fd {fd}: {label} cannot be set by this user ({e}); after a restart it has the kernel's default")
            }
            Err(e) => tracing::debug!("process {pid} fd {fd}: {label} cannot be set again ({e}); left out"),
        }
    }
    Ok(out)
}

type Kind = (i32, i32, i32);

/// The values of every known option on a new socket of this family, type
/// and protocol (None: it has no such option), read once per kind: a tree
/// with many sockets is stopped while they are looked at.
fn defaults_of(kind: Kind) -> io::Result<Vec<Option<SockOptValue>>> {
    static DEFAULTS: Mutex<Vec<(Kind, Vec<Option<SockOptValue>>)>> = Mutex::new(Vec::new());
    let mut known = DEFAULTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = known.iter().find(|(k, _)| *k == kind) {
        return Ok(d.clone());
    }
    let fresh = new_socket(kind)?;
    let d: Vec<_> = KNOWN.iter().map(|&(level, opt, shape, _)| get(fresh.as_raw_fd(), level, opt, shape).ok()).collect();
    known.push((kind, d.clone()));
    Ok(d)
}

fn set(fd: i32, level: i32, opt: i32, value: &SockOptValue) -> io::Result<()> {
    let b = encode(value);
    // SAFETY: b holds the option's value, of the length given.
    if unsafe { libc::setsockopt(fd, level, opt, b.as_ptr().cast(), b.len() as libc::socklen_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [`changed`], or none (warned) where they cannot be read: the socket
/// comes back with the kernel's defaults rather than not at all.
pub fn changed_or_none(pid: i32, fd: i32, kernel_tuned_buffers: bool) -> Vec<SockOpt> {
    changed(pid, fd, kernel_tuned_buffers).unwrap_or_else(|e| {
        tracing::warn!("process {pid} fd {fd}: its socket options could not be read ({e}); after a restart it has the kernel's defaults");
        Vec::new()
    })
}

fn new_socket((domain, kind, protocol): Kind) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no memory arguments.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// getsockopt into `buf`; the length the kernel wrote.
fn get_raw(fd: i32, level: i32, opt: i32, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len are valid out-pointers, len holding buf's size.
    if unsafe { libc::getsockopt(fd, level, opt, buf.as_mut_ptr().cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

fn get(fd: i32, level: i32, opt: i32, shape: Shape) -> io::Result<SockOptValue> {
    Ok(match shape {
        Shape::Int => SockOptValue::Int(crate::sockets::sockopt_int(fd, level, opt)?),
        Shape::Timeval => {
            let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
            // SAFETY: a timeval is plain integers; the slice covers exactly it.
            get_raw(fd, level, opt, unsafe { as_bytes_mut(&mut tv) })?;
            SockOptValue::Micros(micros_of(&tv))
        }
        Shape::Linger => {
            let mut l = libc::linger { l_onoff: 0, l_linger: 0 };
            // SAFETY: a linger is two ints; the slice covers exactly it.
            get_raw(fd, level, opt, unsafe { as_bytes_mut(&mut l) })?;
            SockOptValue::Linger { on: l.l_onoff != 0, seconds: l.l_linger }
        }
        Shape::Text => {
            let mut buf = [0u8; 64];
            let n = get_raw(fd, level, opt, &mut buf)?;
            let text = &buf[..n];
            SockOptValue::Text(text[..text.iter().position(|&b| b == 0).unwrap_or(n)].to_vec())
        }
    })
}

// The conversions are not useless on ARMv7, whose time_t is 32 bits.
#[allow(clippy::useless_conversion)]
fn micros_of(tv: &libc::timeval) -> i64 {
    i64::from(tv.tv_sec) * 1_000_000 + i64::from(tv.tv_usec)
}

#[allow(clippy::useless_conversion)]
fn timeval_of(us: i64) -> libc::timeval {
    libc::timeval { tv_sec: (us / 1_000_000).try_into().unwrap_or_default(), tv_usec: (us % 1_000_000).try_into().unwrap_or_default() }
}

/// # Safety
/// `T` must be plain old data: every byte pattern is a valid `T`.
unsafe fn as_bytes_mut<T>(v: &mut T) -> &mut [u8] {
    // SAFETY: the slice covers exactly *v, which the caller says any bytes may fill.
    unsafe { std::slice::from_raw_parts_mut((v as *mut T).cast(), std::mem::size_of::<T>()) }
}

/// The bytes setsockopt takes for `value`, laid out as this build's libc
/// lays out the structures (the target's: cryo runs as the same ABI).
pub fn encode(value: &SockOptValue) -> Vec<u8> {
    match value {
        SockOptValue::Int(v) => v.to_ne_bytes().to_vec(),
        SockOptValue::Micros(us) => {
            let mut tv = timeval_of(*us);
            // SAFETY: a timeval is plain integers.
            unsafe { as_bytes_mut(&mut tv) }.to_vec()
        }
        SockOptValue::Linger { on, seconds } => {
            let mut l = libc::linger { l_onoff: *on as i32, l_linger: *seconds };
            // SAFETY: a linger is two ints.
            unsafe { as_bytes_mut(&mut l) }.to_vec()
        }
        SockOptValue::Text(t) => t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(domain: i32, kind: i32) -> OwnedFd {
        new_socket((domain, kind, 0)).unwrap()
    }

    fn set_on(fd: &OwnedFd, level: i32, opt: i32, value: &SockOptValue) {
        set(fd.as_raw_fd(), level, opt, value).unwrap_or_else(|e| panic!("setting {}: {e}", name(level, opt)));
    }

    /// Options set on a socket of this process are found, and only those.
    #[test]
    fn finds_what_was_set() {
        let s = socket(libc::AF_INET, libc::SOCK_DGRAM);
        let pid = std::process::id() as i32;
        assert_eq!(changed(pid, s.as_raw_fd(), false).unwrap(), vec![], "a new socket has nothing set");
        let wanted = [
            (libc::SOL_SOCKET, libc::SO_BROADCAST, SockOptValue::Int(1)),
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO, SockOptValue::Micros(2_500_000)),
            (libc::SOL_SOCKET, libc::SO_LINGER, SockOptValue::Linger { on: true, seconds: 7 }),
            (libc::IPPROTO_IP, libc::IP_TTL, SockOptValue::Int(9)),
        ];
        for (level, opt, v) in &wanted {
            set_on(&s, *level, *opt, v);
        }
        let got = changed(pid, s.as_raw_fd(), false).unwrap();
        let want: Vec<SockOpt> = wanted.iter().map(|(level, name, value)| SockOpt { level: *level, name: *name, value: value.clone() }).collect();
        for w in &want {
            assert!(got.contains(w), "{} not found in {got:?}", name(w.level, w.name));
        }
        assert_eq!(got.len(), want.len(), "{got:?}");
    }

    #[test]
    fn congestion_control_is_text() {
        let s = socket(libc::AF_INET, libc::SOCK_STREAM);
        set_on(&s, libc::IPPROTO_TCP, libc::TCP_CONGESTION, &SockOptValue::Text(b"reno".to_vec()));
        let got = changed(std::process::id() as i32, s.as_raw_fd(), false).unwrap();
        let reno = SockOpt { level: libc::IPPROTO_TCP, name: libc::TCP_CONGESTION, value: SockOptValue::Text(b"reno".to_vec()) };
        // Where reno is the default already, nothing differs.
        assert!(got.is_empty() || got == vec![reno], "{got:?}");
    }
}
