//! Unix sockets of a tree: what can come back (pairs inside the tree,
//! listeners, bound or unconnected sockets, datagram sockets connected to a
//! name outside; with --tcp-close a stream connected outside, as closed by
//! its peer) with the bytes waiting in them, and what cannot (a stream
//! connected outside the tree without --tcp-close, connections not yet
//! accepted, fds in flight).

use cryo_image::{UnixRole, UnixSocket};
use cryo_tracer::sockets::{self, UnixDiag, TCP_LISTEN};
use cryo_tracer::sockopts;
use std::collections::{HashMap, HashSet};

pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

pub struct UnixTable {
    diag: HashMap<u64, UnixDiag>,
    /// --tcp-close: a stream connected to outside comes back closed by its peer.
    close_outside: bool,
    /// Socket inodes some fd of the tree holds.
    in_tree: HashSet<u64>,
    pub saved: Vec<UnixSocket>,
}

impl UnixTable {
    pub fn new(in_tree: HashSet<u64>, close_outside: bool) -> anyhow::Result<UnixTable> {
        let diag = if in_tree.is_empty() {
            HashMap::new()
        } else {
            sockets::unix_sockets().map_err(|e| anyhow::anyhow!("asking the kernel about Unix sockets (sock_diag): {e}"))?
        };
        Ok(UnixTable { diag, close_outside, in_tree, saved: Vec::new() })
    }

    pub fn is_unix(&self, inode: u64) -> bool {
        self.diag.contains_key(&inode)
    }

    /// A stream or seqpacket socket connected to a socket outside the tree
    /// (a service's stdout to journald, say).
    pub fn leads_outside(&self, inode: u64) -> bool {
        self.diag.get(&inode).is_some_and(|d| d.kind as i32 != libc::SOCK_DGRAM && d.peer != 0 && !self.in_tree.contains(&d.peer))
    }

    /// Record the socket (once per inode) with what is queued in it, read
    /// through fd `fd` of `pid`. Errors say why it cannot come back.
    pub fn save(&mut self, pid: i32, fd: i32, inode: u64) -> Result<(), String> {
        if self.saved.iter().any(|s| s.inode == inode) {
            return Ok(());
        }
        let d = &self.diag[&inode];
        let kind = d.kind as i32;
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&kind) {
            return Err(format!("a Unix socket of type {kind}, which cryo cannot recreate"));
        }
        let role = if d.state == TCP_LISTEN {
            if !d.pending.is_empty() {
                return Err(format!("a listening Unix socket with {} connection(s) not yet accepted", d.pending.len()));
            }
            UnixRole::Listen { backlog: d.wqueue.max(1) }
        } else if d.peer != 0 && self.in_tree.contains(&d.peer) {
            UnixRole::Pair { peer: d.peer }
        } else if d.peer != 0 {
            let peer_name = self.diag.get(&d.peer).and_then(|p| p.name.clone());
            match peer_name {
                Some(n) if kind == libc::SOCK_DGRAM => UnixRole::ConnectedTo { peer_name: n },
                n => {
                    let name = n.map(|n| String::from_utf8_lossy(&n).replace('\0', "@")).unwrap_or_else(|| "an unnamed socket".into());
                    if !self.close_outside {
                        return Err(format!(
                            "a Unix socket connected to {name} outside the checkpointed tree; checkpoint the process at the other end together with it, or with --tcp-close to bring it back closed by its peer"
                        ));
                    }
                    tracing::warn!("process {pid} fd {fd}: the Unix socket connected to {name} outside the tree comes back closed by its peer (--tcp-close)");
                    UnixRole::PeerClosed
                }
            }
        } else {
            UnixRole::Unconnected
        };
        let mut queued = if d.state == TCP_LISTEN {
            Vec::new()
        } else {
            sockets::peek_socket(pid, fd).map_err(|e| format!("reading what is queued in it: {e}"))?
        };
        if kind == libc::SOCK_STREAM && queued.len() > 1 {
            queued = vec![queued.concat()];
        }
        let receivable = match &role {
            UnixRole::Pair { .. } | UnixRole::PeerClosed => true,
            UnixRole::Unconnected => d.name.is_some(),
            _ => false,
        };
        if !queued.is_empty() && !receivable {
            return Err(format!("{} message(s) queued from outside the tree, which cryo cannot send to it again", queued.len()));
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let role = match role {
            UnixRole::ConnectedTo { peer_name } => UnixRole::ConnectedTo { peer_name: absolute(peer_name, &cwd) },
            r => r,
        };
        let name = d.name.clone().map(|n| absolute(n, &cwd));
        let options = sockopts::changed_or_none(pid, fd, false);
        self.saved.push(UnixSocket { inode, kind, role, name, queued, shutdown: d.shutdown, options });
        Ok(())
    }
}

/// A name bound relative to the working directory, made absolute: the
/// restart binds before the process has its old working directory back.
fn absolute(name: Vec<u8>, cwd: &std::path::Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    if name.is_empty() || name[0] == 0 || name[0] == b'/' {
        return name;
    }
    cwd.join(std::ffi::OsStr::from_bytes(&name)).as_os_str().as_bytes().to_vec()
}
