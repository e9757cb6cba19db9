//! End-to-end test harness for cryo.
//!
//! The tests drive the `cryo` binary (target/<profile>/cryo, package `cryo-cli`) only as a
//! subprocess; this crate depends on no cryo crate.
//!
//! * When the tests run as root (sessions and CI do), every workload and every `cryo`
//!   command runs as the unprivileged user `cryo-test` (created on first use with
//!   `useradd --system --no-create-home`, serialized by a file lock). A second user,
//!   `cryo-other`, owns the "another user's process" workload. When not root, everything
//!   runs as the current user and tests that need a second user are skipped with a
//!   printed reason.
//! * Each [`Harness`] owns a work directory `/tmp/cryo-tests-<euid>/<test>.<runner-pid>.<n>`
//!   (mode 0755, owned by the test user) that holds a copy of the cryo binary, the
//!   compiled C workloads (tests/workloads/*.c), logs and images. It is removed when the
//!   test passes and kept (path printed) when it fails, or always with `CRYO_TESTS_KEEP=1`.
//! * Every process the harness starts runs in a new session (setsid) with the work dir
//!   as cwd, a clean environment, and no fds beyond 0-2. On drop the harness kills them, the pids named in registered pidfiles
//!   (restored trees' host pids), and any other live process of the test user whose cwd
//!   or exe lies inside the work dir (restored trees, leaked helpers).
//!
//! Environment knobs: `CRYO_BIN` (path of the cryo binary to test instead of
//! target/<profile>/cryo), `CRYO_TESTS_KEEP=1`; `CRYO_LOG` is passed on to cryo (and then
//! the "exactly one line on stderr" check is relaxed).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{chown, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const TEST_USER: &str = "cryo-test";
pub const OTHER_USER: &str = "cryo-other";

/// How long any single cryo command may take before the test declares it hung.
pub const CRYO_TIMEOUT: Duration = Duration::from_secs(60);
/// Default wait for a log line to appear.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(20);

const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------

/// A uid/gid pair to run processes as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ident {
    pub uid: u32,
    pub gid: u32,
}

/// Whose identity a process runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// `cryo-test` when running as root, else the current user.
    Test,
    /// `cryo-other` (root only).
    Other,
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn self_ident() -> Ident {
    unsafe {
        Ident {
            uid: libc::geteuid(),
            gid: libc::getegid(),
        }
    }
}

/// Hold an exclusive flock on a well-known file for the lifetime of the value.
struct FileLock(#[allow(dead_code)] File);

impl FileLock {
    fn acquire(path: &str) -> FileLock {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o644)
            .open(path)
            .unwrap_or_else(|e| panic!("open lock file {path}: {e}"));
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock {path}: {}", std::io::Error::last_os_error());
        FileLock(f)
    }
}

fn getent(db: &str, name: &str) -> Option<Vec<String>> {
    let out = Command::new("getent").args([db, name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s.lines().next()?;
    Some(line.split(':').map(str::to_string).collect())
}

fn lookup_user(name: &str) -> Option<Ident> {
    let f = getent("passwd", name)?;
    Some(Ident {
        uid: f.get(2)?.parse().ok()?,
        gid: f.get(3)?.parse().ok()?,
    })
}

/// Look up `name`, creating it as a system user without a home when missing.
/// Root only. Serialized across threads and processes by a file lock.
pub fn ensure_user(name: &str) -> Ident {
    static CACHE: OnceLock<Mutex<HashMap<String, Ident>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(id) = cache.get(name) {
        return *id;
    }
    assert!(is_root(), "creating user {name} needs root");
    let _lock = FileLock::acquire("/tmp/cryo-tests-useradd.lock");
    let id = match lookup_user(name) {
        Some(id) => id,
        None => {
            let mut cmd = Command::new("useradd");
            cmd.args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
            ]);
            if getent("group", name).is_some() {
                cmd.args(["--gid", name]);
            } else {
                cmd.arg("--user-group");
            }
            cmd.arg(name);
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("run useradd (is it installed?): {e}"));
            assert!(
                out.status.success(),
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            lookup_user(name).unwrap_or_else(|| panic!("user {name} missing after useradd"))
        }
    };
    assert_ne!(id.uid, 0, "user {name} must not be uid 0");
    cache.insert(name.to_string(), id);
    id
}

/// The identity tests run workloads and cryo as.
pub fn test_ident() -> Ident {
    if is_root() {
        ensure_user(TEST_USER)
    } else {
        self_ident()
    }
}

// ---------------------------------------------------------------------------------------
// /proc helpers
// ---------------------------------------------------------------------------------------

/// A field of /proc/PID/status, trimmed (e.g. "TracerPid" -> "0").
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().to_string())
    })
}

/// The state letter from /proc/PID/status (R, S, D, T, t, Z, X, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    status_field(pid, "State").and_then(|s| s.chars().next())
}

pub fn ppid_of(pid: i32) -> Option<i32> {
    status_field(pid, "PPid").and_then(|v| v.parse().ok())
}

pub fn tracer_pid(pid: i32) -> Option<i32> {
    status_field(pid, "TracerPid").and_then(|s| s.parse().ok())
}

