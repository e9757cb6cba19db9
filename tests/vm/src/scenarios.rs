//! The end-to-end scenarios: start a workload, `cryo checkpoint --kill` it,
//! `cryo restart` it, and check from its log that it carried on exactly where it
//! stopped.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{sys, workload, TEST_UID};

/// Longest any cryo command may take (TCG emulation is slow).
const CRYO_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for a workload to write the lines a step needs.
const LOG_TIMEOUT: Duration = Duration::from_secs(90);

type Outcome = Result<(), String>;
/// A scenario: runs in its own directory.
type Scenario = fn(&Rig, &Path) -> Outcome;

struct Rig {
    /// Work directory, readable by the test user; holds copies of the binaries.
    work: PathBuf,
    cryo: PathBuf,
    me: PathBuf,
    /// uid/gid to drop to (when root).
    ident: Option<u32>,
}

pub fn run_all() -> usize {
    let rig = match Rig::new() {
        Ok(r) => r,
        Err(e) => {
            println!("cryo-vmtest: FAIL setting up: {e}");
            return 1;
        }
    };
    rig.describe_machine();
    let filter = std::env::var("CRYO_VM_FILTER").unwrap_or_default();
    let cases: &[(&str, Scenario)] = &[
        ("counter-detach", counter_detach),
        ("counter-foreground", counter_foreground),
        ("heap", heap),
        ("stream", stream),
        ("threads", threads),
        ("leave-running", leave_running),
        ("stdin-pipe", stdin_pipe),
        ("files", files),
        ("tree", tree),
        ("pac-keys", pac_keys),
        ("signals", signals),
        ("foreign-arch", foreign_arch),
        ("sve", sve),
        ("in-handler", in_handler),
        ("incremental", incremental),
        ("precopy", precopy),
        ("lazy", lazy),
        ("vdso-redirect", vdso_redirect),
    ];
    let mut failures = 0;
    for (name, case) in cases {
        if !name.contains(filter.as_str()) {
            continue;
        }
        if let Some(why) = not_here(name) {
            println!("cryo-vmtest: SKIP {name}: {why}");
            continue;
        }
        let start = Instant::now();
        let dir = rig.work.join(name);
        let result = rig.mkdir(&dir).and_then(|()| case(&rig, &dir));
        sys::reap_orphans();
        match result {
            Ok(()) => println!("cryo-vmtest: PASS {name} ({:.1} s)", start.elapsed().as_secs_f64()),
            Err(e) => {
                failures += 1;
                println!("cryo-vmtest: FAIL {name} ({:.1} s): {e}", start.elapsed().as_secs_f64());
            }
        }
    }
    if failures == 0 && std::env::var_os("CRYO_VM_KEEP").is_none() {
        let _ = fs::remove_dir_all(&rig.work);
    } else {
        println!("cryo-vmtest: work directory kept: {}", rig.work.display());
    }
    failures
}

/// Why scenario `name` cannot run on this machine, if it cannot.
fn not_here(name: &str) -> Option<&'static str> {
    match name {
        "pac-keys" if !workload::has_pac() => {
            Some("this CPU has no pointer authentication (tests/vm/run.sh aarch64 uses -cpu max, which has it)")
        }
        "sve" if !workload::has_sve() => Some("this CPU has no SVE (tests/vm/run.sh aarch64 uses -cpu max, which has it)"),
        "sve" if workload::sve_vl() <= 16 => Some("the SVE vector length is 128 bits: nothing beyond the FPSIMD registers"),
        "foreign-arch" if !Path::new(WORKLOAD32).exists() => {
            Some("no 32-bit build of cryo-vmtest here (tests/vm/run.sh aarch64 puts one at /workload32)")
        }
        _ => None,
    }
}

/// The ARMv7 build of this program, in the aarch64 VM.
const WORKLOAD32: &str = "/workload32";

impl Rig {
    fn new() -> Result<Rig, String> {
        let root = sys::euid() == 0;
        let ident = root.then_some(TEST_UID);
        let work = std::env::temp_dir().join(format!("cryo-vm.{}", std::process::id()));
        let cryo_src = PathBuf::from(std::env::var_os("CRYO_BIN").unwrap_or_else(|| "/cryo".into()));
        let rig = Rig { cryo: work.join("cryo"), me: work.join("cryo-vmtest"), work, ident };
        rig.mkdir(&rig.work)?;
        let me_src = std::env::current_exe().map_err(|e| format!("finding my own executable: {e}"))?;
        for (src, dst) in [(&cryo_src, &rig.cryo), (&me_src, &rig.me)] {
            fs::copy(src, dst).map_err(|e| format!("copying {} to {}: {e}", src.display(), dst.display()))?;
            fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod {}: {e}", dst.display()))?;
        }
        Ok(rig)
    }

