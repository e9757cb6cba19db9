//! TCP and UDP sockets of a tree, without TCP_REPAIR: listeners bind their
//! address again; a connection whose both ends the tree holds is connected
//! again over loopback with the unread bytes sent again (and its ends shut
//! down where they were); a connection to outside the tree is refused
//! unless --tcp-close, which restores it as a connection that was reset, or
//! one whose peer had closed (CLOSE_WAIT) as one that gives its unread bytes,
//! then end of file. UDP sockets bind and connect again, with the
//! datagrams waiting in them that the tree sent (others are dropped, as a
//! network may drop them).

use super::unix::socket_inode;
use cryo_image::{Datagram, InetRole, InetSocket};
use cryo_tracer::proc::FdInfo;
use cryo_tracer::sockets::{self, InetInfo};
use cryo_tracer::sockopts;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TCP_ESTABLISHED: u8 = 1;
const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_LISTEN: u8 = 10;
const TCP_CLOSING: u8 = 11;
/// How long a connection's sent bytes may take to reach its peer.
const DRAIN_WAIT: Duration = Duration::from_millis(300);

pub struct InetTable {
    /// Every IPv4/IPv6 socket of the tree: (pid, fd) it was seen through, and what it is.
    info: HashMap<u64, (i32, i32, InetInfo)>,
    tcp_close: bool,
    pub saved: Vec<InetSocket>,
    /// TCP connections to make abort (RST) if the tree is killed after the checkpoint.
    pub abort_on_kill: Vec<(i32, i32)>,
}

fn state_name(s: u8) -> &'static str {
    match s {
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        6 => "TIME_WAIT",
        _ => "an unusual state",
    }
}

impl InetTable {
    pub fn new(tables: &[(i32, Vec<FdInfo>)], tcp_close: bool) -> InetTable {
        let mut info = HashMap::new();
        for (pid, fds) in tables {
            for f in fds {
                let Some(inode) = socket_inode(&f.link) else { continue };
                if info.contains_key(&inode) {
                    continue;
                }
                if let Ok((domain, _)) = sockets::domain_and_type(*pid, f.fd) {
                    if domain == libc::AF_INET || domain == libc::AF_INET6 {
                        if let Ok(i) = sockets::inet_info(*pid, f.fd) {
                            info.insert(inode, (*pid, f.fd, i));
                        }
                    }
                }
            }
        }
        InetTable { info, tcp_close, saved: Vec::new(), abort_on_kill: Vec::new() }
    }

    pub fn is_inet(&self, inode: u64) -> bool {
        self.info.contains_key(&inode)
    }

    /// The tree's other end of a connection from `local` to `peer`.
    fn other_end(&self, inode: u64, i: &InetInfo) -> Option<u64> {
        self.info
            .iter()
            .find(|(k, (_, _, o))| **k != inode && o.kind == libc::SOCK_STREAM && o.local == i.peer && o.peer == i.local)
            .map(|(k, _)| *k)
    }

    /// Whether a listener of the tree has `i`'s port: then `i` came from its accept().
    fn on_listener_port(&self, i: &InetInfo) -> bool {
        let Some(l) = i.local else { return false };
        self.info.values().any(|(_, _, o)| {
            o.tcp_state == TCP_LISTEN && o.local.is_some_and(|ol| ol.port() == l.port() && (ol.ip().is_unspecified() || ol.ip() == l.ip()))
        })
    }

    /// What waits in a UDP socket: datagrams from a socket of the tree are
    /// kept (sent again from it at restart); others are dropped, as a
    /// network may drop them.
    fn datagrams(&self, pid: i32, fd: i32) -> Result<Vec<Datagram>, String> {
        let waiting = sockets::peek_datagrams(pid, fd).map_err(|e| format!("reading the datagrams waiting in it: {e}"))?;
        let mut kept = Vec::new();
        let mut dropped = 0;
        for (from, data) in waiting {
            let sender = from.and_then(|from| {
                self.info.iter().find(|(_, (_, _, o))| {
                    o.kind == libc::SOCK_DGRAM && o.local.is_some_and(|l| l == from || (l.ip().is_unspecified() && l.port() == from.port() && l.is_ipv4() == from.is_ipv4()))
                })
            });
            match sender {
                Some((&sender, _)) => kept.push(Datagram { sender, data }),
                None => dropped += 1,
            }
        }
        if dropped > 0 {
            tracing::warn!("process {pid} fd {fd}: {dropped} datagram(s) waiting in it came from outside the checkpointed tree and are dropped (as a network may drop them)");
        }
        Ok(kept)
    }

