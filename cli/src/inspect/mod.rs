//! `cryo inspect`: what an image holds, for people and (with --json) scripts.
//!
//! Everything is decoded offline from the image, plus the ELF files the
//! processes had mapped (for symbols and unwind tables). The JSON layout is
//! documented in docs/inspect-json.md; within format `cryo-inspect-1`
//! fields are only ever added.

mod modules;
mod stack;

use crate::snapshot::ProcessMemory;
use anyhow::{Context, Result};
use cryo_image::{FdTarget, ImageReader, PageOrigin, ProcessImage, ProcessState, SockOptValue, ThreadImage};
use cryo_tracer::arch::{word, Arch, Native};
use modules::Modules;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub const FORMAT: &str = "cryo-inspect-1";

#[derive(Serialize)]
struct Report {
    format: &'static str,
    cryo_version: String,
    arch: String,
    kernel: String,
    hostname: String,
    created_unix_ms: u64,
    page_size: u64,
    root_pid: i32,
    parent_image: Option<String>,
    /// The pages were read while the tree ran (a pre-copy's first pass).
    live_pages: bool,
    frozen_us: u64,
    total_us: u64,
    tree: Vec<TreeEntry>,
    /// Pipes with both ends inside the tree.
    pipes: Vec<PipeReport>,
    /// Every live process (zombies have nothing but their tree entry).
    processes: Vec<ProcessReport>,
}

/// One process of the tree, in the image's order (parents before children).
#[derive(Serialize)]
struct TreeEntry {
    pid: i32,
    ppid: i32,
    pgid: i32,
    sid: i32,
    comm: String,
    threads: u32,
    /// "live", or "zombie" (exited, not yet reaped: no memory or threads).
    state: &'static str,
    /// For a zombie: what wait() will report.
    wait_status: Option<i32>,
    /// Pids of its children in the image.
    children: Vec<i32>,
}

#[derive(Serialize)]
struct PipeReport {
    inode: u64,
    capacity: u32,
    queued_bytes: u64,
}

#[derive(Serialize)]
struct ProcessReport {
    pid: i32,
    ppid: i32,
    pgid: i32,
    sid: i32,
    comm: String,
    exe: String,
    cwd: String,
    root: String,
    cmdline: Vec<String>,
    uid: u32,
    gid: u32,
    /// "blocked": every thread was inside a system call; "running": some
    /// thread was executing its own code.
    state: &'static str,
    threads: Vec<ThreadReport>,
    vmas: Vec<VmaReport>,
    mapped_bytes: u64,
    pages_stored: u64,
    /// Pages the image leaves to the parent process's copy (shared since a fork).
    pages_inherited: u64,
    page_runs: Vec<RunReport>,
    fds: Vec<FdReport>,
    signals: SignalReport,
    modules: Vec<ModuleReport>,
}

#[derive(Serialize)]
struct ThreadReport {
    tid: i32,
    comm: String,
    pc: u64,
    sp: u64,
    /// "syscall" or "user".
    state: &'static str,
    syscall: Option<SyscallReport>,
    instruction: InsnReport,
    registers: BTreeMap<String, u64>,
    sigmask: u64,
    blocked: Vec<String>,
    pending: u64,
    pending_names: Vec<String>,
    sigaltstack: AltStackReport,
    stack: Vec<FrameReport>,
    stack_end: String,
}

#[derive(Serialize)]
struct SyscallReport {
    nr: u64,
    name: Option<&'static str>,
    /// The return register at the freeze: -512..-516 (ERESTART*) while the
    /// call was still waiting.
    ret: i64,
}

#[derive(Serialize)]
struct InsnReport {
    address: u64,
    /// Hex of the bytes read at `address` (up to the longest instruction).
    bytes: String,
    /// Decoded text (Intel syntax on x86_64); null where no decoder exists or
    /// the bytes are no valid instruction.
    text: Option<String>,
    length: Option<usize>,
}

#[derive(Serialize)]
struct AltStackReport {
    sp: u64,
    size: u64,
    flags: i32,
}

#[derive(Serialize)]
struct FrameReport {
    pc: u64,
    sp: u64,
    how: stack::How,
    module: Option<String>,
    symbol: Option<String>,
    offset: Option<u64>,
}