/// The NSpid line: the pid in every pid namespace from the host's down to the process's own.
pub fn nspids(pid: i32) -> Vec<i32> {
    status_field(pid, "NSpid")
        .map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Where each of `pid`'s fds points.
pub fn fd_links(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().filter_map(|e| Some(fs::read_link(e.path()).ok()?.to_string_lossy().into_owned())).collect())
        .unwrap_or_default()
}

/// Of each area of `pid` whose size is `size_kb`, which of `wanted` its
/// VmFlags (/proc/PID/smaps) hold, in the order of `wanted`; one list per
/// such area, in address order.
pub fn vm_flags_of_size(pid: i32, size_kb: u64, wanted: &[&'static str]) -> Vec<Vec<&'static str>> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut out = Vec::new();
    let mut size = 0;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Size:") {
            size = kb.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0);
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            if size == size_kb {
                let flags: Vec<&str> = flags.split_whitespace().collect();
                out.push(wanted.iter().copied().filter(|f| flags.contains(f)).collect());
            }
        }
    }
    out
}

/// The VmFlags and AnonHugePages (kB) of `pid`'s largest memory area.
pub fn largest_area(pid: i32) -> (String, u64) {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let kb = |l: &str, key: &str| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap());
    let (mut best, mut size, mut huge) = ((0, String::new(), 0), 0, 0);
    for line in smaps.lines() {
        if let Some(v) = kb(line, "Size:") {
            size = v;
        } else if let Some(v) = kb(line, "AnonHugePages:") {
            huge = v;
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            if size > best.0 {
                best = (size, flags.trim().to_string(), huge);
            }
        }
    }
    (best.1, best.2)
}

/// THP_enabled in /proc/PID/status: false once PR_SET_THP_DISABLE was set.
pub fn thp_enabled(pid: i32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(str::trim) == Some("1")
}

/// Are transparent huge pages on here (not "never")?
pub fn thp_available() -> bool {
    fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").is_ok_and(|s| !s.contains("[never]"))
}

/// `root` and its descendants.
pub fn tree_of(root: i32) -> Vec<i32> {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        pids.extend(children(pids[i]));
        i += 1;
    }
    pids
}

/// Host pids of the children of `pid`, from every thread's children file.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
    }
    out
}

pub fn read_maps(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default()
}

/// Exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

fn real_uid_of(pid: i32) -> Option<u32> {
    status_field(pid, "Uid")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn all_pids() -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                v.push(p);
            }
        }
    }
    v
}

