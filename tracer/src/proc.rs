//! Readers for /proc/PID files: what the tracer takes without the parasite.

use crate::{Result, TracerError};
use cryo_image::{Vma, VmaKind};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;

fn read(path: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|e| TracerError::proc(path, e))
}

fn parse_err(path: &str, what: impl Into<String>) -> TracerError {
    TracerError::Parse { path: path.to_string(), what: what.into() }
}

/// The fields of /proc/PID/status cryo uses.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub name: String,
    pub state: char,
    pub tgid: i32,
    pub ppid: i32,
    pub tracer_pid: i32,
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    /// Signals pending for this thread / for the whole process.
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    pub seccomp: u32,
    /// The ids in every pid namespace from the reader's down to the
    /// process's own (NSpid, NSpgid, NSsid): the last is how it sees itself.
    pub ns_pid: Vec<i32>,
    pub ns_pgid: Vec<i32>,
    pub ns_sid: Vec<i32>,
    /// Locked memory (VmLck), kB.
    pub locked_kb: u64,
}

pub fn status(pid: i32) -> Result<Status> {
    let path = format!("/proc/{pid}/status");
    let text = read(&path)?;
    let mut s = Status::default();
    let ids = |v: &str| -> [u32; 4] {
        let mut out = [0u32; 4];
        for (o, f) in out.iter_mut().zip(v.split_whitespace()) {
            *o = f.parse().unwrap_or(0);
        }
        out
    };
    let hex = |v: &str| u64::from_str_radix(v.trim(), 16).unwrap_or(0);
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        match k {
            "Name" => s.name = v.to_string(),
            "VmLck" => s.locked_kb = v.trim_end_matches("kB").trim().parse().unwrap_or(0),
            "State" => s.state = v.chars().next().unwrap_or('?'),
            "Tgid" => s.tgid = v.parse().unwrap_or(0),
            "PPid" => s.ppid = v.parse().unwrap_or(0),
            "NSpid" => s.ns_pid = v.split_whitespace().filter_map(|x| x.parse().ok()).collect(),
            "NSpgid" => s.ns_pgid = v.split_whitespace().filter_map(|x| x.parse().ok()).collect(),
            "NSsid" => s.ns_sid = v.split_whitespace().filter_map(|x| x.parse().ok()).collect(),
            "TracerPid" => s.tracer_pid = v.parse().unwrap_or(0),
            "Uid" => s.uids = ids(v),
            "Gid" => s.gids = ids(v),
            "Groups" => s.groups = v.split_whitespace().filter_map(|g| g.parse().ok()).collect(),
            "SigPnd" => s.sig_pnd = hex(v),
            "ShdPnd" => s.shd_pnd = hex(v),
            "CapInh" => s.cap_inh = hex(v),
            "CapPrm" => s.cap_prm = hex(v),
            "CapEff" => s.cap_eff = hex(v),
            "CapBnd" => s.cap_bnd = hex(v),
            "CapAmb" => s.cap_amb = hex(v),
            "NoNewPrivs" => s.no_new_privs = v == "1",
            "Seccomp" => s.seccomp = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    if s.tgid == 0 {
        return Err(parse_err(&path, "no Tgid line"));
    }
    Ok(s)
}

/// The fields of /proc/PID/stat cryo uses (after the command name).
#[derive(Debug, Clone, Default)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Controlling terminal (device number as stat encodes it; 0: none) and
    /// its foreground process group.
    pub tty_nr: u32,
    pub tpgid: i32,
    /// Signal the parent gets when this process exits.
    pub exit_signal: i32,
    /// wait() status of an exited process (a zombie's), 0 otherwise.
    pub exit_code: i32,
    /// When the process started (clock ticks after boot): with the pid, names
    /// one process even after its pid is reused.
    pub start_time: u64,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

pub fn stat(pid: i32) -> Result<Stat> {
    let path = format!("/proc/{pid}/stat");
    let text = read(&path)?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| parse_err(&path, "no ')'"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state) of proc(5).
    let field = |n: usize| -> Result<u64> {
        f.get(n - 3)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| parse_err(&path, format!("field {n} missing")))
    };
    Ok(Stat {
        state: f.first().and_then(|s| s.chars().next()).unwrap_or('?'),
        ppid: field(4)? as i32,
        pgid: field(5)? as i32,
        sid: field(6)? as i32,
        tty_nr: field(7)? as u32,
        tpgid: field(8)? as i32,
        exit_signal: field(38)? as i32,
        exit_code: field(52).unwrap_or(0) as i32,
        start_time: field(22)?,
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        arg_start: field(48)?,
        arg_end: field(49)?,
        env_start: field(50)?,
        env_end: field(51)?,
    })
}