#[derive(Serialize)]
struct VmaReport {
    start: u64,
    end: u64,
    size: u64,
    prot: u32,
    perms: String,
    shared: bool,
    kind: String,
    name: String,
    offset: u64,
    stored_pages: u64,
}

#[derive(Serialize)]
struct RunReport {
    vaddr: u64,
    npages: u64,
    file_offset: u64,
    origin: String,
}

#[derive(Serialize)]
struct FdReport {
    fd: i32,
    /// "file", "device", "pipe" (both ends inside the tree) or "outside" (a
    /// pipe, terminal or socket leading out of the tree).
    kind: &'static str,
    path: Option<String>,
    pipe: Option<PipeEnd>,
    what: String,
    pos: u64,
    flags: u32,
    access: &'static str,
    cloexec: bool,
    /// A socket's options that the program set ("SO_RCVTIMEO=2.5s TCP_KEEPIDLE=60").
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<String>,
}

#[derive(Serialize)]
struct PipeEnd {
    /// The pipe's entry in the image's `pipes`.
    inode: u64,
    /// "read" or "write".
    end: &'static str,
}

#[derive(Serialize)]
struct SignalReport {
    shared_pending: u64,
    shared_pending_names: Vec<String>,
    /// Signals whose action is not the default.
    actions: Vec<ActionReport>,
}

#[derive(Serialize)]
struct ActionReport {
    signo: u32,
    name: String,
    /// "ignore" or "handler".
    action: &'static str,
    handler: u64,
    handler_symbol: Option<String>,
    flags: u64,
    flag_names: Vec<&'static str>,
    mask: u64,
}

#[derive(Serialize)]
struct ModuleReport {
    name: String,
    bias: u64,
    build_id: Option<String>,
    debug_file: Option<String>,
    symbols: bool,
    unwind_tables: bool,
    problem: Option<String>,
}

pub fn run(dir: &Path, as_json: bool) -> Result<()> {
    let img = ImageReader::open(dir)?;
    let inv = &img.inventory;
    crate::snapshot::check_arch(dir, inv)?;
    let mut processes = Vec::new();
    for e in inv.processes.iter().filter(|e| e.state == ProcessState::Live) {
        let p = img.read_process(e.pid).with_context(|| format!("reading process {} of image {}", e.pid, dir.display()))?;
        processes.push(process_report(&img, &p)?);
    }
    let links: Vec<(i32, i32)> = inv.processes.iter().map(|e| (e.pid, e.ppid)).collect();
    let tree = inv
        .processes
        .iter()
        .map(|e| TreeEntry {
            pid: e.pid,
            ppid: e.ppid,
            pgid: e.pgid,
            sid: e.sid,
            comm: e.comm.clone(),
            threads: e.threads,
            state: match e.state {
                ProcessState::Live => "live",
                ProcessState::Zombie { .. } => "zombie",
            },
            wait_status: match e.state {
                ProcessState::Live => None,
                ProcessState::Zombie { status } => Some(status),
            },
            children: children(&links, e.pid),
        })
        .collect();
    let report = Report {
        format: FORMAT,
        cryo_version: inv.cryo_version.clone(),
        arch: inv.arch.clone(),
        kernel: inv.kernel.clone(),
        hostname: inv.hostname.clone(),
        created_unix_ms: inv.created_unix_ms,
        page_size: inv.page_size,
        root_pid: inv.root_pid,
        parent_image: inv.parent.clone(),
        live_pages: inv.live_pages,
        frozen_us: inv.stats.frozen_us,
        total_us: inv.stats.total_us,
        tree,
        pipes: inv.pipes.iter().map(|p| PipeReport { inode: p.inode, capacity: p.capacity, queued_bytes: p.data.len() as u64 }).collect(),
        processes,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(dir, &report));
    }
    Ok(())
}

/// Children of `pid` among (pid, ppid) pairs, in image order.
fn children(links: &[(i32, i32)], pid: i32) -> Vec<i32> {
    links.iter().filter(|(c, pp)| *pp == pid && *c != pid).map(|(c, _)| *c).collect()
}