    /// What the results depend on, for the CI log.
    fn describe_machine(&self) {
        let read = |p: &str| fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "-".into());
        println!(
            "cryo-vmtest: kernel {} on {}, page size {}, yama ptrace_scope {}, unprivileged_userns_clone {}, SVE default vector length {}, running as uid {}",
            read("/proc/sys/kernel/osrelease"),
            std::env::consts::ARCH,
            // SAFETY: sysconf takes no pointers.
            unsafe { libc::sysconf(libc::_SC_PAGESIZE) },
            read("/proc/sys/kernel/yama/ptrace_scope"),
            read("/proc/sys/kernel/unprivileged_userns_clone"),
            read("/proc/sys/abi/sve_default_vector_length"),
            self.ident.unwrap_or_else(sys::euid),
        );
    }

    fn mkdir(&self, dir: &Path) -> Result<(), String> {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        if let Some(id) = self.ident {
            sys::chown(dir, id, id).map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// A command run as the test user in `dir`, stdout/stderr to files there.
    fn command(&self, prog: &Path, dir: &Path, out_name: &str) -> Result<Command, String> {
        let mut c = Command::new(prog);
        // Image streams are staged under TMPDIR (the VM has no /var/tmp).
        c.current_dir(dir).env_clear().env("PATH", "/").env("TMPDIR", dir).stdin(Stdio::null());
        if let Ok(v) = std::env::var("CRYO_LOG") {
            c.env("CRYO_LOG", v);
        }
        let out = File::create(dir.join(format!("{out_name}.out"))).map_err(|e| e.to_string())?;
        let err = File::create(dir.join(format!("{out_name}.err"))).map_err(|e| e.to_string())?;
        if let Some(id) = self.ident {
            for f in [format!("{out_name}.out"), format!("{out_name}.err")] {
                sys::chown(&dir.join(f), id, id).map_err(|e| e.to_string())?;
            }
            c.uid(id).gid(id);
        }
        c.stdout(out).stderr(err);
        Ok(c)
    }

    fn workload(&self, dir: &Path, args: &[&str]) -> Result<Child, String> {
        let mut c = self.command(&self.me, dir, "workload")?;
        c.arg("workload").args(args).process_group(0);
        c.spawn().map_err(|e| format!("starting workload {args:?}: {e}"))
    }

    /// Run cryo with `args`; Ok(status) once it exits, with its stderr in errors.
    fn cryo(&self, dir: &Path, args: &[&str]) -> Result<ExitStatus, String> {
        self.cryo_from(dir, args, None)
    }

    /// Run cryo with `args` and stdin from the file `stdin` (in `dir`); its
    /// stdout goes to `cryo-ARGS0.out` there.
    fn cryo_from(&self, dir: &Path, args: &[&str], stdin: Option<&str>) -> Result<ExitStatus, String> {
        self.cryo_env(dir, args, stdin, &[])
    }

    /// [`Rig::cryo_from`] with `env` added to cryo's environment.
    fn cryo_env(&self, dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Result<ExitStatus, String> {
        let name = format!("cryo-{}", args[0]);
        let mut cmd = self.command(&self.cryo, dir, &name)?;
        cmd.envs(env.iter().copied());
        if let Some(f) = stdin {
            cmd.stdin(File::open(dir.join(f)).map_err(|e| format!("opening {f}: {e}"))?);
        }
        let mut child = cmd.args(args).spawn().map_err(|e| format!("starting cryo: {e}"))?;
        let status = wait_child(&mut child, CRYO_TIMEOUT).map_err(|e| format!("cryo {}: {e}{}", args.join(" "), tail(dir, &name)))?;
        Ok(status)
    }

    /// Run cryo with `args` and require success.
    fn cryo_ok(&self, dir: &Path, args: &[&str]) -> Outcome {
        self.cryo_ok_from(dir, args, None)
    }

    /// Run cryo with `args` and stdin from `stdin` (see [`Rig::cryo_from`]), and require success.
    fn cryo_ok_from(&self, dir: &Path, args: &[&str], stdin: Option<&str>) -> Outcome {
        self.cryo_ok_env(dir, args, stdin, &[])
    }

    /// [`Rig::cryo_ok_from`] with `env` added to cryo's environment.
    fn cryo_ok_env(&self, dir: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Outcome {
        let st = self.cryo_env(dir, args, stdin, env)?;
        if !st.success() {
            return Err(format!("cryo {} failed ({st}){}", args.join(" "), tail(dir, &format!("cryo-{}", args[0]))));
        }
        Ok(())
    }
}

/// The last lines cryo printed on stderr, for a failure message.
fn tail(dir: &Path, name: &str) -> String {
    let text = fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n    ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr:\n    {tail}")
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {} s (killed)", timeout.as_secs()));
        }
        sleep(Duration::from_millis(20));
    }
}

fn read_log(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

/// Complete lines of the log (a line being written is left out).
fn lines(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text.split('\n').collect();
    v.pop();
    v
}

/// Is `pid` a live process (not gone, not a zombie)?
fn alive(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Wait until `ready(log text)`; the error names `what` and shows the log's end.
fn wait_log(log: &Path, what: &str, ready: impl Fn(&str) -> bool) -> Outcome {
    wait_log_of(log, what, None, ready)
}

/// As [`wait_log`], failing at once when process `writer` (if given) is gone.
fn wait_log_of(log: &Path, what: &str, writer: Option<i32>, ready: impl Fn(&str) -> bool) -> Outcome {
    let deadline = Instant::now() + LOG_TIMEOUT;
    loop {
        let text = read_log(log);
        if let Some(pid) = writer.filter(|&p| !alive(p)) {
            if !ready(&read_log(log)) {
                return Err(format!("the restored process {pid} died before {what}; log ends: {}", last_lines(&text)));
            }
        }
        if text.lines().any(|l| l.starts_with("ERR")) {
            return Err(format!("the workload reports an error while waiting for {what}: {}", last_lines(&text)));
        }
        if ready(&text) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("no {what} after {} s; log ends: {}", LOG_TIMEOUT.as_secs(), last_lines(&text)));
        }
        sleep(Duration::from_millis(50));
    }
}

fn last_lines(text: &str) -> String {
    let l = lines(text);
    format!("{:?}", &l[l.len().saturating_sub(6)..])
}

/// Checkpoint the running workload with --kill and make sure it is gone.
fn checkpoint_kill(rig: &Rig, dir: &Path, child: &mut Child) -> Outcome {
    checkpoint_kill_to(rig, dir, child, "img")?;
    rig.cryo_ok(dir, &["inspect", "img"])
}

/// `checkpoint --kill -o OUT` (`-`: the stream goes to `cryo-checkpoint.out`).
fn checkpoint_kill_to(rig: &Rig, dir: &Path, child: &mut Child, out: &str) -> Outcome {
    checkpoint_kill_env(rig, dir, child, out, &[])
}

/// [`checkpoint_kill_to`] with `env` added to cryo's environment.
fn checkpoint_kill_env(rig: &Rig, dir: &Path, child: &mut Child, out: &str, env: &[(&str, &str)]) -> Outcome {
    let pid = child.id().to_string();
    let res = rig.cryo_ok_env(dir, &["checkpoint", &pid, "-o", out, "--kill"], None, env);
    if res.is_err() {
        let _ = child.kill();
    }
    let st = wait_child(child, Duration::from_secs(10)).map_err(|e| format!("the checkpointed workload {e}"))?;
    res?;
    if st.signal() != Some(libc::SIGKILL) {
        return Err(format!("after checkpoint --kill the workload ended with {st}, not SIGKILL"));
    }
    Ok(())
}

/// Restart detached; returns the restored root's host pid.
fn restart_detached(rig: &Rig, dir: &Path) -> Result<i32, String> {
    restart_detached_from(rig, dir, "img", None)
}

/// Restart IMAGE (`-`: from the file `stdin`) detached; returns the
/// restored root's host pid.
fn restart_detached_from(rig: &Rig, dir: &Path, image: &str, stdin: Option<&str>) -> Result<i32, String> {
    rig.cryo_ok_from(dir, &["restart", image, "--detach", "--pidfile", "restored.pid"], stdin)?;
    let text = fs::read_to_string(dir.join("restored.pid")).map_err(|e| format!("reading the pidfile: {e}"))?;
    text.trim().parse().map_err(|_| format!("pidfile holds {text:?}, not a pid"))
}

fn stop_restored(pid: i32) {
    sys::kill(pid, libc::SIGKILL);
    sleep(Duration::from_millis(100));
}

/// Lines `0`, `1`, ... `n-1` and nothing else.
fn check_counter(text: &str) -> Outcome {
    for (i, l) in lines(text).iter().enumerate() {
        if *l != i.to_string() {
            return Err(format!("line {i} of the log is {l:?}, expected \"{i}\"; log ends: {}", last_lines(text)));
        }
    }
    Ok(())
}

fn counter_detach(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["counter", "log", "0", "0"])?;
    wait_log(&log, "5 lines", |t| lines(t).len() >= 5)?;
    checkpoint_kill(rig, dir, &mut child)?;
    let at = lines(&read_log(&log)).len();
    let pid = restart_detached(rig, dir)?;
    let res = wait_log_of(&log, "new lines after the restart", Some(pid), |t| lines(t).len() >= at + 5);
    stop_restored(pid);
    res?;
    check_counter(&read_log(&log))
}