/// Thread ids of a process, sorted, leader first.
pub fn tasks(pid: i32) -> Result<Vec<i32>> {
    let path = format!("/proc/{pid}/task");
    let rd = fs::read_dir(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TracerError::NoSuchProcess(pid)
        } else {
            TracerError::proc(&path, e)
        }
    })?;
    let mut tids: Vec<i32> =
        rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect();
    tids.sort_by_key(|&t| (t != pid, t));
    Ok(tids)
}

/// `root` and its descendants as they are now, parents first: a running
/// tree's shape (a child that exits meanwhile is skipped).
pub fn descendants(root: i32) -> Vec<i32> {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        pids.extend(children(pids[i]).unwrap_or_default());
        i += 1;
    }
    pids
}

/// Children of every thread of a process (each thread's own children file).
pub fn children(pid: i32) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for tid in tasks(pid)? {
        let path = format!("/proc/{pid}/task/{tid}/children");
        match fs::read_to_string(&path) {
            Ok(text) => out.extend(text.split_whitespace().filter_map(|c| c.parse::<i32>().ok())),
            // The thread exited after the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TracerError::proc(path, e)),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

pub fn read_link(path: &str) -> Result<String> {
    fs::read_link(path).map(|p| p.to_string_lossy().into_owned()).map_err(|e| TracerError::proc(path, e))
}

pub fn read_bytes(path: &str) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| TracerError::proc(path, e))
}

pub fn cmdline(pid: i32) -> Result<Vec<String>> {
    let b = read_bytes(&format!("/proc/{pid}/cmdline"))?;
    Ok(b.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// Memory map from /proc/PID/smaps (maps lines plus VmFlags).
pub fn vmas(pid: i32) -> Result<Vec<Vma>> {
    Ok(vmas_and_sharing(pid)?.into_iter().map(|(v, _)| v).collect())
}

/// [`vmas`], each with whether some of its pages are mapped by more than
/// one process (smaps' Shared_* counts are not all zero): pages shared
/// copy-on-write since a fork, or a file's or shared memory's pages.
pub fn vmas_and_sharing(pid: i32) -> Result<Vec<(Vma, bool)>> {
    let path = format!("/proc/{pid}/smaps");
    let text = read(&path)?;
    let mut out: Vec<(Vma, bool)> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some((v, _)) = out.last_mut() {
                v.vmflags = flags.split_whitespace().map(str::to_string).collect();
            }
            continue;
        }
        if let Some(count) = ["Shared_Clean:", "Shared_Dirty:", "Shared_Hugetlb:"].iter().find_map(|k| line.strip_prefix(k)) {
            if let Some((_, shared)) = out.last_mut() {
                *shared |= count.split_whitespace().next() != Some("0");
            }
            continue;
        }
        let Some(first) = line.split_whitespace().next() else { continue };
        let Some((a, b)) = first.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        out.push((parse_maps_line(&path, line, start, end)?, false));
    }
    Ok(out)
}

/// The memory map from /proc/PID/maps: like [`vmas`] without the VmFlags,
/// and cheap (smaps walks every page table to count pages).
pub fn maps(pid: i32) -> Result<Vec<Vma>> {
    let path = format!("/proc/{pid}/maps");
    let text = read(&path)?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(first) = line.split_whitespace().next() else { continue };
        let Some((a, b)) = first.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        out.push(parse_maps_line(&path, line, start, end)?);
    }
    Ok(out)
}

/// [`vmas`] of a stopped process, taking the flags from `earlier` (read
/// before it was stopped, or left by its parent image) when its map has not
/// changed since: the areas, their protection, offsets and files are
/// compared. A flag changed on a whole area in between goes unseen; callers
/// check what matters for correctness another way.
pub fn vmas_since(pid: i32, earlier: Option<&[Vma]>) -> Result<Vec<Vma>> {
    if let Some(earlier) = earlier {
        if same_areas(&maps(pid)?, earlier) {
            return Ok(earlier.to_vec());
        }
    }
    vmas(pid)
}