/// Processes whose parent is not in the image: where the printed tree starts.
fn roots(links: &[(i32, i32)]) -> Vec<i32> {
    links.iter().filter(|(p, pp)| !links.iter().any(|(q, _)| q == pp && q != p)).map(|(p, _)| *p).collect()
}

fn process_report(img: &ImageReader, p: &ProcessImage) -> Result<ProcessReport> {
    let mem = ProcessMemory::open(img, p)?;
    let mut mods = Modules::new();
    let threads: Vec<ThreadReport> = p.threads.iter().map(|t| thread_report(t, &mem, p, &mut mods)).collect();
    let vmas = p
        .vmas
        .iter()
        .map(|v| VmaReport {
            start: v.start,
            end: v.end,
            size: v.len(),
            prot: v.prot,
            perms: perms(v.prot, v.shared),
            shared: v.shared,
            kind: format!("{:?}", v.kind),
            name: v.name.clone(),
            offset: v.offset,
            stored_pages: p
                .pages
                .iter()
                .filter(|r| r.origin == PageOrigin::Here && r.vaddr >= v.start && r.vaddr < v.end)
                .map(|r| r.npages)
                .sum(),
        })
        .collect();
    let signals = SignalReport {
        shared_pending: p.shared_pending,
        shared_pending_names: signal_names(p.shared_pending),
        actions: p
            .sigactions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.handler != 0)
            .map(|(i, a)| ActionReport {
                signo: i as u32 + 1,
                name: signal_name(i as u32 + 1),
                action: if a.handler == 1 { "ignore" } else { "handler" },
                handler: a.handler,
                handler_symbol: (a.handler > 1)
                    .then(|| mods.at(&mem, &p.vmas, a.handler).and_then(|m| m.symbol(a.handler)))
                    .flatten()
                    .map(|s| if s.offset == 0 { s.name } else { format!("{}+{:#x}", s.name, s.offset) }),
                flags: a.flags,
                flag_names: sa_flag_names(a.flags),
                mask: a.mask,
            })
            .collect(),
    };
    let fds = p
        .fds
        .iter()
        .map(|f| {
            let (kind, path, pipe) = match &f.target {
                FdTarget::File { path, .. } => ("file", Some(path.clone()), None),
                FdTarget::Device { path, .. } => ("device", Some(path.clone()), None),
                FdTarget::Pipe { inode, write } => {
                    ("pipe", None, Some(PipeEnd { inode: *inode, end: if *write { "write" } else { "read" } }))
                }
                FdTarget::Outside { .. } => ("outside", None, None),
                FdTarget::Terminal { path, .. } => ("terminal", Some(path.clone()), None),
                FdTarget::Unlinked { .. } => ("unlinked", None, None),
                FdTarget::Fifo { path, .. } => ("fifo", Some(path.clone()), None),
                FdTarget::EventFd { .. } => ("eventfd", None, None),
                FdTarget::TimerFd { .. } => ("timerfd", None, None),
                FdTarget::SignalFd { .. } => ("signalfd", None, None),
                FdTarget::Epoll { .. } => ("epoll", None, None),
                FdTarget::Inotify { .. } => ("inotify", None, None),
                FdTarget::Unix { .. } => ("unix", None, None),
                FdTarget::Inet { .. } => ("inet", None, None),
                FdTarget::PtyMaster { .. } => ("pty-master", None, None),
                FdTarget::PtySlave { .. } => ("pty-slave", None, None),
                FdTarget::Pidfd { .. } => ("pidfd", None, None),
                FdTarget::Netlink(_) => ("netlink", None, None),
            };
            FdReport {
                fd: f.fd,
                kind,
                path,
                pipe,
                what: fd_desc(&f.target),
                pos: f.pos,
                flags: f.flags,
                access: match f.flags & libc::O_ACCMODE as u32 {
                    0 => "read",
                    1 => "write",
                    _ => "read-write",
                },
                cloexec: f.cloexec,
                options: socket_options(&img.inventory, &f.target),
            }
        })
        .collect();
    let modules = mods
        .loaded()
        .into_iter()
        .map(|m| ModuleReport {
            name: m.name.clone(),
            bias: m.bias,
            build_id: m.build_id.clone(),
            debug_file: m.debug_file.clone(),
            symbols: m.has_symbols(),
            unwind_tables: m.has_unwind(),
            problem: m.problem.clone(),
        })
        .collect();
    Ok(ProcessReport {
        pid: p.pid,
        ppid: p.ppid,
        pgid: p.pgid,
        sid: p.sid,
        comm: p.comm.clone(),
        exe: p.exe.clone(),
        cwd: p.cwd.clone(),
        root: p.root.clone(),
        cmdline: p.cmdline.clone(),
        uid: p.creds.uids[0],
        gid: p.creds.gids[0],
        state: if threads.iter().all(|t| t.syscall.is_some()) { "blocked" } else { "running" },
        threads,
        vmas,
        mapped_bytes: p.vmas.iter().map(|v| v.len()).sum(),
        pages_stored: p.pages.iter().filter(|r| r.origin == PageOrigin::Here).map(|r| r.npages).sum(),
        pages_inherited: p.pages.iter().filter(|r| r.origin == PageOrigin::Inherited).map(|r| r.npages).sum(),
        page_runs: p
            .pages
            .iter()
            .map(|r| RunReport { vaddr: r.vaddr, npages: r.npages, file_offset: r.file_offset, origin: format!("{:?}", r.origin) })
            .collect(),
        fds,
        signals,
        modules,
    })
}