/// A restart as on another kernel (the image's vDSO taken for another
/// kernel's): this kernel's vDSO moves aside and the image's jumps to it, so
/// the clocks the workload's libc takes from the vDSO keep answering right.
fn vdso_redirect(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["clocks", "log"])?;
    wait_log(&log, "5 lines", |t| lines(t).len() >= 5)?;
    let vdso = |pid: i32| fs::read_to_string(format!("/proc/{pid}/maps")).ok()?.lines().find(|l| l.ends_with("[vdso]")).map(|l| l.split('-').next().unwrap_or("").to_string());
    let old = vdso(child.id() as i32);
    checkpoint_kill(rig, dir, &mut child)?;
    let at = lines(&read_log(&log)).len();
    let args = ["restart", "img", "--detach", "--pidfile", "restored.pid"];
    let st = rig.cryo_env(dir, &args, None, &[("CRYO_TEST_VDSO_REDIRECT", "1")])?;
    if !st.success() {
        return Err(format!("cryo restart failed ({st}){}", tail(dir, "cryo-restart")));
    }
    let text = fs::read_to_string(dir.join("restored.pid")).map_err(|e| format!("reading the pidfile: {e}"))?;
    let pid: i32 = text.trim().parse().map_err(|_| format!("pidfile holds {text:?}, not a pid"))?;
    let moved = vdso(pid);
    let res = wait_log_of(&log, "new lines after the restart", Some(pid), |t| lines(t).len() >= at + 5);
    stop_restored(pid);
    res?;
    if old.is_none() || moved == old {
        return Err(format!("the vDSO was at {old:?} and is at {moved:?} after the restart: not moved aside"));
    }
    check_counter(&read_log(&log))
}