/// Are two memory maps made of the same areas (flags aside)?
pub fn same_areas(now: &[Vma], earlier: &[Vma]) -> bool {
    now.len() == earlier.len()
        && now.iter().zip(earlier).all(|(a, b)| {
            (a.start, a.end, a.prot, a.shared, a.offset, a.dev, a.inode, &a.name) == (b.start, b.end, b.prot, b.shared, b.offset, b.dev, b.inode, &b.name)
        })
}

fn parse_maps_line(path: &str, line: &str, start: u64, end: u64) -> Result<Vma> {
    // start-end perms offset dev inode [name]; the name may contain spaces.
    let mut it = line.splitn(6, ' ');
    let _range = it.next();
    let perms = it.next().ok_or_else(|| parse_err(path, "no perms"))?.as_bytes();
    let offset = it.next().and_then(|o| u64::from_str_radix(o, 16).ok()).ok_or_else(|| parse_err(path, "no offset"))?;
    let dev = it.next().ok_or_else(|| parse_err(path, "no dev"))?;
    let inode: u64 = it.next().and_then(|i| i.parse().ok()).ok_or_else(|| parse_err(path, "no inode"))?;
    let name = it.next().unwrap_or("").trim_start().to_string();
    let (maj, min) = dev.split_once(':').ok_or_else(|| parse_err(path, "bad dev"))?;
    let dev = (u64::from_str_radix(maj, 16).unwrap_or(0) << 32) | u64::from_str_radix(min, 16).unwrap_or(0);
    let mut prot = 0u32;
    if perms.first() == Some(&b'r') {
        prot |= libc::PROT_READ as u32;
    }
    if perms.get(1) == Some(&b'w') {
        prot |= libc::PROT_WRITE as u32;
    }
    if perms.get(2) == Some(&b'x') {
        prot |= libc::PROT_EXEC as u32;
    }
    let shared = perms.get(3) == Some(&b's');
    let kind = match name.as_str() {
        "[heap]" => VmaKind::Heap,
        "[stack]" => VmaKind::Stack,
        "[vdso]" => VmaKind::Vdso,
        // Kernel-provided pages that are moved to their old address at restart,
        // not dumped: the vDSO's data pages, and 32-bit ARM's signal-return
        // trampoline page (the kernel follows it on mremap; handlers installed
        // without SA_RESTORER return through it).
        "[vvar]" | "[vvar_vclock]" | "[sigpage]" => VmaKind::Vvar,
        // Kernel gate pages outside the user address space (x86 vsyscall, the
        // 32-bit ARM vector page): always there, neither dumped nor mapped.
        "[vsyscall]" | "[vectors]" => VmaKind::Vsyscall,
        // Shared anonymous memory shows as "/dev/zero (deleted)", memfds as
        // "/memfd:NAME (deleted)", SysV segments as "/SYSV<key> (deleted)":
        // none can be opened again by that name.
        _ if inode != 0 && (name.ends_with(" (deleted)") || name.starts_with("/SYSV")) => VmaKind::Shmem,
        _ if inode != 0 => VmaKind::File,
        _ => VmaKind::Anon,
    };
    Ok(Vma { start, end, prot, shared, kind, offset, dev, inode, name, vmflags: Vec::new() })
}

/// One open fd as /proc shows it.
#[derive(Debug, Clone)]
pub struct FdInfo {
    pub fd: i32,
    pub link: String,
    pub pos: u64,
    /// f_flags, octal in fdinfo; includes O_CLOEXEC when close-on-exec is set.
    pub flags: u32,
    /// The whole of /proc/PID/fdinfo/FD: kind-specific lines (locks, eventfd
    /// count, timerfd settings, epoll and inotify watches) follow pos and flags.
    pub info: String,
}

pub fn fds(pid: i32) -> Result<Vec<FdInfo>> {
    let dir = format!("/proc/{pid}/fd");
    let rd = fs::read_dir(&dir).map_err(|e| TracerError::proc(&dir, e))?;
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let link = match fs::read_link(e.path()) {
            Ok(l) => l.to_string_lossy().into_owned(),
            // Closed between readdir and readlink.
            Err(_) => continue,
        };
        let info_path = format!("/proc/{pid}/fdinfo/{fd}");
        let info = match fs::read_to_string(&info_path) {
            Ok(i) => i,
            Err(_) => continue,
        };
        let mut pos = 0;
        let mut flags = 0;
        for l in info.lines() {
            if let Some(v) = l.strip_prefix("pos:") {
                pos = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = l.strip_prefix("flags:") {
                flags = u32::from_str_radix(v.trim(), 8).unwrap_or(0);
            }
        }
        out.push(FdInfo { fd, link, pos, flags, info });
    }
    out.sort_by_key(|f| f.fd);
    Ok(out)
}

