//! The restore sandbox: a user+pid+mount namespace with a small init as pid 1,
//! which creates each restored process with its old pid (clone3 set_tid).
//! cryo itself stays outside, so its own /proc and ptrace view are the host's.

use crate::check::RestoreError;
use crate::Result;
use nix::errno::Errno;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

pub struct Sandbox {
    /// Host pid of the namespace's init, if there is a namespace.
    pub init: Option<i32>,
    /// Requests to init (a pid to create) and its answers.
    to_init: Option<std::fs::File>,
    from_init: Option<std::fs::File>,
    spawned: Vec<i32>,
}

pub struct Child {
    pub host_pid: i32,
}

fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(RestoreError::Io { what: "pipe".into(), source: std::io::Error::last_os_error() });
    }
    // SAFETY: the kernel just returned these fds to us.
    Ok(unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) })
}

const NS_HINT: &str = "Unprivileged user namespaces may be disabled (kernel.unprivileged_userns_clone, \
user.max_user_namespaces, or an AppArmor restriction); use --no-pid-ns to restore with a new pid";

impl Sandbox {
    /// No namespace: the restored process is a plain child of cryo and gets a new pid.
    pub fn plain() -> Sandbox {
        Sandbox { init: None, to_init: None, from_init: None, spawned: Vec::new() }
    }

    /// A namespace whose init lives as long as the process with pid `root`.
    pub fn with_pid_ns(root: i32) -> Result<Sandbox> {
        let (req_r, req_w) = pipe()?;
        let (ans_r, ans_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::SIGCHLD;
        // SAFETY: a fork-like clone (no new stack, no CLONE_VM): the child gets
        // a copy of this single-threaded process and runs only `init_main`,
        // which uses async-signal-safe calls.
        let pid = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
        if pid < 0 {
            return Err(RestoreError::Namespace { what: "clone(CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNS)".into(), errno: Errno::last(), hint: NS_HINT });
        }
        if pid == 0 {
            drop(req_w);
            drop(ans_r);
            drop(go_w);
            init_main(go_r, req_r, ans_w, root);
        }
        let pid = pid as i32;
        drop(req_r);
        drop(ans_w);
        drop(go_r);
        let mut sb = Sandbox { init: Some(pid), to_init: Some(req_w), from_init: Some(ans_r), spawned: Vec::new() };
        if let Err(e) = write_id_maps(pid) {
            sb.kill_all();
            return Err(e);
        }
        // Tell init the maps are in place.
        let mut go_w = go_w;
        let _ = go_w.write_all(b"g");
        Ok(sb)
    }

    /// Create the process that becomes `old_pid`, parked in pause() for cryo to seize.
    pub fn spawn(&mut self, old_pid: i32) -> Result<Child> {
        let Some(init) = self.init else {
            // SAFETY: fork of a single-threaded process; the child only parks.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(RestoreError::Io { what: "fork".into(), source: std::io::Error::last_os_error() });
            }
            if pid == 0 {
                park();
            }
            self.spawned.push(pid);
            return Ok(Child { host_pid: pid });
        };
        let to = self.to_init.as_mut().expect("init pipe");
        to.write_all(&old_pid.to_le_bytes()).map_err(|e| RestoreError::Io { what: "talking to the namespace init".into(), source: e })?;
        let mut ans = [0u8; 4];
        self.from_init
            .as_mut()
            .expect("init pipe")
            .read_exact(&mut ans)
            .map_err(|e| RestoreError::Io { what: "the namespace init died".into(), source: e })?;
        let r = i32::from_le_bytes(ans);
        if r < 0 {
            return Err(RestoreError::Pid { pid: old_pid, errno: Errno::from_raw(-r) });
        }
        let host_pid = find_child(init)?;
        self.spawned.push(host_pid);
        Ok(Child { host_pid })
    }

    /// A process created inside the tree: killed too if the restore fails.
    pub fn track(&mut self, host_pid: i32) {
        self.spawned.push(host_pid);
    }

    /// No more processes to create: init starts reaping, and from now on
    /// outlives cryo.
    pub fn done_spawning(&mut self) {
        if let Some(to) = self.to_init.as_mut() {
            // Wait for init's answer: until it has cleared its parent-death
            // signal, cryo exiting would still take the tree down.
            let mut ack = [0u8; 4];
            let acked = to.write_all(&DONE.to_le_bytes()).and_then(|()| self.from_init.as_mut().expect("init pipe").read_exact(&mut ack));
            if let Err(e) = acked {
                tracing::warn!("the namespace init did not confirm the end of the restore: {e}");
            }
        }
        self.to_init.take();
        self.from_init.take();
    }

