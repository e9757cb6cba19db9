//! What an image records. Addresses and sizes are u64 whatever the target's
//! word size, so one format serves 32- and 64-bit processes.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Inventory {
    pub cryo_version: String,
    /// `Arch::NAME` of the CPU the image was taken on.
    pub arch: String,
    /// `uname -r` and host name of the checkpointing machine.
    pub kernel: String,
    pub hostname: String,
    pub created_unix_ms: u64,
    pub page_size: u64,
    pub root_pid: i32,
    /// Every process of the tree, parents before their children.
    pub processes: Vec<ProcessEntry>,
    /// Pipes with both ends inside the tree, with the bytes that were in them.
    pub pipes: Vec<PipeImage>,
    /// FIFOs (named pipes) the tree reads from, with the bytes queued in them.
    pub fifos: Vec<PipeImage>,
    /// Files with no path to reopen (deleted while open, memfds): their
    /// bytes are in the image.
    pub unlinked: Vec<UnlinkedFile>,
    /// Unix sockets of the tree, with the bytes queued to be read from them.
    pub unix: Vec<UnixSocket>,
    /// TCP and UDP sockets of the tree.
    pub inet: Vec<InetSocket>,
    /// Pseudo-terminals whose master the tree holds.
    pub ptys: Vec<PtyImage>,
    /// Image this one is incremental against (pages marked `PageOrigin::Parent`
    /// are read from it), as a path relative to this image's directory.
    pub parent: Option<String>,
    /// CPU features the image's register state may use (x86: XCR0 from the
    /// XSAVE header; ARM: AT_HWCAP), checked on restore.
    pub cpu_features: u64,
    pub stats: DumpStats,
    /// The pages were read while the tree ran on, not as they were at the
    /// freeze: the first pass of `checkpoint --precopy`. They are right only
    /// where the image naming this one as its parent says they did not change
    /// since, so this image is never restarted or made a core of on its own.
    pub live_pages: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessEntry {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// Number of threads (0 for a zombie).
    pub threads: u32,
    /// The session's leader is a live process outside the tree (a login
    /// shell): the restart puts the process in `cryo restart`'s session
    /// rather than recreating a session whose leader is gone.
    pub session_outside: bool,
    pub state: ProcessState,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running or sleeping: `proc-<pid>.cryo` holds it.
    Live,
    /// Exited but not yet reaped by its parent; `status` is what wait() reports
    /// (exit code << 8, or the terminating signal).
    Zombie { status: i32 },
}