/// /proc/PID/mem: reads and writes go through even to pages without
/// PROT_READ/PROT_WRITE (FOLL_FORCE), which process_vm_readv cannot do.
pub struct MemFile {
    file: File,
    path: String,
}

impl MemFile {
    pub fn open(pid: i32) -> Result<MemFile> {
        let path = format!("/proc/{pid}/mem");
        let file = fs::OpenOptions::new().read(true).write(true).open(&path).map_err(|e| TracerError::proc(&path, e))?;
        Ok(MemFile { file, path })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, addr).map_err(|e| TracerError::proc(format!("{} at {addr:#x}", self.path), e))
    }

    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        self.file.write_all_at(buf, addr).map_err(|e| TracerError::proc(format!("{} at {addr:#x}", self.path), e))
    }
}

/// Bytes of memory this process can still get without the kernel reclaiming
/// from others by force: MemAvailable plus free swap, or less where a cgroup
/// cryo runs in has a memory limit (a container, a systemd slice). `None`
/// when /proc/meminfo cannot be read.
pub fn available_memory() -> Option<u64> {
    let system = meminfo_available(&fs::read_to_string("/proc/meminfo").ok()?)?;
    let read = |path: String| fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let groups = limit_files(&fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    Some(groups.into_iter().filter_map(|(limit, usage)| Some(read(limit)?.saturating_sub(read(usage)?))).fold(system, u64::min))
}

/// How many processes the kernel's out-of-memory killer has ended since boot
/// (/proc/vmstat oom_kill).
pub fn oom_kills() -> Option<u64> {
    fs::read_to_string("/proc/vmstat").ok()?.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// MemAvailable plus SwapFree of /proc/meminfo, in bytes.
fn meminfo_available(text: &str) -> Option<u64> {
    let kib = |field: &str| -> Option<u64> { text.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok()) };
    Some((kib("MemAvailable:")? + kib("SwapFree:").unwrap_or(0)) * 1024)
}

/// (limit, usage) files of the memory cgroup in /proc/self/cgroup (`text`)
/// and of every group above it: cgroup v2 ("0::/path"), or v1's memory
/// controller ("N:memory:/path"). An unlimited group's limit does not parse
/// (v2 "max") or is huge (v1).
fn limit_files(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (root, limit, usage) = match (id, controllers) {
            ("0", "") => ("/sys/fs/cgroup", "memory.max", "memory.current"),
            (_, c) if c.split(',').any(|c| c == "memory") => ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"),
            _ => continue,
        };
        let mut dir = path.trim_end_matches('/');
        while !dir.is_empty() {
            out.push((format!("{root}{dir}/{limit}"), format!("{root}{dir}/{usage}")));
            dir = dir.rsplit_once('/').map_or("", |(up, _)| up);
        }
    }
    out
}

/// /proc/PID/pagemap entry bits.
pub mod pagemap {
    pub const PRESENT: u64 = 1 << 63;
    pub const SWAPPED: u64 = 1 << 62;
    /// The page is file-backed or shared-anon (not a private anonymous page).
    pub const FILE_SHARED: u64 = 1 << 61;
    /// The page is mapped by this process alone (shared with no fork).
    pub const EXCLUSIVE: u64 = 1 << 56;
}

/// Reads pagemap entries for a range of pages.
pub struct Pagemap {
    file: File,
    path: String,
}

impl Pagemap {
    pub fn open(pid: i32) -> Result<Pagemap> {
        let path = format!("/proc/{pid}/pagemap");
        let file = File::open(&path).map_err(|e| TracerError::proc(&path, e))?;
        Ok(Pagemap { file, path })
    }

    /// Entries for pages [start, end), `page_size`-sized.
    pub fn entries(&self, start: u64, end: u64, page_size: u64, out: &mut Vec<u64>) -> Result<()> {
        let n = ((end - start) / page_size) as usize;
        out.clear();
        out.resize(n, 0);
        // SAFETY: viewing an initialized u64 slice as bytes of the same length is sound.
        let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), n * 8) };
        self.file
            .read_exact_at(bytes, start / page_size * 8)
            .map_err(|e| TracerError::proc(format!("{} at {start:#x}", self.path), e))
    }
}