    pub fn kill_all(&mut self) {
        for &p in &self.spawned {
            // SAFETY: kill has no memory arguments.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let Some(init) = self.init else {
            reap_traced();
            return;
        };
        // Killing a pid namespace's init kills everything in it. Its exit
        // waits until every process of the namespace was reaped, and cryo
        // reaps those it traces (processes and threads killed while traced,
        // by this or by the kernel's OOM killer) before their parent can:
        // so cryo reaps them while it waits for init.
        // SAFETY: as above.
        unsafe { libc::kill(init, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            reap_traced();
            let mut st = 0;
            // SAFETY: valid out-pointer; WNOHANG never blocks.
            if unsafe { libc::waitpid(init, &mut st, libc::WNOHANG) } != 0 {
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!("the restore namespace's init {init} did not exit within 10 s of SIGKILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        reap_traced();
    }

    /// The process cryo waits on in the foreground: init, or the process itself.
    pub fn waited(&self, root: i32) -> i32 {
        self.init.unwrap_or(root)
    }
}

/// Reap the exits of every process and thread cryo traces that ended.
fn reap_traced() {
    let mut st = 0;
    // SAFETY: valid out-pointer; WNOHANG never blocks.
    while unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) } > 0 {}
}

/// Host pid of init's child, from /proc/INIT/task/INIT/children.
fn find_child(init: i32) -> Result<i32> {
    let path = format!("/proc/{init}/task/{init}/children");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = std::fs::read_to_string(&path).map_err(|e| RestoreError::Io { what: path.clone(), source: e })?;
        if let Some(p) = s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()).max() {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err(RestoreError::Rebuild("the namespace init created no process".into()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn write_id_maps(pid: i32) -> Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let w = |file: &str, text: String| -> Result<()> {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| RestoreError::Namespace {
            what: format!("writing {path}"),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            hint: NS_HINT,
        })
    };
    w("uid_map", format!("{uid} {uid} 1\n"))?;
    w("setgroups", "deny\n".into())?;
    w("gid_map", format!("{gid} {gid} 1\n"))
}

/// A freshly created process waits here until cryo seizes and rebuilds it.
fn park() -> ! {
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}

/// struct clone_args up to set_tid_size (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// The request that ends the creation of processes (no process has pid 0).
const DONE: i32 = 0;

/// pid 1 of the restore namespace. Mounts a /proc of its own, creates
/// processes with requested pids, reaps, and leaves with the status of the
/// restored root, `root` (its pid here; a session helper may have created it,
/// and it was reparented to init when the helper exited).
fn init_main(go: std::fs::File, mut req: std::fs::File, mut ans: std::fs::File, root: i32) -> ! {
    // Until cryo says the tree is complete, cryo's death (even by SIGKILL)
    // takes init and so the whole half-restored namespace with it. If cryo
    // died before this, `go` reads EOF below.
    // SAFETY: prctl without memory arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut go = go;
    let mut b = [0u8; 1];
    if go.read_exact(&mut b).is_err() {
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(127) };
    }
    mount_proc();
    let mut pidbuf = [0u8; 4];
    // One request per process, then DONE; EOF before DONE: cryo failed.
    loop {
        if req.read_exact(&mut pidbuf).is_err() {
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(127) };
        }
        let want = i32::from_le_bytes(pidbuf);
        if want == DONE {
            // SAFETY: prctl without memory arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
            let _ = ans.write_all(&DONE.to_le_bytes());
            break;
        }
        let set_tid = [want];
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            set_tid: set_tid.as_ptr() as u64,
            set_tid_size: 1,
            ..Default::default()
        };
        // SAFETY: args is a valid clone_args of the size passed; without
        // CLONE_VM the child runs on a copy of this stack, like fork.
        let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
        if r == 0 {
            drop(req);
            drop(ans);
            park();
        }
        let r = if r < 0 { -(Errno::last() as i32) } else { r as i32 };
        if ans.write_all(&r.to_le_bytes()).is_err() || r < 0 {
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(127) };
        }
    }
    drop(req);
    drop(ans);
    detach_stdio_and_fds();
    reap_until(root)
}

/// The namespace gets a /proc showing its own pids; where the kernel refuses
/// (a /proc with locked submounts), the restored process sees the host's.
fn mount_proc() {
    let none = c"none";
    let root = c"/";
    let proc_ = c"proc";
    let target = c"/proc";
    // SAFETY: all pointers are valid NUL-terminated strings or null.
    unsafe {
        libc::mount(none.as_ptr(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null());
        libc::mount(proc_.as_ptr(), target.as_ptr(), proc_.as_ptr(), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, std::ptr::null());
    }
}

/// init must not keep cryo's stdout, a terminal or any other fd cryo
/// inherited open on behalf of the tree.
fn detach_stdio_and_fds() {
    // SAFETY: closes only fds this process owns and no longer uses.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let null = c"/dev/null";
    // SAFETY: valid path; dup2 onto our own std fds.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for std in 0..3 {
                libc::dup2(fd, std);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

fn reap_until(root: i32) -> ! {
    loop {
        let mut st = 0;
        // SAFETY: valid out-pointer.
        let p = unsafe { libc::waitpid(-1, &mut st, 0) };
        if p < 0 && Errno::last() == Errno::ECHILD {
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(0) };
        }
        if p == root && root > 0 {
            let code = if libc::WIFEXITED(st) { libc::WEXITSTATUS(st) } else { 128 + libc::WTERMSIG(st) };
            // SAFETY: as above.
            unsafe { libc::_exit(code) };
        }
    }
}