/// A pipe both of whose ends the tree holds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PipeImage {
    /// Inode number of the pipe at checkpoint: its identity within the image.
    pub inode: u64,
    /// F_GETPIPE_SZ.
    pub capacity: u32,
    /// Unread bytes, in order.
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct DumpStats {
    /// How long the tree was stopped, in microseconds.
    pub frozen_us: u64,
    /// Total time of the checkpoint, in microseconds.
    pub total_us: u64,
    pub pages_written: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProcessImage {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    pub exe: String,
    pub cwd: String,
    pub root: String,
    pub cmdline: Vec<String>,
    pub creds: Creds,
    pub umask: u32,
    pub personality: u64,
    pub rlimits: Vec<Rlimit>,
    pub mm: MmState,
    pub vmas: Vec<Vma>,
    /// Pages stored, sorted by address; `file_offset`s index `pages-<pid>.img`
    /// (its raw stream, when compressed). Pages that were all zero are not
    /// stored: like untouched ones, they read as zero.
    pub pages: Vec<PageRun>,
    /// Size of `pages-<pid>.img`; a shorter file is truncated.
    pub pages_bytes: u64,
    /// CRC32 of `pages-<pid>.img`. None when the pages were left in the
    /// frozen process and sent from there in a stream (`checkpoint --kill
    /// -o -`, `migrate`), whose record of the file carries the only checksum:
    /// such an image is restarted from its stream, never from a directory.
    pub pages_crc: Option<u32>,
    pub threads: Vec<ThreadImage>,
    /// Signal sent to the parent when this process exits (normally SIGCHLD).
    pub exit_signal: i32,
    /// PR_SET_CHILD_SUBREAPER: orphaned descendants are reparented to it.
    pub child_subreaper: bool,
    /// What PR_GET_THP_DISABLE returned: 0, 1 (no transparent huge pages) or
    /// 3 (only where madvise asked for them).
    pub thp_disable: u32,
    /// mlockall(2) flags for mappings yet to come: MCL_FUTURE, with
    /// MCL_ONFAULT; 0 if none.
    pub mlockall: u32,
    /// Index i holds signal i+1.
    pub sigactions: Vec<SigAction>,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
    pub itimers: Vec<ITimer>,
    pub fds: Vec<FdImage>,
    /// Signals pending for the whole process (shared pending set).
    pub shared_pending: u64,
    /// The siginfo (raw siginfo_t, 128 bytes) of each signal queued for the
    /// whole process, oldest first.
    pub shared_pending_info: Vec<Vec<u8>>,
    /// timer_create() timers, by id.
    pub posix_timers: Vec<PosixTimer>,
    /// Write tracking left in the process for the next incremental
    /// checkpoint (not restored).
    pub tracking: Option<Tracking>,
    /// `pages-<pid>.img` is compressed: page runs' `file_offset`s are
    /// offsets into its raw stream (see `codec`).
    pub compression: Option<crate::codec::Compression>,
}

/// A POSIX timer (timer_create), as /proc/PID/timers and timer_gettime tell it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    /// SIGEV_SIGNAL, SIGEV_NONE or SIGEV_THREAD_ID (with `tid`).
    pub notify: i32,
    pub signo: i32,
    /// sigev_value: what the program gets in si_value.
    pub value: u64,
    pub tid: i32,
    /// Time left until it fires (0: disarmed), and its period.
    pub value_ns: u64,
    pub interval_ns: u64,
}