fn counter_foreground(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["counter", "log", "25", "7"])?;
    wait_log(&log, "5 lines", |t| lines(t).len() >= 5)?;
    checkpoint_kill(rig, dir, &mut child)?;
    let st = rig.cryo(dir, &["restart", "img"])?;
    if st.code() != Some(7) {
        return Err(format!(
            "foreground cryo restart exited with {st}, expected the workload's status 7{}",
            tail(dir, "cryo-restart")
        ));
    }
    let text = read_log(&log);
    check_counter(&text)?;
    match lines(&text).len() {
        25 => Ok(()),
        n => Err(format!("the workload logged {n} lines, expected 25")),
    }
}

fn heap(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["heap", "log", &HEAP_KIB.to_string()])?;
    wait_log(&log, "3 steps", |t| lines(t).len() >= 3)?;
    checkpoint_kill_env(rig, dir, &mut child, "img", &[("CRYO_LOG", "debug")])?;
    read_with_process_vm_readv(dir, HEAP_KIB >> 10)?;
    rig.cryo_ok(dir, &["inspect", "img"])?;
    heap_restarts(&log, || restart_detached(rig, dir))
}

/// The checkpoint's debug log (`cryo-checkpoint.err`) says that at least
/// `mib` MiB of the frozen process were read with process_vm_readv.
fn read_with_process_vm_readv(dir: &Path, mib: usize) -> Outcome {
    let text = fs::read_to_string(dir.join("cryo-checkpoint.err")).map_err(|e| format!("reading cryo's log: {e}"))?;
    let pinned = text.lines().find_map(|l| l.split(": ").nth(1)?.split(" MiB read with process_vm_readv").next()?.parse::<usize>().ok());
    match pinned {
        Some(n) if n >= mib => Ok(()),
        Some(n) => Err(format!("only {n} MiB of the {mib} MiB heap were read with process_vm_readv")),
        None => Err(format!("cryo's log does not say how memory was read{}", tail(dir, "cryo-checkpoint"))),
    }
}

/// The heap workload through an image stream: `checkpoint --kill -o -` into
/// a file, `restart -` from it (which reads the pages from the stream
/// straight into place).
fn stream(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["heap", "log", &HEAP_KIB.to_string()])?;
    wait_log(&log, "3 steps", |t| lines(t).len() >= 3)?;
    checkpoint_kill_to(rig, dir, &mut child, "-")?;
    heap_restarts(&log, || restart_detached_from(rig, dir, "-", Some("cryo-checkpoint.out")))
}

const HEAP_KIB: usize = 4096;

/// Restart `img` of the heap workload and check that it carries on as an
/// uninterrupted run would.
fn heap_restarts(log: &Path, restart: impl FnOnce() -> Result<i32, String>) -> Outcome {
    const KIB: usize = HEAP_KIB;
    let log = log.to_path_buf();
    let at = lines(&read_log(&log)).len();
    let pid = restart()?;
    let res = wait_log_of(&log, "3 steps after the restart", Some(pid), |t| lines(t).len() >= at + 3);
    stop_restored(pid);
    res?;
    let text = read_log(&log);
    let got = lines(&text);
    let want = workload::heap_lines(KIB, got.len() as u64);
    for (s, (g, w)) in got.iter().zip(&want).enumerate() {
        if g != w {
            return Err(format!("step {s} (checkpoint after step {}): logged {g:?}, an uninterrupted run gives {w:?}", at - 1));
        }
    }
    Ok(())
}

/// A tracked low-freeze checkpoint with lz4 compression, then one against it
/// (incremental where the kernel tracks writes, 6.7+; a full one, said so,
/// on older kernels such as the VMs' 6.1) with --kill: the restart through
/// the chain carries on as an uninterrupted run.
fn incremental(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["heap", "log", &HEAP_KIB.to_string()])?;
    wait_log(&log, "3 steps", |t| lines(t).len() >= 3)?;
    let pid = child.id().to_string();
    let first = rig.cryo_ok(dir, &["checkpoint", &pid, "-o", "img0", "--track", "--compress", "lz4"]);
    if first.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        first?;
    }
    let at = lines(&read_log(&log)).len();
    wait_log(&log, "2 more steps", |t| lines(t).len() >= at + 2)?;
    let res = rig.cryo_ok(dir, &["checkpoint", &pid, "-o", "img", "--parent", "img0", "--kill"]);
    if res.is_err() {
        let _ = child.kill();
    }
    let _ = wait_child(&mut child, Duration::from_secs(10));
    res?;
    heap_restarts(&log, || restart_detached(rig, dir))
}