fn thread_report(t: &ThreadImage, mem: &ProcessMemory, p: &ProcessImage, mods: &mut Modules) -> ThreadReport {
    // Images are checksummed, so a short register set means a cryo bug;
    // report the thread without registers rather than fail the whole listing.
    let empty = vec![0u8; Native::GP_SIZE];
    let gp = t.regsets.first().map(|r| &r.data).filter(|d| d.len() >= Native::GP_SIZE).unwrap_or(&empty);
    let pc = Native::pc(gp);
    let w = word();
    let registers = Native::GP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) * w <= gp.len())
        .map(|(i, n)| {
            let mut b = [0u8; 8];
            b[..w].copy_from_slice(&gp[i * w..(i + 1) * w]);
            (n.to_string(), u64::from_le_bytes(b))
        })
        .collect();
    let syscall =
        Native::interrupted_syscall(gp).map(|(nr, ret)| SyscallReport { nr, name: Native::syscall_name(nr), ret });
    let (frames, stack_end) = stack::walk(gp, mem, &p.vmas, mods);
    ThreadReport {
        tid: t.tid,
        comm: t.comm.clone(),
        pc,
        sp: Native::sp(gp),
        state: if syscall.is_some() { "syscall" } else { "user" },
        syscall,
        instruction: instruction(mem, pc),
        registers,
        sigmask: t.sigmask,
        blocked: signal_names(t.sigmask),
        pending: t.pending,
        pending_names: signal_names(t.pending),
        sigaltstack: AltStackReport { sp: t.sigaltstack.sp, size: t.sigaltstack.size, flags: t.sigaltstack.flags },
        stack: frames
            .into_iter()
            .map(|f| FrameReport {
                pc: f.pc,
                sp: f.sp,
                how: f.how,
                module: f.module,
                offset: f.symbol.as_ref().map(|s| s.offset),
                symbol: f.symbol.map(|s| s.name),
            })
            .collect(),
        stack_end,
    }
}