/// A userfaultfd (write-protect, async mode) that cryo left in the process:
/// pages it reports as written since this image are the ones a checkpoint
/// with this image as parent stores.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Tracking {
    /// The fd number in the process, and the inode of the userfaultfd, so a
    /// later checkpoint knows it finds the same one.
    pub fd: i32,
    pub inode: u64,
    /// The generation its scan for this image began: a later checkpoint is
    /// incremental against this image only while the process still has it.
    pub generation: u64,
    /// Address ranges whose writes it tracked from this image on.
    pub ranges: Vec<(u64, u64)>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Creds {
    /// real, effective, saved, filesystem
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct MmState {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// Raw bytes of /proc/PID/auxv.
    pub auxv: Vec<u8>,
    pub dumpable: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmaKind {
    Anon,
    File,
    Heap,
    Stack,
    Vdso,
    /// Shared memory with no path to reopen: MAP_SHARED|MAP_ANONYMOUS, SysV
    /// shm, memfd, or a deleted file. Identified by `dev` + `inode`; every
    /// process mapping the same object maps one object again on restore.
    Shmem,
    /// `[vvar]` and `[vvar_vclock]`: kernel data pages that move with the vDSO.
    Vvar,
    Vsyscall,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC bits.
    pub prot: u32,
    pub shared: bool,
    pub kind: VmaKind,
    /// File offset of `start` (file mappings).
    pub offset: u64,
    pub dev: u64,
    pub inode: u64,
    /// The name column of /proc/PID/maps: a path, `[heap]`, `[stack]`, ...
    pub name: String,
    /// Two-letter VmFlags from smaps (e.g. "gd" grows down, "dd" do not dump).
    pub vmflags: Vec<String>,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.vmflags.iter().any(|v| v == f)
    }
    /// Private anonymous memory (shared anonymous memory is `Shmem`): a
    /// page it does not have reads as zero.
    pub fn anonymous(&self) -> bool {
        matches!(self.kind, VmaKind::Anon | VmaKind::Heap | VmaKind::Stack)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOrigin {
    /// In this image's pages file at `file_offset`.
    Here,
    /// Unchanged since the parent image: look it up there.
    Parent,
    /// In this image's pages file, but only for debugging (the first page of an
    /// ELF mapping, for build-ids): the mapped file provides it on restore.
    Reference,
    /// The same as the page at this address of the process's parent (its
    /// `ppid`) in this same image: memory the two still shared since a fork.
    /// Only in anonymous memory, where the parent has anonymous memory too;
    /// if the parent's image holds no such page, it was all zero.
    Inherited,
}

impl PageOrigin {
    /// Do the page's bytes take room in this image's pages file?
    pub fn in_pages_file(self) -> bool {
        matches!(self, PageOrigin::Here | PageOrigin::Reference)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    pub vaddr: u64,
    pub npages: u64,
    pub file_offset: u64,
    pub origin: PageOrigin,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RegSet {
    /// NT_* type, as in PTRACE_GETREGSET and ELF core notes.
    pub note_type: u32,
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ThreadImage {
    pub tid: i32,
    pub comm: String,
    /// As the kernel reported them at the freeze (not yet fixed up for restart).
    pub regsets: Vec<RegSet>,
    pub sigmask: u64,
    pub pending: u64,
    /// The siginfo (raw siginfo_t, 128 bytes) of each signal queued for this
    /// thread, oldest first, then the signals cryo held while seizing it
    /// (their siginfo is gone: only si_signo is set).
    pub pending_info: Vec<Vec<u8>>,
    pub sigaltstack: SigAltStack,
    pub clear_child_tid: u64,
    pub robust_list: u64,
    pub robust_list_len: u64,
    pub rseq: Option<Rseq>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct SigAltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Rseq {
    pub addr: u64,
    pub len: u32,
    pub sig: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct ITimer {
    pub interval_us: u64,
    pub value_us: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FdImage {
    pub fd: i32,
    /// Open file description: fds with the same id, in any process of the
    /// tree, share one (offset, flags) as after dup() or fork().
    pub file_id: u32,
    pub cloexec: bool,
    /// File status flags (O_APPEND, O_NONBLOCK, access mode, ...) from fdinfo.
    pub flags: u32,
    pub pos: u64,
    pub target: FdTarget,
    /// Locks held through this fd: flock and OFD locks belong to its open
    /// file description, POSIX locks to the process.
    pub locks: Vec<FileLock>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Flock,
    Posix,
    /// Open file description lock (F_OFD_SETLK).
    Ofd,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLock {
    pub kind: LockKind,
    pub write: bool,
    pub start: u64,
    /// Bytes covered; 0 up to the end of the file (and beyond).
    pub len: u64,
}

/// A file without a path to reopen it by. Restored as one object per
/// (dev, inode) however many fds and processes hold it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UnlinkedFile {
    pub dev: u64,
    pub inode: u64,
    pub kind: UnlinkedKind,
    pub size: u64,
    pub mode: u32,
    /// File in the image holding its bytes (raw, `size` long).
    pub data: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum UnlinkedKind {
    /// A regular file deleted while open; recreated as an unlinked file
    /// (O_TMPFILE) in the same directory where it can, a memfd otherwise.
    Deleted { path: String },
    /// memfd_create(name) with its F_GET_SEALS seals.
    Memfd { name: String, seals: u32 },
}

/// Terminal settings (struct termios without the speeds, which c_cflag holds).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpollWatch {
    /// The watched fd, in the same process.
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InotifyWatch {
    pub wd: i32,
    pub path: String,
    pub mask: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum FdTarget {
    /// A regular file or directory, reopened by path.
    File { path: String, dev: u64, inode: u64, size: u64, mtime_ns: i128 },
    /// A character device that any process may open by path (/dev/null, ...).
    Device { path: String, rdev: u64 },
    /// One end of a pipe of the tree (see `Inventory::pipes`).
    Pipe { inode: u64, write: bool },
    /// A pipe, terminal or socket that led outside the checkpointed tree: on
    /// restart it is connected to `cryo restart`'s own fd `stdio` (0, 1 or 2).
    Outside { stdio: u8, what: String },
    /// The terminal the program ran on (outside the tree), with its settings:
    /// on restart it is `cryo restart`'s own fd `stdio`, and that terminal
    /// gets the settings (like criu --shell-job).
    Terminal { stdio: u8, path: String, termios: Option<Termios> },
    /// A file of `Inventory::unlinked`.
    Unlinked { dev: u64, inode: u64 },
    /// A FIFO, reopened by path; the bytes queued in it (if the tree reads
    /// it) are in `Inventory::fifos` under `inode`.
    Fifo { path: String, inode: u64 },
    EventFd { count: u64, semaphore: bool },
    /// Clock, time left until it fires, period, expirations not yet read.
    /// `realtime_at_ns`: a CLOCK_REALTIME(_ALARM) timer set for a time of
    /// day (TFD_TIMER_ABSTIME), the time it fires (ns since the epoch),
    /// with `cancel_on_set` (TFD_TIMER_CANCEL_ON_SET).
    TimerFd { clock: i32, value_ns: u64, interval_ns: u64, ticks: u64, realtime_at_ns: Option<u64>, cancel_on_set: bool },
    SignalFd { mask: u64 },
    /// Restored after every other fd of the process, which it may watch.
    Epoll { watches: Vec<EpollWatch> },
    Inotify { watches: Vec<InotifyWatch> },
    /// A socket of `Inventory::unix`.
    Unix { inode: u64 },
    /// A socket of `Inventory::inet`.
    Inet { inode: u64 },
    /// The master (/dev/ptmx) or slave (/dev/pts/N) side of `Inventory::ptys[index]`.
    PtyMaster { index: u32 },
    PtySlave { index: u32 },
    /// A pidfd of process `pid` of the tree (as the tree sees it), made
    /// again with pidfd_open; its flags (PIDFD_NONBLOCK, PIDFD_THREAD) are
    /// the fd's.
    Pidfd { pid: i32 },
    Netlink(NetlinkSocket),
}

/// A netlink socket, made again with its protocol and type, bound to its
/// old port id (or another one where that is taken), in its multicast
/// groups, connected where it was, with its options.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NetlinkSocket {
    pub protocol: i32,
    pub kind: i32,
    /// 0: never bound.
    pub portid: u32,
    pub groups: Vec<u32>,
    pub dst_portid: u32,
    pub dst_group: u32,
    /// NETLINK_* options (SOL_NETLINK) that were on.
    pub options: Vec<i32>,
    pub rcvbuf: i32,
    pub sndbuf: i32,
}

/// A pseudo-terminal of the tree. Recreated as a new pair (its number in
/// /dev/pts may differ) with the slave's settings and window size.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PtyImage {
    /// Its number in /dev/pts at the checkpoint.
    pub index: u32,
    pub termios: Termios,
    /// rows, columns, x pixels, y pixels.
    pub winsize: [u16; 4],
    /// The session it is the controlling terminal of (a pid of the tree,
    /// the session's leader), and that session's foreground process group.
    pub session: Option<i32>,
    pub foreground: i32,
}

/// A TCP or UDP socket. Addresses are written as `std::net::SocketAddr`
/// prints them ("127.0.0.1:6379", "[::1]:80").
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct InetSocket {
    pub inode: u64,
    /// AF_INET or AF_INET6.
    pub family: i32,
    /// SOCK_STREAM (TCP) or SOCK_DGRAM (UDP).
    pub kind: i32,
    pub role: InetRole,
    /// Bound address, if any.
    pub local: Option<String>,
    /// Bytes received and not yet read (TCP).
    pub queued: Vec<u8>,
    /// Datagrams waiting to be read (UDP) that a socket of the tree sent:
    /// sent again from it at restart.
    pub datagrams: Vec<Datagram>,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub keepalive: bool,
    pub nodelay: bool,
    pub v6only: bool,
    /// The program shut its sending side down (shutdown SHUT_WR, or close
    /// of another fd after its peer closed: FIN_WAIT, LAST_ACK, CLOSING).
    pub shut_wr: bool,
    /// Other options the program set (see [`SockOpt`]).
    pub options: Vec<SockOpt>,
}

/// A socket option whose value differed from a new socket's of the same
/// family, type and protocol: one the program set. `level` and `name` are
/// the numbers of setsockopt(2).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SockOpt {
    pub level: i32,
    pub name: i32,
    pub value: SockOptValue,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum SockOptValue {
    Int(i32),
    /// A `struct timeval` (SO_RCVTIMEO, SO_SNDTIMEO), in microseconds.
    Micros(i64),
    /// `struct linger`.
    Linger { on: bool, seconds: i32 },
    /// A name (TCP_CONGESTION, SO_BINDTODEVICE), without its NUL.
    Text(Vec<u8>),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Datagram {
    /// The inode of the tree's socket it came from.
    pub sender: u64,
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum InetRole {
    /// A listening TCP socket with nothing waiting to be accepted.
    Listen { backlog: u32 },
    /// One end of a TCP connection whose other end the tree holds too;
    /// `accepted` is the end that came from accept() (or that plays it at
    /// restart).
    Pair { peer: u64, accepted: bool },
    /// A TCP connection to outside the tree, checkpointed with --tcp-close:
    /// restored as a connection that was reset.
    Reset,
    /// A TCP connection to outside the tree whose peer had closed its side
    /// (CLOSE_WAIT), checkpointed with --tcp-close: restored as one that
    /// gives the unread bytes, then end of file.
    PeerClosed,
    /// A UDP socket connected to `peer`.
    Connected { peer: String },
    /// Bound or not, neither listening nor connected.
    Unconnected,
}

/// A Unix socket as sock_diag describes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UnixSocket {
    pub inode: u64,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub kind: i32,
    pub role: UnixRole,
    /// The address it is bound to: a path, or an abstract name starting with
    /// a NUL byte.
    pub name: Option<Vec<u8>>,
    /// What waits to be read from it: one entry per datagram or record
    /// (SOCK_DGRAM, SOCK_SEQPACKET), byte runs for a stream.
    pub queued: Vec<Vec<u8>>,
    /// SHUT_RD (1) / SHUT_WR (2) bits of shutdown() calls on it.
    pub shutdown: u8,
    /// Options the program set (see [`SockOpt`]).
    pub options: Vec<SockOpt>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum UnixRole {
    /// listen() was called; no connection waited to be accepted.
    Listen { backlog: u32 },
    /// Connected to another socket of the tree (socketpair, or connect and
    /// accept): restored as a socketpair.
    Pair { peer: u64 },
    /// A datagram socket connected to an address outside the tree (syslog's
    /// /dev/log): connected again by name.
    ConnectedTo { peer_name: Vec<u8> },
    /// A stream connected to outside the tree, checkpointed with
    /// --tcp-close: restored as one whose peer closed, after the bytes that
    /// were waiting in it.
    PeerClosed,
    /// Neither listening nor connected.
    Unconnected,
}

#[cfg(test)]
impl ProcessImage {
    /// A process image with nothing in it but what a test sets.
    pub(crate) fn empty() -> ProcessImage {
        ProcessImage {
            pid: 1,
            ppid: 0,
            pgid: 1,
            sid: 1,
            comm: String::new(),
            exe: String::new(),
            cwd: String::new(),
            root: String::new(),
            cmdline: Vec::new(),
            creds: Default::default(),
            umask: 0,
            personality: 0,
            rlimits: Vec::new(),
            mm: Default::default(),
            vmas: Vec::new(),
            pages: Vec::new(),
            pages_bytes: 0,
            pages_crc: Some(0),
            threads: Vec::new(),
            exit_signal: 17,
            child_subreaper: false,
            thp_disable: 0,
            mlockall: 0,
            sigactions: Vec::new(),
            itimers: Vec::new(),
            fds: Vec::new(),
            shared_pending: 0,
            shared_pending_info: Vec::new(),
            posix_timers: Vec::new(),
            tracking: None,
            compression: None,
        }
    }
}