/// `checkpoint --precopy --kill`: memory copied while the workload runs,
/// then what it wrote meanwhile (where the kernel tracks writes, 6.7+; on
/// older kernels, such as the VMs' 6.1, the final pass stores everything,
/// said so, and the copy is dropped): the restart carries on as an
/// uninterrupted run.
fn precopy(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["heap", "log", &HEAP_KIB.to_string()])?;
    wait_log(&log, "3 steps", |t| lines(t).len() >= 3)?;
    let pid = child.id().to_string();
    let res = rig.cryo_ok(dir, &["checkpoint", &pid, "-o", "img", "--precopy", "--kill"]);
    if res.is_err() {
        let _ = child.kill();
    }
    let _ = wait_child(&mut child, Duration::from_secs(10));
    res?;
    let leftovers: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("precopy"))
        .collect();
    if !leftovers.is_empty() {
        return Err(format!("the pre-copy left {leftovers:?} beside the image"));
    }
    heap_restarts(&log, || restart_detached(rig, dir))
}

/// The heap workload restarted with `--lazy`: its heap is filled after it
/// runs (userfaultfd, its syscalls traced meanwhile); it carries on as an
/// uninterrupted run.
fn lazy(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["heap", "log", &HEAP_KIB.to_string()])?;
    wait_log(&log, "3 steps", |t| lines(t).len() >= 3)?;
    checkpoint_kill(rig, dir, &mut child)?;
    heap_restarts(&log, || {
        rig.cryo_ok(dir, &["restart", "img", "--lazy", "--detach", "--pidfile", "restored.pid"])?;
        let text = fs::read_to_string(dir.join("restored.pid")).map_err(|e| format!("reading the pidfile: {e}"))?;
        text.trim().parse().map_err(|_| format!("pidfile holds {text:?}, not a pid"))
    })
}

/// Per key (`T0`, `M`, `P`, ...) the numbers logged, in order.
fn by_key(text: &str) -> Result<BTreeMap<String, Vec<u64>>, String> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for l in lines(text) {
        let (k, v) = l.split_once(' ').ok_or_else(|| format!("odd log line {l:?}"))?;
        if k == "ERR" {
            return Err(format!("the workload reports: {l}"));
        }
        let v = v.parse().map_err(|_| format!("odd log line {l:?}"))?;
        m.entry(k.to_string()).or_default().push(v);
    }
    Ok(m)
}

fn threads(rig: &Rig, dir: &Path) -> Outcome {
    const WORKERS: usize = 3;
    let keys = 1 + 1 + WORKERS; // M, P, T0..
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["threads", "log", &WORKERS.to_string()])?;
    let enough = |t: &str, base: &BTreeMap<String, Vec<u64>>, more: usize| {
        by_key(t).is_ok_and(|m| m.len() == keys && m.iter().all(|(k, v)| v.len() >= base.get(k).map_or(0, Vec::len) + more))
    };
    wait_log(&log, "2 lines from every thread", |t| enough(t, &BTreeMap::new(), 2))?;
    checkpoint_kill(rig, dir, &mut child)?;
    check_core(rig, dir, 1 + WORKERS + 2)?;
    let base = by_key(&read_log(&log))?;
    let pid = restart_detached(rig, dir)?;
    let res = wait_log_of(&log, "2 more lines from every thread after the restart", Some(pid), |t| enough(t, &base, 2));
    stop_restored(pid);
    res?;
    for (k, v) in by_key(&read_log(&log))? {
        if let Some(i) = v.iter().enumerate().position(|(i, &n)| n != i as u64) {
            return Err(format!("{k}'s lines are not consecutive at index {i}: {:?}", &v[i.saturating_sub(3)..(i + 3).min(v.len())]));
        }
    }
    Ok(())
}

/// Checkpoint without --kill: the workload must carry on untouched; the image
/// restarts after the original is gone.
fn leave_running(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["counter", "log", "0", "0"])?;
    wait_log(&log, "5 lines", |t| lines(t).len() >= 5)?;
    let pid = child.id().to_string();
    let res = rig.cryo_ok(dir, &["checkpoint", &pid, "-o", "img"]);
    if let Err(e) = res {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let at = lines(&read_log(&log)).len();
    let res = wait_log(&log, "new lines after the checkpoint", |t| lines(t).len() >= at + 5);
    let _ = child.kill();
    let _ = child.wait();
    res?;
    check_counter(&read_log(&log))?;
    rig.cryo_ok(dir, &["inspect", "img"])?;
    let pid = restart_detached(rig, dir)?;
    // The restored copy rewrites the lines from its checkpointed offset on: the
    // log stays consecutive and grows past what the original wrote.
    let grown = lines(&read_log(&log)).len();
    let res = wait_log_of(&log, "new lines from the restored copy", Some(pid), |t| lines(t).len() >= grown + 3);
    stop_restored(pid);
    res?;
    check_counter(&read_log(&log))
}

