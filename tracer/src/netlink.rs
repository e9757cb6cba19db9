//! Netlink sockets another process holds: what the socket API tells of one
//! through a reference taken with pidfd_getfd, and what /proc/PID/net/netlink
//! adds (the bytes waiting in it, a dump under way).

use crate::files::take_fd;
use crate::sockets::sockopt_int;
use cryo_image::NetlinkSocket;
use std::io;
use std::os::fd::AsRawFd;

const SOL_NETLINK: i32 = 270;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
/// Options a program sets with one int, in the order they are restored:
/// PKTINFO, BROADCAST_ERROR, NO_ENOBUFS, LISTEN_ALL_NSID, CAP_ACK, EXT_ACK,
/// GET_STRICT_CHK.
pub const FLAG_OPTIONS: [i32; 7] = [3, 4, 5, 8, 10, 11, 12];

/// A netlink socket as the image keeps it, and what decides whether it can be.
#[derive(Debug, Clone)]
pub struct NetlinkInfo {
    pub socket: NetlinkSocket,
    /// Bytes of messages waiting to be read.
    pub queued: u64,
    /// A dump (NLM_F_DUMP) is under way: more of its reply is still to come.
    pub dumping: bool,
}

/// getsockname or getpeername: (port id, groups bitmask).
fn address(fd: i32, peer: bool) -> io::Result<(u32, u32)> {
    // SAFETY: an all-zero sockaddr_nl is valid.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_nl).cast();
    // SAFETY: a and len are valid out-pointers of the sizes given.
    let r = unsafe { if peer { libc::getpeername(fd, p, &mut len) } else { libc::getsockname(fd, p, &mut len) } };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((a.nl_pid, a.nl_groups))
}

/// The groups it listens to, from NETLINK_LIST_MEMBERSHIPS (a bitmask).
fn memberships(fd: i32) -> io::Result<Vec<u32>> {
    let mut words = [0u32; 64];
    let mut len = std::mem::size_of_val(&words) as libc::socklen_t;
    // SAFETY: words and len are valid out-pointers of the sizes given.
    if unsafe { libc::getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, words.as_mut_ptr().cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (len as usize / 4).min(words.len());
    Ok((0..n * 32).filter(|&bit| words[bit / 32] & (1 << (bit % 32)) != 0).map(|bit| bit as u32 + 1).collect())
}

/// The row of /proc/PID/net/netlink for socket `inode`: (Rmem, Dump).
fn proc_row(pid: i32, inode: u64) -> io::Result<Option<(u64, bool)>> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink"))?;
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    Ok(table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 10 && f[9].parse() == Ok(inode)).then(|| (f[4].parse().unwrap_or(0), f[6] != "0"))
    }))
}

pub fn netlink_info(pid: i32, fd: i32, inode: u64) -> io::Result<NetlinkInfo> {
    let s = take_fd(pid, fd)?;
    let raw = s.as_raw_fd();
    let (portid, _) = address(raw, false)?;
    let (dst_portid, dst_group) = address(raw, true)?;
    let (queued, dumping) = proc_row(pid, inode)?.unwrap_or_default();
    Ok(NetlinkInfo {
        socket: NetlinkSocket {
            protocol: sockopt_int(raw, libc::SOL_SOCKET, libc::SO_PROTOCOL)?,
            kind: sockopt_int(raw, libc::SOL_SOCKET, libc::SO_TYPE)?,
            portid,
            groups: memberships(raw)?,
            dst_portid,
            dst_group,
            options: FLAG_OPTIONS.into_iter().filter(|&o| sockopt_int(raw, SOL_NETLINK, o).is_ok_and(|v| v != 0)).collect(),
            rcvbuf: sockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF)?,
            sndbuf: sockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF)?,
        },
        queued,
        dumping,
    })
}