/// PAGEMAP_SCAN (Linux 6.7): ranges of pages by category, optionally
/// write-protecting what matched (userfaultfd write-protect, async mode).
pub mod scan {
    /// `_IOWR('f', 16, struct pm_scan_arg)`.
    const PAGEMAP_SCAN: u64 = 0xC060_6610;
    /// Write-protect the matched pages.
    pub const WP_MATCHING: u64 = 1 << 0;
    /// Fail unless every area scanned is registered for async write-protect.
    pub const CHECK_WPASYNC: u64 = 1 << 1;
    pub const PAGE_IS_WRITTEN: u64 = 1 << 1;

    #[repr(C)]
    #[derive(Default)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }

    /// Regions per ioctl call.
    const REGIONS: usize = 512;

    pub const PAGE_IS_FILE: u64 = 1 << 2;
    pub const PAGE_IS_PRESENT: u64 = 1 << 3;
    pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
    pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

    /// Which pages match: every category of `all` (after flipping those of
    /// `inverted`), and one of `any` unless it is 0.
    #[derive(Clone, Copy, Default)]
    pub struct Query {
        pub all: u64,
        pub inverted: u64,
        pub any: u64,
    }

    /// The [start, end) ranges of pages in [start, end) that have every
    /// category of `mask`, each run of pages once; with `flags` as above.
    pub fn ranges(pagemap: &super::Pagemap, start: u64, end: u64, mask: u64, flags: u64) -> std::io::Result<Vec<(u64, u64)>> {
        ranges_where(pagemap, start, end, Query { all: mask, ..Default::default() }, flags)
    }

    /// The ranges of pages in [start, end) that match `q`.
    pub fn ranges_where(pagemap: &super::Pagemap, start: u64, end: u64, q: Query, flags: u64) -> std::io::Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (a, b, _) in regions(pagemap, start, end, q, q.all | q.any, flags)? {
            match out.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                _ => out.push((a, b)),
            }
        }
        Ok(out)
    }

    /// The pages in [start, end) that match `q`, as (start, end, categories)
    /// with the categories of `returned` that each has.
    pub fn regions(pagemap: &super::Pagemap, start: u64, end: u64, q: Query, returned: u64, flags: u64) -> std::io::Result<Vec<(u64, u64, u64)>> {
        use std::os::fd::AsRawFd;
        let mut out: Vec<(u64, u64, u64)> = Vec::new();
        let mut regions = [PageRegion::default(); REGIONS];
        let mut at = start;
        while at < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags,
                start: at,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: REGIONS as u64,
                category_mask: q.all,
                category_inverted: q.inverted,
                category_anyof_mask: q.any,
                return_mask: returned,
                ..Default::default()
            };
            // SAFETY: `arg` and the `regions` it points to live across the
            // call and are sized as the kernel's structures; the kernel writes
            // at most `vec_len` regions and `walk_end`.
            let n = unsafe { libc::ioctl(pagemap.file.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg as *mut PmScanArg) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for r in &regions[..n as usize] {
                match out.last_mut() {
                    Some(last) if last.1 == r.start && last.2 == r.categories => last.1 = r.end,
                    _ => out.push((r.start, r.end, r.categories)),
                }
            }
            if arg.walk_end <= at {
                break;
            }
            at = arg.walk_end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_memory_counts_swap_and_every_memory_cgroup_above() {
        let meminfo = "MemTotal:       24683520 kB\nMemFree:        20000000 kB\nMemAvailable:   23000000 kB\nSwapTotal:       1000 kB\nSwapFree:         512 kB\n";
        assert_eq!(meminfo_available(meminfo), Some((23_000_000 + 512) * 1024));
        assert_eq!(meminfo_available("MemFree: 5 kB\n"), None);
        let v1 = "9:name=systemd:/\n4:memory:/a/b\n0::/\n";
        assert_eq!(
            limit_files(v1),
            [
                ("/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes".to_string(), "/sys/fs/cgroup/memory/a/b/memory.usage_in_bytes".to_string()),
                ("/sys/fs/cgroup/memory/a/memory.limit_in_bytes".to_string(), "/sys/fs/cgroup/memory/a/memory.usage_in_bytes".to_string()),
            ]
        );
        let v2 = limit_files("0::/user.slice/app.scope\n");
        assert_eq!(v2.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["/sys/fs/cgroup/user.slice/app.scope/memory.max", "/sys/fs/cgroup/user.slice/memory.max"]);
        assert!(available_memory().is_some_and(|b| b > 0), "this machine has some memory available");
    }
}