/// A workload blocked in read(2) on a pipe from outside: after the restart the
/// pipe is `cryo restart`'s stdin, the read carries on, end of input ends it.
fn stdin_pipe(rig: &Rig, dir: &Path) -> Outcome {
    use std::io::Write;
    let log = dir.join("log");
    let mut c = rig.command(&rig.me, dir, "workload")?;
    c.args(["workload", "echo", "log"]).stdin(Stdio::piped()).process_group(0);
    let mut child = c.spawn().map_err(|e| format!("starting the echo workload: {e}"))?;
    let mut input = child.stdin.take().expect("piped stdin");
    for (i, text) in ["a\n", "bb\n"].iter().enumerate() {
        input.write_all(text.as_bytes()).map_err(|e| format!("writing to the workload: {e}"))?;
        wait_log(&log, &format!("line {i}"), |t| lines(t).len() > i)?;
    }
    sleep(Duration::from_millis(100)); // back in read(2)
    checkpoint_kill(rig, dir, &mut child)?;
    drop(input);
    let mut c = rig.command(&rig.cryo, dir, "cryo-restart")?;
    c.args(["restart", "img"]).stdin(Stdio::piped());
    let mut restart = c.spawn().map_err(|e| format!("starting cryo restart: {e}"))?;
    let mut input = restart.stdin.take().expect("piped stdin");
    let fed = input.write_all(b"ccc\n").map_err(|e| format!("writing to cryo restart's stdin: {e}"));
    let res = fed.and_then(|()| wait_log(&log, "a line for input given after the restart", |t| lines(t).len() >= 3));
    drop(input);
    let st = wait_child(&mut restart, CRYO_TIMEOUT).map_err(|e| format!("cryo restart {e}{}", tail(dir, "cryo-restart")))?;
    res?;
    if !st.success() {
        return Err(format!("cryo restart exited with {st} after end of input, expected 0{}", tail(dir, "cryo-restart")));
    }
    let text = read_log(&log);
    if lines(&text) != ["0 2", "1 3", "2 4"] {
        return Err(format!("the echo workload logged {:?}, expected [\"0 2\", \"1 3\", \"2 4\"]", lines(&text)));
    }
    Ok(())
}

fn files(rig: &Rig, dir: &Path) -> Outcome {
    let data: Vec<u8> = (0..64 * 1024).map(workload::data_byte).collect();
    fs::write(dir.join("data"), &data).map_err(|e| format!("writing the data file: {e}"))?;
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["files", "log", "data"])?;
    wait_log(&log, "4 chunks", |t| lines(t).len() >= 4)?;
    checkpoint_kill(rig, dir, &mut child)?;
    let at = lines(&read_log(&log)).len();
    let pid = restart_detached(rig, dir)?;
    let res = wait_log_of(&log, "4 chunks after the restart", Some(pid), |t| lines(t).len() >= at + 4);
    stop_restored(pid);
    res?;
    for (k, l) in lines(&read_log(&log)).iter().enumerate() {
        let hex: String = data[16 * k..16 * k + 16].iter().map(|b| format!("{b:02x}")).collect();
        if *l != format!("{k} {hex}") {
            return Err(format!("chunk {k} (checkpoint after {at} chunks): logged {l:?}, the file holds {hex}"));
        }
    }
    Ok(())
}

/// Kill a restored tree: every process in the restored root's process group.
fn stop_restored_tree(pid: i32) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let pgrp = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(2)?.parse::<i32>().ok());
    if let Some(g) = pgrp.filter(|&g| g > 1) {
        sys::kill(-g, libc::SIGKILL);
    }
    stop_restored(pid);
}

/// A parent with forked children: pipes with bytes in flight, a shared
/// anonymous page, pids kept (the children's lines carry their getpid()).
fn tree(rig: &Rig, dir: &Path) -> Outcome {
    const CHILDREN: usize = 3;
    let keys = 1 + CHILDREN; // M, C0..; Z comes at the end
    let log = dir.join("log");
    // Not in a process group of its own: the workload makes itself a session leader.
    let mut c = rig.command(&rig.me, dir, "workload")?;
    c.args(["workload", "tree", "log", &CHILDREN.to_string()]);
    let mut child = c.spawn().map_err(|e| format!("starting the tree workload: {e}"))?;
    let enough = |t: &str, base: &BTreeMap<String, Vec<u64>>, more: usize| {
        by_key(t).is_ok_and(|m| m.len() == keys && m.iter().all(|(k, v)| v.len() >= base.get(k).map_or(0, Vec::len) + more))
    };
    let res = wait_log(&log, "2 lines from every process", |t| enough(t, &BTreeMap::new(), 2));
    if res.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return res;
    }
    checkpoint_kill(rig, dir, &mut child)?;
    let base = by_key(&read_log(&log))?;
    let pid = restart_detached(rig, dir)?;
    let res = wait_log_of(&log, "2 more lines from every process after the restart", Some(pid), |t| enough(t, &base, 2));
    // The zombie came back with its exit status: the parent reaps it now.
    let res = res.and_then(|()| {
        fs::write(dir.join("reap"), "").map_err(|e| format!("creating {}/reap: {e}", dir.display()))?;
        wait_log_of(&log, "the zombie's exit status", Some(pid), |t| lines(t).iter().any(|l| l.starts_with("Z ")))
    });
    stop_restored_tree(pid);
    res?;
    if !lines(&read_log(&log)).contains(&"Z 42") {
        return Err(format!("the parent reaped its zombie child with {:?}, expected \"Z 42\"", lines(&read_log(&log)).into_iter().find(|l| l.starts_with("Z "))));
    }
    for (k, v) in by_key(&read_log(&log))?.into_iter().filter(|(k, _)| k != "Z") {
        if let Some(i) = v.iter().enumerate().position(|(i, &n)| n != i as u64) {
            return Err(format!("{k}'s lines are not consecutive at index {i}: {:?}", &v[i.saturating_sub(3)..(i + 3).min(v.len())]));
        }
    }
    Ok(())
}