/// A pid that currently names no process.
pub fn unused_pid() -> i32 {
    let max: i32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (2..max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("no free pid")
}

fn kill(pid: i32, sig: i32) {
    if pid > 1 {
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Polls `cond` until it holds, at first every millisecond and then less
/// often (up to every 100 ms); past `timeout` the test fails with `why()`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool, why: impl Fn() -> String) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(start.elapsed() < timeout, "{}", why());
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub fn send_signal(pid: i32, sig: i32) {
    assert!(pid > 1);
    // SAFETY: kill takes no memory arguments.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Live (non-zombie) processes owned by `uid` whose cwd or exe is inside `dir`.
pub fn procs_under(dir: &Path, uid: u32) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    for pid in all_pids() {
        if pid == me || real_uid_of(pid) != Some(uid) || !pid_alive(pid) {
            continue;
        }
        let inside = ["cwd", "exe"].iter().any(|l| {
            fs::read_link(format!("/proc/{pid}/{l}"))
                .map(|p| p.starts_with(dir))
                .unwrap_or(false)
        });
        if inside {
            v.push((pid, cmdline(pid)));
        }
    }
    v
}

// ---------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------

/// A log file written by a workload; polled by the test.
#[derive(Clone, Debug)]
pub struct Log {
    pub path: PathBuf,
    /// The workload's stderr, shown when a wait times out.
    pub err_path: Option<PathBuf>,
}

impl Log {
    pub fn new(path: impl Into<PathBuf>) -> Log {
        Log {
            path: path.into(),
            err_path: None,
        }
    }

    pub fn text(&self) -> String {
        fs::read(&self.path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }

    /// Number of complete lines.
    pub fn line_count(&self) -> usize {
        self.text().matches('\n').count()
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "--- {} ---\n{}",
            self.path.display(),
            tail(&self.text(), 40)
        );
        if let Some(e) = &self.err_path {
            let t = fs::read_to_string(e).unwrap_or_default();
            if !t.is_empty() {
                s += &format!("\n--- {} ---\n{}", e.display(), tail(&t, 20));
            }
        }
        s
    }

    /// Wait until a complete line satisfies `pred`; returns it. Panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let t = self.text();
            let complete = match t.rfind('\n') {
                Some(i) => &t[..=i],
                None => "",
            };
            if let Some(l) = complete.lines().find(|l| pred(l)) {
                return l.to_string();
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {:?} waiting for {what} in the log\n{}",
                    timeout,
                    self.describe()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Wait for a line equal to `line`.
    pub fn wait_line(&self, line: &str) -> String {
        self.wait_for(&format!("line {line:?}"), LOG_TIMEOUT, |l| l == line)
    }

    /// Wait for a line starting with `prefix`.
    pub fn wait_prefix(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_for(&format!("a line starting {prefix:?}"), timeout, |l| {
            l.starts_with(prefix)
        })
    }

    /// Wait until at least `n` more complete lines exist than `base`.
    pub fn wait_growth(&self, base: usize, n: usize, timeout: Duration) {
        let start = Instant::now();
        while self.line_count() < base + n {
            if start.elapsed() > timeout {
                panic!(
                    "log did not grow by {n} lines within {timeout:?} (had {base})\n{}",
                    self.describe()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut out = String::new();
    if from > 0 {
        out += &format!("[... {from} earlier lines]\n");
    }
    out += &lines[from..].join("\n");
    out
}

/// Assert `actual` is exactly `expected`, with a readable first-difference report.
pub fn assert_text_eq(actual: &str, expected: &str, what: &str) {
    if actual == expected {
        return;
    }
    let a: Vec<&str> = actual.split_inclusive('\n').collect();
    let e: Vec<&str> = expected.split_inclusive('\n').collect();
    let i = a
        .iter()
        .zip(e.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(e.len()));
    let lo = i.saturating_sub(3);
    panic!(
        "{what}: differs from expected at line {} (actual {} lines, expected {} lines)\n\
         actual around there:   {:?}\nexpected around there: {:?}\n\
         (bytes: actual {}, expected {}; NUL bytes in actual: {})",
        i + 1,
        a.len(),
        e.len(),
        &a[lo..(i + 3).min(a.len())],
        &e[lo..(i + 3).min(e.len())],
        actual.len(),
        expected.len(),
        actual.matches('\0').count()
    );
}

/// The heap workload's log for a process with pid `pid`, derived from a reference run's
/// log (same STEPS and MIB): identical except for the pid field.
pub fn heap_expected(reference: &str, pid: i32) -> String {
    let first = reference.lines().next().expect("empty reference log");
    let ref_pid: i32 = first
        .strip_prefix("start pid ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad reference first line {first:?}"));
    reference
        .lines()
        .map(|l| {
            let l = match l.strip_suffix(&format!(" pid {ref_pid}")) {
                Some(head) => format!("{head} pid {pid}"),
                None => l.to_string(),
            };
            l + "\n"
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// A process started by the harness (a workload or a foreground cryo command).
/// Killed (with its process group) and reaped on drop.
pub struct Proc {
    pub name: String,
    pid: i32,
    child: Child,
    status: Option<ExitStatus>,
    pub stdout_path: Option<PathBuf>,
    pub stderr_path: Option<PathBuf>,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin was not piped")
    }

    /// The exit status if it has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Wait for exit; panics (after killing it) if it takes longer than `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_timeout(timeout) {
            Some(s) => s,
            None => {
                let err = self.stderr_text();
                self.kill();
                panic!(
                    "{} (pid {}) did not exit within {timeout:?}; stderr: {err}",
                    self.name, self.pid
                );
            }
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr_path
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout_path
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            kill(-self.pid, libc::SIGKILL);
            kill(self.pid, libc::SIGKILL);
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Output of a finished cryo command.
#[derive(Debug)]
pub struct CmdOut {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn success(&self) -> bool {
        self.status.success()
    }
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn describe(&self) -> String {
        format!(
            "`cryo {}` -> {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            describe_status(self.status),
            tail(&self.stdout, 30),
            tail(&self.stderr, 30)
        )
    }
    /// Panic with the output unless it succeeded.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "cryo command failed:\n{}", self.describe());
        self
    }
    /// Assert it failed the way the contract says: non-zero exit (not a crash),
    /// one clear line on stderr (checked unless CRYO_LOG is set), no panic.
    pub fn assert_clean_failure(&self) -> &Self {
        assert!(
            !self.success(),
            "expected cryo to fail, it succeeded:\n{}",
            self.describe()
        );
        assert!(
            self.code().is_some(),
            "cryo was killed by a signal instead of failing cleanly:\n{}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("panicked"),
            "cryo panicked:\n{}",
            self.describe()
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            !lines.is_empty(),
            "cryo failed without saying why on stderr:\n{}",
            self.describe()
        );
        if std::env::var_os("CRYO_LOG").is_none() {
            assert_eq!(
                lines.len(),
                1,
                "on failure cryo must print one clear line on stderr:\n{}",
                self.describe()
            );
        }
        self
    }
    /// Assert stderr mentions (case-insensitively) at least one of `words`.
    pub fn assert_stderr_mentions(&self, words: &[&str]) -> &Self {
        let e = self.stderr.to_lowercase();
        assert!(
            words.iter().any(|w| e.contains(&w.to_lowercase())),
            "cryo's stderr should mention one of {words:?}:\n{}",
            self.describe()
        );
        self
    }
}

pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s:?}"),
    }
}

/// Options for [`Harness::spawn_with`].
pub struct SpawnOpts {
    /// File (relative to the work dir) receiving stdout; stderr goes to `<log>.err`.
    pub log: String,
    /// Give the process a pipe as stdin (take it with [`Proc::take_stdin`]); else /dev/null.
    pub stdin_piped: bool,
    pub who: Who,
    /// Working directory; default: the work dir.
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl SpawnOpts {
    pub fn log(log: &str) -> SpawnOpts {
        SpawnOpts {
            log: log.to_string(),
            stdin_piped: false,
            who: Who::Test,
            cwd: None,
            env: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Per-test environment: work dir, users, cryo binary, workloads, cleanup.
pub struct Harness {
    pub name: String,
    /// The work dir (0755, owned by the test user).
    pub dir: PathBuf,
    /// Identity to switch to (Some when running as root).
    user: Option<Ident>,
    cryo: RefCell<Option<PathBuf>>,
    bins: RefCell<HashMap<String, PathBuf>>,
    pids: RefCell<Vec<i32>>,
    pidfiles: RefCell<Vec<PathBuf>>,
    seq: Cell<u32>,
}

fn base_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/cryo-tests-{}", unsafe { libc::geteuid() }))
}

/// Kill processes left in work dirs of test runners that no longer exist (e.g. a test
/// binary killed by a timeout) and remove those dirs when they are older than a day.
fn sweep_stale(base: &Path, uid: u32) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(rd) = fs::read_dir(base) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let parts: Vec<&str> = name.rsplitn(3, '.').collect();
            let Some(runner) = parts.get(1).and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if runner == std::process::id() as i32 || Path::new(&format!("/proc/{runner}")).exists()
            {
                continue;
            }
            for (pid, _) in procs_under(&e.path(), uid) {
                kill(pid, libc::SIGKILL);
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(86400))
                .unwrap_or(false);
            if old {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    });
}

/// Files that may be executed are written by a child process, never opened for writing
/// here: a sibling test thread forking while this process held such a file open would
/// carry the descriptor until its own exec, and exec of the file fails with ETXTBSY
/// meanwhile.
fn write_from_child(p: &Path, content: &[u8]) {
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\"", "sh"])
        .arg(p)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run sh to write {}: {e}", p.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(content)
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    let st = child.wait().unwrap();
    assert!(st.success(), "writing {}: {st}", p.display());
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

impl Harness {
    /// A fresh work dir for the test `name`. Does not need the cryo binary.
    pub fn new(name: &str) -> Harness {
        let user = if is_root() {
            Some(ensure_user(TEST_USER))
        } else {
            None
        };
        let base = base_dir();
        if !base.exists() {
            let _ = fs::create_dir_all(&base);
        }
        set_mode(&base, 0o755);
        sweep_stale(&base, user.unwrap_or_else(self_ident).uid);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = base.join(format!("{name}.{}.{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        set_mode(&dir, 0o755);
        let h = Harness {
            name: name.to_string(),
            dir,
            user,
            cryo: RefCell::new(None),
            bins: RefCell::new(HashMap::new()),
            pids: RefCell::new(Vec::new()),
            pidfiles: RefCell::new(Vec::new()),
            seq: Cell::new(0),
        };
        h.give(&h.dir);
        h
    }

    /// Like [`Harness::new`] but first makes sure the cryo binary is there (panics with
    /// "build it first" otherwise), so a missing build fails before any workload starts.
    pub fn with_cryo(name: &str) -> Harness {
        let h = Harness::new(name);
        h.cryo();
        h
    }

    /// The identity processes of `who` run as.
    pub fn ident(&self, who: Who) -> Ident {
        match who {
            Who::Test => self.user.unwrap_or_else(self_ident),
            Who::Other => {
                assert!(is_root(), "a second user needs root");
                ensure_user(OTHER_USER)
            }
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn next(&self) -> u32 {
        let n = self.seq.get();
        self.seq.set(n + 1);
        n
    }

    /// chown a path to the test user (no-op when not root).
    pub fn give(&self, p: &Path) {
        self.give_to(p, Who::Test);
    }

    pub fn give_to(&self, p: &Path, who: Who) {
        if is_root() {
            let id = self.ident(who);
            chown(p, Some(id.uid), Some(id.gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
    }

    /// Create (truncate) a file in the work dir owned by `who`, mode 0644, opened
    /// O_WRONLY|O_CREAT|O_TRUNC (never O_APPEND).
    pub fn create_file_for(&self, rel: &str, who: Who) -> (PathBuf, File) {
        let p = self.path(rel);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&p)
            .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        self.give_to(&p, who);
        (p, f)
    }

    /// Create a subdirectory (0755) owned by `who`.
    pub fn mkdir_for(&self, rel: &str, who: Who) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap();
        set_mode(&p, 0o755);
        self.give_to(&p, who);
        p
    }

    /// Write a file (e.g. a script) into the work dir, readable by everyone.
    pub fn write_file(&self, rel: &str, content: &str, mode: u32) -> PathBuf {
        let p = self.path(rel);
        write_from_child(&p, content.as_bytes());
        set_mode(&p, mode);
        self.give(&p);
        p
    }

    /// Path of the cryo binary under test (not the copy).
    pub fn cryo_source() -> PathBuf {
        if let Some(p) = std::env::var_os("CRYO_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test-binary> -> target/<profile>/cryo
        exe.parent()
            .and_then(Path::parent)
            .map(|p| p.join("cryo"))
            .expect("test binary has no grandparent dir")
    }

    /// The copy of the cryo binary in the work dir (copied on first use).
    pub fn cryo(&self) -> PathBuf {
        if let Some(p) = self.cryo.borrow().as_ref() {
            return p.clone();
        }
        let src = Self::cryo_source();
        if !src.is_file() {
            panic!(
                "cryo binary not found at {}: build it first: cargo build -p cryo-cli \
                 (./test.sh does this)",
                src.display()
            );
        }
        let dst = self.path("cryo");
        let cp = Command::new("cp")
            .arg(&src)
            .arg(&dst)
            .status()
            .unwrap_or_else(|e| panic!("run cp: {e}"));
        assert!(cp.success(), "cp {} {}: {cp}", src.display(), dst.display());
        set_mode(&dst, 0o755);
        *self.cryo.borrow_mut() = Some(dst.clone());
        dst
    }

    /// Compile tests/workloads/NAME.c into the work dir (once); returns the binary.
    pub fn compile(&self, name: &str) -> PathBuf {
        self.compile_with(name, &[])
    }

    /// Compile `workloads/<name>.c` with extra gcc flags (e.g. `-pthread`).
    pub fn compile_with(&self, name: &str, flags: &[&str]) -> PathBuf {
        if let Some(p) = self.bins.borrow().get(name) {
            return p.clone();
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("workloads")
            .join(format!("{name}.c"));
        let out = self.path(name);
        let res = Command::new("gcc")
            .args(["-O2", "-g", "-Wall"])
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("run gcc (install it: apt-get install gcc): {e}"));
        assert!(
            res.status.success(),
            "gcc {} failed:\n{}",
            src.display(),
            String::from_utf8_lossy(&res.stderr)
        );
        set_mode(&out, 0o755);
        self.bins.borrow_mut().insert(name.to_string(), out.clone());
        out
    }

    /// A Command that runs as `who` in a new session, with a clean environment and the
    /// work dir as cwd.
    pub fn command(&self, who: Who, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", PATH_ENV)
            .env("HOME", &self.dir)
            .env("TMPDIR", &self.dir)
            .env("LANG", "C")
            .current_dir(&self.dir);
        // CRYO_LOG is passed on for debugging (and relaxes the one-line stderr check);
        // RUST_BACKTRACE deliberately is not, so error output stays as users see it.
        if let Some(v) = std::env::var_os("CRYO_LOG") {
            cmd.env("CRYO_LOG", v);
        }
        if is_root() {
            let id = self.ident(who);
            // std drops supplementary groups (setgroups(0)) itself when root sets a uid.
            cmd.uid(id.uid).gid(id.gid);
        } else {
            assert_eq!(who, Who::Test, "a second user needs root");
        }
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Let no fd beyond 0-2 leak into the process (e.g. a pipe the shell
                // that started `cargo test` left open): mark them close-on-exec.
                // CLOEXEC rather than close keeps std's exec-error pipe working.
                const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
        cmd
    }

    fn track(&self, pid: i32) {
        self.pids.borrow_mut().push(pid);
    }

    /// Start a workload: stdout to the log file `log` (created O_TRUNC, no O_APPEND),
    /// stderr to `<log>.err`, stdin /dev/null, as the test user, new session.
    pub fn spawn(&self, argv: &[&str], log: &str) -> (Proc, Log) {
        self.spawn_with(argv, SpawnOpts::log(log))
    }

    pub fn spawn_with(&self, argv: &[&str], o: SpawnOpts) -> (Proc, Log) {
        let (out_p, out_f) = self.create_file_for(&o.log, o.who);
        let (err_p, err_f) = self.create_file_for(&format!("{}.err", o.log), o.who);
        let mut cmd = self.command(o.who, argv[0]);
        cmd.args(&argv[1..])
            .stdout(out_f)
            .stderr(err_f)
            .stdin(if o.stdin_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        if let Some(c) = &o.cwd {
            cmd.current_dir(c);
        }
        for (k, v) in &o.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        let pid = child.id() as i32;
        self.track(pid);
        (
            Proc {
                name: argv.join(" "),
                pid,
                child,
                status: None,
                stdout_path: Some(out_p.clone()),
                stderr_path: Some(err_p.clone()),
            },
            Log {
                path: out_p,
                err_path: Some(err_p),
            },
        )
    }

    /// Run a workload to completion (e.g. a reference run); panics unless it exits 0
    /// within `timeout`. Returns its stdout log.
    pub fn run_to_completion(&self, argv: &[&str], log: &str, timeout: Duration) -> Log {
        let (mut p, l) = self.spawn(argv, log);
        let st = p.wait_exit(timeout);
        assert!(
            st.success(),
            "{argv:?} exited with {}\n{}",
            describe_status(st),
            l.describe()
        );
        l
    }

    /// The log of an uninterrupted run of a workload whose first argument is
    /// its log file (`prog ref.log ARGS...`): what a restarted copy must log.
    pub fn reference_log(&self, prog: &str, args: &[&str], timeout: Duration) -> String {
        let argv: Vec<&str> = [prog, "ref.log"].into_iter().chain(args.iter().copied()).collect();
        self.run_to_completion(&argv, "ref.out", timeout);
        Log::new(self.path("ref.log")).text()
    }

    /// Run `cryo ARGS` as the test user and wait for it (at most [`CRYO_TIMEOUT`]).
    pub fn cryo_run(&self, args: &[&str]) -> CmdOut {
        self.cryo_run_env(args, &[])
    }

    pub fn cryo_run_env(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
        let mut p = self.cryo_spawn_env(args, env, Stdio::null());
        let st = match p.wait_timeout(CRYO_TIMEOUT) {
            Some(s) => s,
            None => {
                let err = p.stderr_text();
                p.kill();
                panic!(
                    "`cryo {}` hung for {CRYO_TIMEOUT:?}; stderr: {err}",
                    args.join(" ")
                );
            }
        };
        CmdOut {
            args: args.iter().map(|s| s.to_string()).collect(),
            status: st,
            stdout: p.stdout_text(),
            stderr: p.stderr_text(),
        }
    }

    /// Start `cryo ARGS` as the test user without waiting (e.g. a foreground restart).
    /// stdout/stderr go to files in the work dir (see [`Proc::stderr_text`]).
    pub fn cryo_spawn(&self, args: &[&str], stdin: Stdio) -> Proc {
        self.cryo_spawn_env(args, &[], stdin)
    }

    pub fn cryo_spawn_env(&self, args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> Proc {
        let cryo = self.cryo();
        let n = self.next();
        let (out_p, out_f) = self.create_file_for(&format!("cryo-{n}.out"), Who::Test);
        let (err_p, err_f) = self.create_file_for(&format!("cryo-{n}.err"), Who::Test);
        let mut cmd = self.command(Who::Test, &cryo);
        cmd.args(args).stdout(out_f).stderr(err_f).stdin(stdin);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn cryo: {e}"));
        let pid = child.id() as i32;
        self.track(pid);
        Proc {
            name: format!("cryo {}", args.join(" ")),
            pid,
            child,
            status: None,
            stdout_path: Some(out_p),
            stderr_path: Some(err_p),
        }
    }

    /// Remember a pidfile whose pid must be killed on cleanup.
    pub fn register_pidfile(&self, p: &Path) {
        self.pidfiles.borrow_mut().push(p.to_path_buf());
    }

    /// `cryo checkpoint PID -o IMG --kill`; asserts success and that `target` is gone
    /// within 10 s.
    pub fn checkpoint_kill(&self, target: &mut Proc, img: &Path) -> CmdOut {
        let pid = target.pid().to_string();
        let out = self.cryo_run(&["checkpoint", &pid, "-o", img.to_str().unwrap(), "--kill"]);
        out.assert_ok();
        // cryo waits for the killed tree to be gone, reaping each traced
        // thread: one left unreaped keeps the process from going away.
        assert!(!out.stderr.contains("still exiting"), "the killed tree did not exit:\n{}", out.describe());
        assert!(
            target.wait_timeout(Duration::from_secs(10)).is_some(),
            "checkpoint --kill returned but pid {pid} is still running"
        );
        out
    }

    /// `cryo restart IMG --detach --pidfile F`; asserts success and returns the restored
    /// root's host pid (registered for cleanup).
    /// The tree_pipes workload (a parent and three children talking over pipes,
    /// `per_child` messages each), checkpointed with --kill after message 30:
    /// the image and the workload's log.
    pub fn killed_tree_image(&self, per_child: &str) -> (PathBuf, Log) {
        let prog = self.compile("tree_pipes");
        let (mut p, log) = self.spawn(&[prog.to_str().unwrap(), per_child, "10"], "tree.log");
        log.wait_prefix("msg 30 ", Duration::from_secs(20));
        let img = self.path("img");
        self.checkpoint_kill(&mut p, &img);
        (img, log)
    }

    pub fn restart_detached(&self, img: &Path) -> i32 {
        self.restart_detached_with(img, &[])
    }

    /// [`Harness::restart_detached`] with more options.
    pub fn restart_detached_with(&self, img: &Path, extra: &[&str]) -> i32 {
        self.restart_detached_env(img, extra, &[]).0
    }

    /// [`Harness::restart_detached_with`] in an environment with `env` added;
    /// also gives cryo's output.
    pub fn restart_detached_env(&self, img: &Path, extra: &[&str], env: &[(&str, &str)]) -> (i32, CmdOut) {
        let pf = self.path(&format!("restored-{}.pid", self.next()));
        self.register_pidfile(&pf);
        let mut args = vec!["restart", img.to_str().unwrap(), "--detach", "--pidfile", pf.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.cryo_run_env(&args, env);
        out.assert_ok();
        let text = fs::read_to_string(&pf).unwrap_or_else(|e| {
            panic!(
                "restart --detach succeeded but pidfile {} is unreadable: {e}\n{}",
                pf.display(),
                out.describe()
            )
        });
        let pid: i32 = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("pidfile holds {text:?}, not a pid"));
        assert!(pid > 1, "pidfile holds {pid}");
        (pid, out)
    }

    /// Live processes of the test user inside the work dir, except `except`.
    pub fn leftovers(&self, except: &[i32]) -> Vec<(i32, String)> {
        let uid = self.ident(Who::Test).uid;
        procs_under(&self.dir, uid)
            .into_iter()
            .filter(|(p, _)| !except.contains(p))
            .collect()
    }

    /// Assert that (within 3 s) no process of the test user except `except` runs in the
    /// work dir, e.g. after a failed restart.
    pub fn assert_no_leftovers(&self, except: &[i32], context: &str) {
        let start = Instant::now();
        loop {
            let l = self.leftovers(except);
            if l.is_empty() {
                return;
            }
            if start.elapsed() > Duration::from_secs(3) {
                panic!("{context}: processes left running: {l:?}");
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn pidfile_pids(&self) -> Vec<i32> {
        self.pidfiles
            .borrow()
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok()?.trim().parse().ok())
            .collect()
    }

    /// Kill everything this test started or restored. Also run by Drop.
    pub fn cleanup(&self) {
        let uid = self.ident(Who::Test).uid;
        for pid in self.pids.borrow().iter() {
            kill(-*pid, libc::SIGKILL);
        }
        for pid in self.pidfile_pids() {
            if real_uid_of(pid) == Some(uid) {
                kill(pid, libc::SIGKILL);
            }
        }
        let start = Instant::now();
        loop {
            let l = procs_under(&self.dir, uid);
            if l.is_empty() || start.elapsed() > Duration::from_secs(3) {
                break;
            }
            for (pid, _) in l {
                kill(pid, libc::SIGKILL);
            }
            sleep(Duration::from_millis(30));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cleanup();
        let keep = std::env::var_os("CRYO_TESTS_KEEP").is_some();
        if std::thread::panicking() || keep {
            eprintln!("[{}] work dir kept: {}", self.name, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checks on a running target
// ---------------------------------------------------------------------------------------

/// A shell with `n` children running the heap workload (STEPS steps, SLEEP_MS
/// between them, MIB MiB each), each logging to heapI.log; once each logged a
/// few steps. `reference` is the log of an uninterrupted run.
pub struct HeapTree {
    pub shell: Proc,
    pub logs: Vec<Log>,
    pub heaps: Vec<i32>,
    pub reference: String,
}

impl HeapTree {
    pub fn start(h: &Harness, n: usize, steps: &str, sleep_ms: &str, mib: &str) -> HeapTree {
        let heap = h.compile("heap");
        let heap = heap.to_str().unwrap();
        let reference = h.reference_log(heap, &[steps, "0", mib], Duration::from_secs(20));
        let script = h.write_file("heaps.sh", &format!("for i in $(seq 1 {n}); do {heap} heap$i.log {steps} {sleep_ms} {mib} & done\nwait\n"), 0o755);
        let (shell, _) = h.spawn(&["bash", script.to_str().unwrap()], "heaps.out");
        let logs: Vec<Log> = (1..=n).map(|i| Log::new(h.path(&format!("heap{i}.log")))).collect();
        for log in &logs {
            log.wait_prefix("step 4 ", Duration::from_secs(20));
        }
        let heaps = logs.iter().map(|l| l.lines()[0].strip_prefix("start pid ").and_then(|s| s.parse().ok()).expect("heap logs its pid")).collect();
        HeapTree { shell, logs, heaps, reference }
    }

    /// The shell and the heaps.
    pub fn pids(&self) -> Vec<i32> {
        std::iter::once(self.shell.pid()).chain(self.heaps.iter().copied()).collect()
    }

    /// After a checkpoint that failed or was killed: every heap runs on
    /// untraced, with no child of cryo's, the tree has its shape, and
    /// nothing of cryo is left.
    pub fn assert_untouched(&self, h: &Harness, context: &str) {
        for (pid, log) in self.heaps.iter().zip(&self.logs) {
            assert!(children(*pid).is_empty(), "{context}: heap {pid} has children {:?}", children(*pid));
            assert_running_untouched(*pid, log, 0, context);
        }
        assert_eq!(tree_of(self.shell.pid()).len(), self.heaps.len() + 1, "{context}: the tree is the shell and its heaps");
        h.assert_no_leftovers(&self.pids(), context);
    }

    /// Every heap's log is the reference's (after a restart finished).
    pub fn assert_logs_match(&self, what: &str) {
        for (pid, log) in self.heaps.iter().zip(&self.logs) {
            assert_text_eq(&log.text(), &heap_expected(&self.reference, *pid), &format!("log of heap {pid} {what}"));
        }
    }
}

/// Assert that `pid` runs exactly as an untraced, unfrozen process would: over ~1 s its
/// state is never stopped (t/T) or dead, its TracerPid is `tracer` (0 = untraced), it has
/// no `memfd:cryo` mapping, and its log grows by at least 2 lines.
pub fn assert_running_untouched(pid: i32, log: &Log, tracer: i32, context: &str) {
    let base = log.line_count();
    let start = Instant::now();
    let mut samples = 0;
    while start.elapsed() < Duration::from_secs(1) || samples < 10 {
        let st = proc_state(pid);
        assert!(
            matches!(st, Some(c) if !matches!(c, 't' | 'T' | 'Z' | 'X')),
            "{context}: pid {pid} is in state {st:?} (expected running or sleeping)\n{}",
            log.describe()
        );
        let tp = tracer_pid(pid);
        assert_eq!(
            tp,
            Some(tracer),
            "{context}: TracerPid of {pid} is {tp:?}, expected {tracer}"
        );
        samples += 1;
        sleep(Duration::from_millis(50));
    }
    let maps = read_maps(pid);
    assert!(
        !maps.is_empty(),
        "{context}: could not read /proc/{pid}/maps"
    );
    assert!(
        !maps.contains("memfd:cryo"),
        "{context}: pid {pid} still maps cryo's memfd:\n{}",
        maps.lines()
            .filter(|l| l.contains("memfd:cryo"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    log.wait_growth(base, 2, Duration::from_secs(10));
}

/// Hidden partial image directories (`.NAME.partial-PID`) in `dir`: what a
/// checkpoint writes before it renames a complete image into place.
pub fn partial_images(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().contains(".partial-")).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// What can be seen of a process from outside and must not change when a
/// checkpoint fails: its memory map, its fds and where they lead, their
/// offsets and flags, and its signal masks.
pub fn outside_view(pid: i32) -> String {
    let mut out = read_maps(pid);
    let mut fds: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    fds.sort();
    for fd in fds {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|t| t.display().to_string()).unwrap_or_default();
        // pos: moves as the program writes its log; flags and mnt_id must not.
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let keep: Vec<&str> = info.lines().filter(|l| l.starts_with("flags:") || l.starts_with("mnt_id:")).collect();
        out.push_str(&format!("fd {fd} -> {target} {}\n", keep.join(" ")));
    }
    for key in ["SigBlk", "SigIgn", "SigCgt", "Threads"] {
        out.push_str(&format!("{key}: {}\n", status_field(pid, key).unwrap_or_default()));
    }
    out
}

/// A restarted "tick N sum S ..." workload ran to "done" past the `before`
/// lines it had logged, its `count` ticks consecutive, each with the sum
/// `sum` its memory had before the checkpoint.
pub fn assert_ticks_kept_sum(log: &Log, before: usize, count: u64, sum: &str, context: &str) {
    log.wait_line("done");
    let lines = log.lines();
    assert!(lines.len() > before, "no progress after the restart ({context})");
    assert_eq!(assert_consecutive(&lines, "tick ", context), count);
    for l in lines.iter().filter(|l| l.starts_with("tick ")) {
        assert_eq!(l.split_whitespace().nth(3), Some(sum), "the areas came back as they were ({context}): {l}");
    }
}

/// Parse lines `PREFIX N ...` and assert the numbers run 1, 2, ..., n without a repeat or
/// a gap; returns n.
pub fn assert_consecutive(lines: &[String], prefix: &str, context: &str) -> u64 {
    let mut expect = 1u64;
    for l in lines.iter().filter(|l| l.starts_with(prefix)) {
        let n: u64 = l[prefix.len()..]
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{context}: malformed line {l:?}"));
        assert_eq!(
            n,
            expect,
            "{context}: expected {prefix}{expect}, found {l:?} (repeat or gap)\nlog:\n{}",
            lines.join("\n")
        );
        expect += 1;
    }
    expect - 1
}

/// Copy a directory tree (an image) to `dst`, giving it to `who`, keeping modes.
pub fn copy_tree(h: &Harness, src: &Path, dst: &Path) {
    fs::create_dir(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    let mode = fs::metadata(src).unwrap().permissions().mode();
    for e in fs::read_dir(src).unwrap().flatten() {
        let from = e.path();
        let to = dst.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(h, &from, &to);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
            if is_root() {
                let id = h.ident(Who::Test);
                std::os::unix::fs::lchown(&to, Some(id.uid), Some(id.gid)).unwrap();
            }
        } else {
            fs::copy(&from, &to).unwrap();
            h.give(&to);
        }
    }
    set_mode(dst, mode & 0o7777);
    h.give(dst);
}

/// All regular files under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    fn walk(d: &Path, v: &mut Vec<PathBuf>) {
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    walk(&e.path(), v);
                } else if ft.is_file() {
                    v.push(e.path());
                }
            }
        }
    }
    walk(dir, &mut v);
    v.sort();
    v
}

/// XOR one byte of `file` at `offset` with 0xff.
pub fn flip_byte(file: &Path, offset: u64) {
    use std::io::{Seek, SeekFrom};
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

/// Where `program` is on the PATH.
pub fn which(program: &str) -> Option<String> {
    let out = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

/// Does a program exist on PATH?
pub fn have(program: &str) -> bool {
    which(program).is_some()
}