    pub fn save(&mut self, inode: u64) -> Result<(), String> {
        if self.saved.iter().any(|s| s.inode == inode) {
            return Ok(());
        }
        let (pid, fd, i) = self.info[&inode].clone();
        let mut queued = Vec::new();
        let mut datagrams = Vec::new();
        // A connection one side of which was shut down is still one.
        let shut_wr = matches!(i.tcp_state, TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_LAST_ACK | TCP_CLOSING);
        let peer_closed = matches!(i.tcp_state, TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING);
        let role = match (i.kind, i.tcp_state) {
            (libc::SOCK_STREAM, TCP_LISTEN) => {
                if i.accept_queue > 0 && !self.tcp_close {
                    return Err(format!(
                        "a TCP listener with {} connection(s) waiting to be accepted; checkpoint again, or with --tcp-close to drop them (their clients see a reset, as other connections to outside do)",
                        i.accept_queue
                    ));
                }
                if i.accept_queue > 0 {
                    tracing::warn!("process {pid} fd {fd}: {} connection(s) waiting to be accepted are dropped (--tcp-close)", i.accept_queue);
                }
                InetRole::Listen { backlog: i.backlog.max(1) }
            }
            (libc::SOCK_STREAM, TCP_ESTABLISHED) | (libc::SOCK_STREAM, TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING) => {
                let peer = i.peer.map(|p| p.to_string()).unwrap_or_default();
                match self.other_end(inode, &i) {
                    Some(other) => {
                        wait_drained(pid, fd, &i)?;
                        let o = &self.info[&other].2;
                        let accepted = match (self.on_listener_port(&i), self.on_listener_port(o)) {
                            (a, b) if a != b => a,
                            _ => inode < other,
                        };
                        queued = sockets::peek_socket(pid, fd).map_err(|e| format!("reading what is queued in it: {e}"))?.concat();
                        self.abort_on_kill.push((pid, fd));
                        InetRole::Pair { peer: other, accepted }
                    }
                    None if self.tcp_close && peer_closed => {
                        queued = sockets::peek_socket(pid, fd).map_err(|e| format!("reading what is queued in it: {e}"))?.concat();
                        self.abort_on_kill.push((pid, fd));
                        InetRole::PeerClosed
                    }
                    None if self.tcp_close => {
                        self.abort_on_kill.push((pid, fd));
                        InetRole::Reset
                    }
                    None => {
                        return Err(format!(
                            "a TCP connection to {peer} outside the checkpointed tree; checkpoint with --tcp-close to restore it as a reset connection the program can reconnect from"
                        ))
                    }
                }
            }
            (libc::SOCK_STREAM, TCP_CLOSE) => InetRole::Unconnected,
            (libc::SOCK_STREAM, s) => return Err(format!("a TCP socket in state {}, which cryo cannot recreate", state_name(s))),
            (libc::SOCK_DGRAM, _) => {
                datagrams = self.datagrams(pid, fd)?;
                match i.peer {
                    Some(p) => InetRole::Connected { peer: p.to_string() },
                    None => InetRole::Unconnected,
                }
            }
            (k, _) => return Err(format!("an IP socket of type {k} (raw?), which cryo cannot recreate")),
        };
        let connection = matches!(role, InetRole::Pair { .. } | InetRole::Reset | InetRole::PeerClosed);
        let options = sockopts::changed_or_none(pid, fd, connection);
        self.saved.push(InetSocket {
            inode,
            family: i.domain,
            kind: i.kind,
            role,
            local: i.local.map(|l| l.to_string()),
            queued,
            datagrams,
            reuseaddr: i.reuseaddr,
            reuseport: i.reuseport,
            keepalive: i.keepalive,
            nodelay: i.nodelay,
            v6only: i.v6only,
            shut_wr,
            options,
        });
        Ok(())
    }
}

/// Bytes sent and not yet acknowledged cannot be read out without
/// TCP_REPAIR. Over loopback they arrive at once unless the reader's buffer
/// is full: wait a little, then refuse.
fn wait_drained(pid: i32, fd: i32, i: &InetInfo) -> Result<(), String> {
    let start = Instant::now();
    let mut unacked = i.unacked;
    while unacked > 0 {
        if start.elapsed() > DRAIN_WAIT {
            return Err(format!(
                "{unacked} bytes sent on this TCP connection have not reached its peer (its reader's buffer is full); checkpoint again when the reader has caught up"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
        unacked = sockets::inet_info(pid, fd).map(|i| i.unacked).unwrap_or(0);
    }
    Ok(())
}