/// Pointer-authentication keys come back with the process (aarch64 CPUs that
/// have them; elsewhere the scenario says why it did not run).
fn pac_keys(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["pac", "log"])?;
    wait_log(&log, "3 lines", |t| lines(t).len() >= 3)?;
    checkpoint_kill(rig, dir, &mut child)?;
    let at = lines(&read_log(&log)).len();
    let pid = restart_detached(rig, dir)?;
    let res = wait_log_of(&log, "3 lines after the restart", Some(pid), |t| lines(t).len() >= at + 3);
    stop_restored(pid);
    res?;
    let text = read_log(&log);
    let all = lines(&text);
    let sig = |l: &str| l.split_once(' ').map(|(_, s)| s.to_string());
    if all.iter().any(|l| sig(l) != sig(all[0])) {
        return Err(format!("the signatures changed across the restart: {:?}", &all[at.saturating_sub(2)..(at + 2).min(all.len())]));
    }
    Ok(())
}

/// Signal handlers, the blocked mask and a pending signal survive; handlers run
/// (signal frames and sigreturn) in the restored process.
fn signals(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["signals", "log"])?;
    wait_log(&log, "3 lines", |t| lines(t).len() >= 3)?;
    sys::kill(child.id() as i32, libc::SIGUSR2);
    sleep(Duration::from_millis(200));
    if read_log(&log).contains("usr2") {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the workload ran its SIGUSR2 handler although SIGUSR2 was blocked".into());
    }
    checkpoint_kill(rig, dir, &mut child)?;
    let pid = restart_detached(rig, dir)?;
    let at = lines(&read_log(&log)).len();
    let res = wait_log_of(&log, "2 lines after the restart", Some(pid), |t| lines(t).len() >= at + 2);
    if res.is_ok() && read_log(&log).contains("usr") {
        stop_restored(pid);
        return Err(format!("a handler ran before SIGUSR1 was sent: {}", last_lines(&read_log(&log))));
    }
    sys::kill(pid, libc::SIGUSR1);
    let res = res.and_then(|()| {
        wait_log_of(&log, "usr1 and then usr2 (the pending signal)", Some(pid), |t| {
            let l = lines(t);
            l.iter().position(|&x| x == "usr1").is_some_and(|i| l[i..].contains(&"usr2"))
        })
    });
    let res = res.and_then(|()| wait_log_of(&log, "steps after the handlers", Some(pid), |t| lines(t).last().is_some_and(|l| l.parse::<u64>().is_ok())));
    stop_restored(pid);
    res?;
    let text = read_log(&log);
    let steps: Vec<&str> = lines(&text).into_iter().filter(|l| !l.starts_with("usr")).collect();
    check_counter(&(steps.join("\n") + "\n"))
}