/// The instruction at `pc`. Fewer bytes are read where the code ends early
/// (an instruction at the very end of a mapping).
fn instruction(mem: &ProcessMemory, pc: u64) -> InsnReport {
    let mut bytes = vec![0u8; Native::MAX_INSN_LEN];
    let mut n = bytes.len();
    while n > 0 && mem.read(pc, &mut bytes[..n]).is_err() {
        n -= 1;
    }
    bytes.truncate(n);
    let mut text = String::new();
    let length = if n > 0 { Native::disassemble(&bytes, pc, &mut text) } else { None };
    if let Some(l) = length {
        bytes.truncate(l);
    }
    InsnReport { address: pc, bytes: hex(&bytes), text: length.map(|_| text), length }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn perms(prot: u32, shared: bool) -> String {
    let mut s = String::new();
    s.push(if prot & libc::PROT_READ as u32 != 0 { 'r' } else { '-' });
    s.push(if prot & libc::PROT_WRITE as u32 != 0 { 'w' } else { '-' });
    s.push(if prot & libc::PROT_EXEC as u32 != 0 { 'x' } else { '-' });
    s.push(if shared { 's' } else { 'p' });
    s
}

fn fd_desc(t: &FdTarget) -> String {
    match t {
        FdTarget::File { path, .. } => format!("file {path}"),
        FdTarget::Device { path, .. } => format!("device {path}"),
        FdTarget::Pipe { inode, write } => format!("pipe {inode} ({} end)", if *write { "write" } else { "read" }),
        FdTarget::Outside { stdio, what } => format!("{what} (restored as cryo's fd {stdio})"),
        FdTarget::Terminal { stdio, path, termios } => {
            format!("terminal {path} (restored as cryo's fd {stdio}{})", if termios.is_some() { ", with its settings" } else { "" })
        }
        FdTarget::Unlinked { dev, inode } => format!("file without a path (deleted or memfd), inode {inode} on {}:{}", dev >> 32, dev & 0xffff_ffff),
        FdTarget::Fifo { path, .. } => format!("fifo {path}"),
        FdTarget::EventFd { count, semaphore } => format!("eventfd count {count}{}", if *semaphore { " (semaphore)" } else { "" }),
        FdTarget::TimerFd { clock, value_ns, interval_ns, ticks, realtime_at_ns, .. } => {
            let when = match realtime_at_ns {
                Some(t) => format!("at {}.{:09} s since the epoch", t / 1_000_000_000, t % 1_000_000_000),
                None => format!("in {value_ns} ns"),
            };
            format!("timerfd clock {clock}, fires {when}, every {interval_ns} ns, {ticks} unread")
        }
        FdTarget::SignalFd { mask } => format!("signalfd mask {mask:#x}"),
        FdTarget::Epoll { watches } => {
            let fds: Vec<String> = watches.iter().map(|w| format!("{}:{:#x}", w.fd, w.events)).collect();
            format!("epoll watching {}", fds.join(" "))
        }
        FdTarget::Inotify { watches } => {
            let paths: Vec<String> = watches.iter().map(|w| format!("{} {}", w.wd, w.path)).collect();
            format!("inotify watching {}", paths.join(", "))
        }
        FdTarget::Unix { inode } => format!("unix socket {inode}"),
        FdTarget::Inet { inode } => format!("TCP/UDP socket {inode}"),
        FdTarget::PtyMaster { index } => format!("pty master of /dev/pts/{index}"),
        FdTarget::PtySlave { index } => format!("pty /dev/pts/{index} (its master is in the tree)"),
        FdTarget::Pidfd { pid } => format!("pidfd of process {pid}"),
        FdTarget::Netlink(n) => {
            let groups: Vec<String> = n.groups.iter().map(u32::to_string).collect();
            format!("netlink socket, protocol {}, port id {}, groups [{}]", n.protocol, n.portid, groups.join(" "))
        }
    }
}

fn socket_options(inv: &cryo_image::Inventory, t: &FdTarget) -> Option<String> {
    let opts = match t {
        FdTarget::Unix { inode } => &inv.unix.iter().find(|s| s.inode == *inode)?.options,
        FdTarget::Inet { inode } => &inv.inet.iter().find(|s| s.inode == *inode)?.options,
        _ => return None,
    };
    let shown: Vec<String> = opts
        .iter()
        .map(|o| {
            let v = match &o.value {
                SockOptValue::Int(v) => v.to_string(),
                SockOptValue::Micros(us) => format!("{}s", *us as f64 / 1e6),
                SockOptValue::Linger { on, seconds } => if *on { format!("on,{seconds}s") } else { "off".into() },
                SockOptValue::Text(t) => String::from_utf8_lossy(t).into_owned(),
            };
            format!("{}={v}", cryo_tracer::sockopts::name(o.level, o.name))
        })
        .collect();
    (!shown.is_empty()).then(|| shown.join(" "))
}

/// Linux's signal numbers are the same on x86_64, aarch64 and ARMv7.
fn signal_name(n: u32) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV",
        "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN",
        "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];
    match n {
        1..=31 => NAMES[n as usize - 1].to_string(),
        _ => format!("SIGRTMIN+{}", n.saturating_sub(32)),
    }
}