/// `cryo core` of the image: an ELF core of this CPU (class, e_machine) whose
/// notes hold one NT_PRSTATUS per thread, each followed by the thread's other
/// register sets (FP/SIMD, TLS). gdb is not in the VM; x86_64's suite checks
/// what gdb makes of cores.
fn check_core(rig: &Rig, dir: &Path, threads: usize) -> Outcome {
    rig.cryo_ok(dir, &["core", "img", "-o", "core"])?;
    let core = fs::read(dir.join("core")).map_err(|e| format!("reading the core: {e}"))?;
    let bad = |what: &str| Err(format!("cryo core wrote a bad core: {what}"));
    if core.len() < 64 || &core[..4] != b"\x7fELF" {
        return bad("no ELF header");
    }
    let is64 = core[4] == 2;
    let u16_at = |o: usize| u16::from_le_bytes([core[o], core[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(core[o..o + 4].try_into().unwrap());
    let word_at = |o: usize| if is64 { u64::from_le_bytes(core[o..o + 8].try_into().unwrap()) } else { u32_at(o) as u64 } as usize;
    let (machine, want64, fp_note) = match std::env::consts::ARCH {
        "aarch64" => (183, true, 2),
        "arm" => (40, false, 0x400),
        _ => (62, true, 2),
    };
    if u16_at(16) != 4 || u16_at(18) != machine || is64 != want64 {
        return bad(&format!("e_type {} e_machine {} ELF{}", u16_at(16), u16_at(18), if is64 { 64 } else { 32 }));
    }
    let (phoff, phentsize, phnum) = if is64 { (word_at(32), u16_at(54), u16_at(56)) } else { (word_at(28), u16_at(42), u16_at(44)) };
    let mut notes = Vec::new();
    for i in 0..phnum as usize {
        let ph = phoff + i * phentsize as usize;
        if u32_at(ph) != 4 {
            continue; // not PT_NOTE
        }
        let (off, size) = if is64 { (word_at(ph + 8), word_at(ph + 32)) } else { (word_at(ph + 4), word_at(ph + 16)) };
        let mut at = off;
        while at + 12 <= off + size && off + size <= core.len() {
            let (namesz, descsz, ty) = (u32_at(at) as usize, u32_at(at + 4) as usize, u32_at(at + 8));
            notes.push(ty);
            at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    let count = |t: u32| notes.iter().filter(|&&n| n == t).count();
    if count(1) != threads {
        return bad(&format!("{} NT_PRSTATUS notes for {threads} threads", count(1)));
    }
    if count(fp_note) != threads {
        return bad(&format!("{} FP register notes ({fp_note:#x}) for {threads} threads", count(fp_note)));
    }
    if std::env::consts::ARCH != "x86_64" && count(0x401) != threads {
        return bad(&format!("{} NT_ARM_TLS notes for {threads} threads", count(0x401)));
    }
    Ok(())
}

/// A 32-bit process on the 64-bit kernel, checkpointed by the 64-bit cryo: a
/// clear refusal, and the process runs on untouched.
fn foreign_arch(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut c = rig.command(Path::new(WORKLOAD32), dir, "workload")?;
    c.args(["workload", "counter", "log", "0", "0"]).process_group(0);
    let mut child = c.spawn().map_err(|e| format!("starting the 32-bit workload: {e}"))?;
    let result = (|| {
        wait_log(&log, "3 lines", |t| lines(t).len() >= 3)?;
        let st = rig.cryo(dir, &["checkpoint", &child.id().to_string(), "-o", "img", "--kill"])?;
        let err = fs::read_to_string(dir.join("cryo-checkpoint.err")).unwrap_or_default();
        if st.code() != Some(1) || !err.contains("another architecture") || err.lines().count() != 1 {
            return Err(format!("cryo checkpoint of a 32-bit process: {st}, stderr {err:?}; expected status 1 and one line naming the other architecture"));
        }
        let at = lines(&read_log(&log)).len();
        wait_log(&log, "lines after the refused checkpoint", |t| lines(t).len() >= at + 3)?;
        check_counter(&read_log(&log))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Live SVE registers (beyond the FPSIMD view) survive a checkpoint that
/// leaves the process running and a restart.
fn sve(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["sve", "log"])?;
    let result = (|| {
        wait_log(&log, "2 rounds", |t| lines(t).len() >= 2)?;
        rig.cryo_ok(dir, &["checkpoint", &child.id().to_string(), "-o", "img"])?;
        let at = lines(&read_log(&log)).len();
        wait_log(&log, "2 rounds after the checkpoint", |t| lines(t).len() >= at + 2)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result?;
    let pid = restart_detached(rig, dir)?;
    let grown = lines(&read_log(&log)).len();
    let res = wait_log_of(&log, "2 rounds from the restored copy", Some(pid), |t| lines(t).len() >= grown + 2);
    stop_restored(pid);
    res?;
    check_counter(&read_log(&log))
}

/// A checkpoint taken while a signal handler runs: after the restart the
/// handler finishes and returns through its signal frame to the main loop.
fn in_handler(rig: &Rig, dir: &Path) -> Outcome {
    let log = dir.join("log");
    let mut child = rig.workload(dir, &["inhandler", "log"])?;
    wait_log(&log, "3 steps", |t| lines(t).len() >= 3)?;
    sys::kill(child.id() as i32, libc::SIGUSR1);
    wait_log(&log, "the handler's first lines", |t| lines(t).iter().filter(|l| l.starts_with("h ")).count() >= 3)?;
    checkpoint_kill(rig, dir, &mut child)?;
    let text = read_log(&log);
    if lines(&text).iter().filter(|l| l.starts_with("h ")).count() >= 12 {
        return Err("the handler had finished before the checkpoint; the scenario needs it caught inside".into());
    }
    let pid = restart_detached(rig, dir)?;
    let res = wait_log_of(&log, "the handler's end and 3 more steps", Some(pid), |t| {
        let l = lines(t);
        l.iter().position(|&x| x == "h 11").is_some_and(|i| l[i..].iter().filter(|x| x.starts_with("m ")).count() >= 3)
    });
    stop_restored(pid);
    res?;
    let m = by_key(&read_log(&log))?;
    for (k, v) in &m {
        if let Some(i) = v.iter().enumerate().position(|(i, &n)| n != i as u64) {
            return Err(format!("{k}'s lines are not consecutive at index {i}: {:?}", &v[i.saturating_sub(3)..(i + 3).min(v.len())]));
        }
    }
    match m.get("h").map(Vec::len) {
        Some(12) => Ok(()),
        n => Err(format!("the handler logged {n:?} lines, expected 12 (it ran once)")),
    }
}