fn signal_names(set: u64) -> Vec<String> {
    (0..64).filter(|b| set & (1u64 << b) != 0).map(|b| signal_name(b + 1)).collect()
}

fn sa_flag_names(flags: u64) -> Vec<&'static str> {
    const FLAGS: [(u64, &str); 8] = [
        (0x1, "SA_NOCLDSTOP"),
        (0x2, "SA_NOCLDWAIT"),
        (0x4, "SA_SIGINFO"),
        (0x0400_0000, "SA_RESTORER"),
        (0x0800_0000, "SA_ONSTACK"),
        (0x1000_0000, "SA_RESTART"),
        (0x4000_0000, "SA_NODEFER"),
        (0x8000_0000, "SA_RESETHAND"),
    ];
    FLAGS.iter().filter(|(b, _)| flags & b != 0).map(|(_, n)| *n).collect()
}

fn kib(bytes: u64) -> String {
    match bytes {
        b if b >= 10 << 30 => format!("{} GiB", b >> 30),
        b if b >= 10 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b.div_ceil(1024)),
    }
}

fn text(dir: &Path, r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "image {} (cryo {}, {} on {}, kernel {})", dir.display(), r.cryo_version, r.arch, r.hostname, r.kernel);
    let _ = writeln!(
        o,
        "root pid {}, frozen {:.1} ms of {:.1} ms{}{}",
        r.root_pid,
        r.frozen_us as f64 / 1000.0,
        r.total_us as f64 / 1000.0,
        r.parent_image.as_ref().map(|p| format!(", incremental on {p}")).unwrap_or_default(),
        if r.live_pages { "; pages read while the tree ran (the first pass of a --precopy checkpoint): not a checkpoint of one moment" } else { "" }
    );
    let _ = writeln!(o, "\nprocess tree:");
    fn node(o: &mut String, r: &Report, pid: i32, depth: usize) {
        let Some(e) = r.tree.iter().find(|e| e.pid == pid) else { return };
        let what = match (r.processes.iter().find(|p| p.pid == pid), e.wait_status) {
            (_, Some(status)) => format!("zombie, wait status {status:#x}"),
            (Some(p), None) => format!(
                "{}, {} thread{}, pgid {}, sid {}: {}",
                p.state,
                p.threads.len(),
                if p.threads.len() == 1 { "" } else { "s" },
                p.pgid,
                p.sid,
                p.cmdline.join(" ")
            ),
            (None, None) => "not in the image".to_string(),
        };
        let _ = writeln!(o, "  {:indent$}{} {} ({what})", "", e.pid, e.comm, indent = depth * 2);
        // Depth bounds a pid cycle in a damaged image.
        if depth < r.tree.len() {
            for c in &e.children {
                node(o, r, *c, depth + 1);
            }
        }
    }
    let links: Vec<(i32, i32)> = r.tree.iter().map(|e| (e.pid, e.ppid)).collect();
    for pid in roots(&links) {
        node(&mut o, r, pid, 0);
    }
    if !r.pipes.is_empty() {
        let _ = writeln!(o, "\npipes inside the tree:");
        for p in &r.pipes {
            let _ = writeln!(o, "  pipe {}: {} bytes queued, capacity {}", p.inode, p.queued_bytes, p.capacity);
        }
    }
    for p in &r.processes {
        let _ = writeln!(o, "\nprocess {} ({}) ppid {} pgid {} sid {} uid {} gid {}: {}", p.pid, p.comm, p.ppid, p.pgid, p.sid, p.uid, p.gid, p.state);
        let _ = writeln!(o, "  exe {}\n  cwd {}", p.exe, p.cwd);
        for t in &p.threads {
            let state = match &t.syscall {
                Some(s) => format!("in syscall {} ({}), returning {}", s.name.unwrap_or("?"), s.nr, s.ret),
                None => "running user code".to_string(),
            };
            let _ = writeln!(o, "\n  thread {} ({}): {state}", t.tid, t.comm);
            let _ = writeln!(
                o,
                "    pc {:#x}: {:<30} {}",
                t.pc,
                t.instruction.bytes,
                t.instruction.text.as_deref().unwrap_or("(not decoded)")
            );
            let mut line = String::new();
            for (i, name) in Native::GP_NAMES.iter().enumerate() {
                if let Some(v) = t.registers.get(*name) {
                    let _ = write!(line, " {name:>8} {v:#018x}");
                    if i % 4 == 3 {
                        let _ = writeln!(o, "   {line}");
                        line.clear();
                    }
                }
            }
            if !line.is_empty() {
                let _ = writeln!(o, "   {line}");
            }
            if !t.blocked.is_empty() || !t.pending_names.is_empty() {
                let _ = writeln!(o, "    signals blocked: {}; pending: {}", list(&t.blocked), list(&t.pending_names));
            }
            for (i, f) in t.stack.iter().enumerate() {
                let sym = match (&f.symbol, f.offset) {
                    (Some(s), Some(0)) => s.clone(),
                    (Some(s), Some(off)) => format!("{s}+{off:#x}"),
                    _ => "??".to_string(),
                };
                let how = match f.how {
                    stack::How::FramePointer => "  [frame pointer]",
                    stack::How::Scan => "  [stack scan: may be stale]",
                    _ => "",
                };
                let module = f.module.as_deref().map(|m| m.rsplit('/').next().unwrap_or(m)).unwrap_or("?");
                let _ = writeln!(o, "    #{i:<2} {:#018x} {sym} ({module}){how}", f.pc);
            }
            let _ = writeln!(o, "    ({})", t.stack_end);
        }
        let inherited = if p.pages_inherited > 0 { format!(", {} the parent's (shared since a fork)", p.pages_inherited) } else { String::new() };
        let _ = writeln!(o, "\n  memory: {} in {} areas, {} pages stored{inherited}", kib(p.mapped_bytes), p.vmas.len(), p.pages_stored);
        for v in &p.vmas {
            let _ = writeln!(o, "    {:#014x}-{:#014x} {:>9} {} {:>9} stored  {}", v.start, v.end, kib(v.size), v.perms, kib(v.stored_pages * r.page_size), v.name);
        }
        let _ = writeln!(o, "\n  fds:");
        for f in &p.fds {
            let _ = writeln!(o, "    {:>3} {:<10} pos {:<8} {}{}", f.fd, f.access, f.pos, f.what, if f.cloexec { " (cloexec)" } else { "" });
            if let Some(opts) = &f.options {
                let _ = writeln!(o, "        options {opts}");
            }
        }
        let _ = writeln!(o, "\n  signals: process-wide pending: {}", list(&p.signals.shared_pending_names));
        for a in &p.signals.actions {
            let what = match a.action {
                "ignore" => "ignored".to_string(),
                _ => format!("handler {:#x}{}", a.handler, a.handler_symbol.as_ref().map(|s| format!(" {s}")).unwrap_or_default()),
            };
            let _ = writeln!(o, "    {:<10} {what} {} mask {:#x}", a.name, a.flag_names.join("|"), a.mask);
        }
        let _ = writeln!(o, "\n  modules:");
        for m in &p.modules {
            let _ = writeln!(
                o,
                "    {} build-id {}{}{}",
                m.name,
                m.build_id.as_deref().unwrap_or("none"),
                m.debug_file.as_ref().map(|d| format!(", symbols from {d}")).unwrap_or_default(),
                m.problem.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
            );
        }
    }
    o
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_and_roots_of_a_tree() {
        let links = [(10, 1), (11, 10), (13, 11), (12, 10), (14, 11), (20, 2)];
        assert_eq!(roots(&links), [10, 20]);
        assert_eq!(children(&links, 10), [11, 12]);
        assert_eq!(children(&links, 11), [13, 14]);
        assert!(children(&links, 13).is_empty());
        // Each the other's parent (a damaged image): no root.
        assert!(roots(&[(7, 8), (8, 7)]).is_empty());
    }

    #[test]
    fn signal_names_follow_linux_numbering() {
        assert_eq!(signal_names((1 << 9) | (1 << 11) | (1 << 33)), ["SIGUSR1", "SIGUSR2", "SIGRTMIN+2"]);
        assert_eq!(sa_flag_names(0x1400_0004), ["SA_SIGINFO", "SA_RESTORER", "SA_RESTART"]);
    }
}
