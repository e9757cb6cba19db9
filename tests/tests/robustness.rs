//! cryo interrupted, the target signalled or gone mid-checkpoint, a full disk,
//! and many checkpoint/restart cycles in a row: the target is never harmed.

use cryo_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

const SECS20: Duration = Duration::from_secs(20);

/// Wait until cryo has let go of `pid` (its worker may still be undoing).
fn wait_untraced(pid: i32, context: &str) {
    wait_until(SECS20, || tracer_pid(pid) == Some(0), || format!("{context}: pid {pid} still traced by {:?}", tracer_pid(pid)));
}

/// No complete image and no partial directory, or a complete image. (A
/// checkpoint that lets the target go on writes the rest of its image after
/// releasing it: its worker may still be finishing or undoing that.)
fn image_complete_or_absent(img: &Path, context: &str) -> bool {
    let parent = img.parent().unwrap();
    let start = Instant::now();
    loop {
        let partial = partial_images(parent);
        if partial.is_empty() {
            break;
        }
        assert!(start.elapsed() < SECS20, "{context}: partial images left: {partial:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    if !img.exists() {
        return false;
    }
    assert!(img.join("inventory.cryo").exists(), "{context}: {} exists but is not a complete image", img.display());
    true
}

/// A `--direct` checkpoint of `pid` into `img`, held `ms` in its pages stage
/// once its parasite is in the target: a test acts on the target meanwhile.
fn checkpoint_held_in_pages(h: &Harness, pid: i32, img: &std::path::Path, ms: u32) -> Proc {
    let mut cryo = h.cryo_spawn_env(
        &["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap(), "--direct"],
        &[("CRYO_PAUSE", &format!("pages:{ms}"))],
        std::process::Stdio::null(),
    );
    wait_parasite(pid, &mut cryo);
    cryo
}

/// The parasite is in place: the checkpoint is past the freeze and inside the target.
fn wait_parasite(pid: i32, cryo: &mut Proc) {
    wait_until(
        SECS20,
        || {
            assert!(cryo.running(), "cryo ended before its parasite was seen:\n{}", cryo.stderr_text());
            read_maps(pid).contains("memfd:cryo")
        },
        || "the parasite never appeared".into(),
    );
}

/// A target for the `kill -9` tests: the heap workload (64 MiB, 30 ms between
/// steps), with as many steps as the killed checkpoints need to end before
/// it does, even on a slow machine.
struct KillTarget {
    p: Proc,
    log: Log,
    steps: &'static str,
    reference: String,
    before: String,
}

impl KillTarget {
    fn start(h: &Harness, steps: &'static str) -> KillTarget {
        let heap = h.compile("heap");
        let reference = h.reference_log(heap.to_str().unwrap(), &[steps, "0", "64"], SECS20 * 6);
        let (p, log) = Self::spawn(h, steps, 0);
        let before = outside_view(p.pid());
        KillTarget { p, log, steps, reference, before }
    }

    fn spawn(h: &Harness, steps: &str, n: usize) -> (Proc, Log) {
        let heap = h.compile("heap");
        let name = format!("heap{n}.log");
        let (p, _out) = h.spawn(&[heap.to_str().unwrap(), &name, steps, "30", "64"], &format!("heap{n}.out"));
        let log = Log::new(h.path(&name));
        log.wait_prefix("step 2 ", SECS20);
        (p, log)
    }

    /// A new target in place of this one.
    fn replace(&mut self, h: &Harness, n: usize) {
        send_signal(self.p.pid(), libc::SIGKILL);
        self.p.wait_exit(SECS20);
        (self.p, self.log) = Self::spawn(h, self.steps, n);
        self.before = outside_view(self.p.pid());
    }

    /// `cryo checkpoint ARGS` with `env`, SIGKILLed after `delay`: the target
    /// runs on, untraced, without the parasite, with the same maps, fds and
    /// masks (but for write tracking that `--track` leaves on success), and
    /// the image is complete (true) or absent.
    fn kill_checkpoint(&mut self, h: &Harness, img: &Path, args: &[&str], env: &[(&str, &str)], delay: Duration, context: &str) -> bool {
        let pid = self.p.pid();
        let pid_s = pid.to_string();
        let mut argv = vec!["checkpoint", &pid_s, "-o", img.to_str().unwrap()];
        argv.extend_from_slice(args);
        let mut cryo = h.cryo_spawn_env(&argv, env, std::process::Stdio::null());
        std::thread::sleep(delay);
        // cryo's worker (see cli/src/guard.rs), once it exists, undoes what it
        // did after its parent is gone, and may freeze the target once more to
        // take write tracking away: its end is the checkpoint's.
        let workers = children(cryo.pid());
        send_signal(cryo.pid(), libc::SIGKILL);
        cryo.wait_exit(SECS20);
        wait_until(SECS20, || workers.iter().all(|&w| !pid_alive(w)), || format!("{context}: cryo's worker {workers:?} still runs"));
        wait_untraced(pid, context);
        assert!(self.p.running(), "{context}: the target died");
        assert!(!matches!(proc_state(pid), Some('t' | 'T')), "{context}: the target was left stopped");
        let complete = image_complete_or_absent(img, context);
        if !(complete && args.contains(&"--track")) {
            assert_text_eq(&outside_view(pid), &self.before, context);
        }
        complete
    }

    /// The target ends well, its checksummed log proving its memory intact.
    fn finish(mut self, what: &str) {
        let pid = self.p.pid();
        let st = self.p.wait_exit(Duration::from_secs(120));
        assert!(st.success(), "heap exited with {}\n{}", describe_status(st), self.log.text());
        assert_text_eq(&self.log.text(), &heap_expected(&self.reference, pid), what);
    }
}

/// `kill -9` of `cryo checkpoint` at random moments.
#[test]
fn sigkill_of_cryo_at_random_moments() {
    let h = Harness::with_cryo("kill9");
    // 18 s of sleeps at least: 25 checkpoints killed within 0.12 s end before.
    let mut t = KillTarget::start(&h, "600");
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut completed = 0;
    let mut delays = Vec::new();
    for i in 0..25 {
        let delay = Duration::from_micros(next(120_000));
        delays.push(delay.as_micros());
        let context = format!("kill -9 of cryo after {delay:?} (iteration {i}, delays so far {delays:?})");
        if t.kill_checkpoint(&h, &h.path(&format!("img{i}")), &[], &[], delay, &context) {
            completed += 1;
        }
    }
    eprintln!("{completed} of 25 checkpoints completed before the kill; delays (us) {delays:?}");
    t.finish("heap log after 25 killed checkpoints");
}

/// `kill -9` of `cryo checkpoint` held at each stage in turn, in each mode.
/// A stage that a mode never reaches gives a complete image instead.
#[test]
fn sigkill_of_cryo_at_each_stage() {
    let h = Harness::with_cryo("kill9-stages");
    // A fresh target for each mode, 45 s of sleeps at least: a mode's 16
    // checkpoints take about 2 s each.
    let mut t = KillTarget::start(&h, "1500");
    let stages = [
        "seize", "regs", "parasite-load", "parasite-cmd@1", "parasite-cmd@3", "page-pipes", "syscall@2", "syscall@12",
        "pages", "snapshot-fork", "snapshot-fds", "snapshot-pages", "tracking", "image-write", "cure", "detach",
    ];
    // A pre-copy's stages in its first pass, between the passes, and in its
    // final pass (@2).
    let precopy_stages = ["seize", "tracking", "precopy", "seize@2", "tracking@2", "pages", "image-write@2", "cure@2", "detach@2"];
    let modes: [&[&str]; 4] = [&[], &["--direct"], &["--track"], &["--precopy"]];
    let mut i = 0;
    for (m, mode) in modes.into_iter().enumerate() {
        if m > 0 {
            t.replace(&h, i);
        }
        let stages: &[&str] = if mode.contains(&"--precopy") { &precopy_stages } else { &stages };
        for &stage in stages {
            let context = format!("kill -9 of cryo checkpoint {mode:?} paused at {stage}");
            let pause = format!("{stage}:1500");
            let complete = t.kill_checkpoint(&h, &h.path(&format!("img{i}")), mode, &[("CRYO_PAUSE", &pause)], Duration::from_millis(400), &context);
            i += 1;
            if complete && mode.contains(&"--track") {
                t.replace(&h, i);
            }
        }
    }
    t.finish("heap log after checkpoints killed at each stage");
}

/// `kill -9` of `cryo checkpoint` while several processes of a tree are held
/// at the same stage on helper threads (memory written while stopped, and
/// from the snapshots after the release): every process is let go as it was.
#[test]
fn sigkill_of_cryo_while_a_tree_is_dumped_in_parallel() {
    let h = Harness::with_cryo("kill9-parallel");
    // 40 s at least: each round holds cryo up to 1.5 s and checks the
    // heaps for a second each.
    let t = HeapTree::start(&h, 3, "1000", "40", "16");
    let root = t.shell.pid().to_string();
    for (mode, stage) in [("--direct", "pages"), ("", "snapshot-pages"), ("", "snapshot-fork")] {
        let context = format!("kill -9 of cryo checkpoint {mode} with processes held at {stage}");
        let img = h.path(&format!("img-{stage}{mode}"));
        let mut args = vec!["checkpoint", &root, "-o", img.to_str().unwrap(), "--jobs", "3"];
        args.extend(Some(mode).filter(|m| !m.is_empty()));
        let pause = format!("{stage}:1500");
        let mut cryo = h.cryo_spawn_env(&args, &[("CRYO_PAUSE", &pause)], std::process::Stdio::null());
        std::thread::sleep(Duration::from_millis(400));
        send_signal(cryo.pid(), libc::SIGKILL);
        cryo.wait_exit(SECS20);
        for pid in t.pids() {
            wait_untraced(pid, &context);
        }
        image_complete_or_absent(&img, &context);
        t.assert_untouched(&h, &context);
    }
}

/// `kill -9` of `cryo checkpoint` while the target holds both ends of the page
/// pipes, just before cryo closes the ends it took for itself: its worker
/// still closes them, though it was told to stop.
#[test]
fn sigkill_of_cryo_between_making_and_closing_page_pipes() {
    let h = Harness::with_cryo("kill9-pipes");
    let (mut p, log) = signals_workload(&h);
    let pid = p.pid();
    let before = outside_view(pid);
    let pipes = || fd_links(pid).iter().filter(|l| l.starts_with("pipe:")).count();
    assert_eq!(pipes(), 0, "the workload holds pipes of its own");
    let img = h.path("img");
    let mut cryo = h.cryo_spawn_env(
        &["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap()],
        &[("CRYO_PAUSE", "page-pipes:1500")],
        std::process::Stdio::null(),
    );
    wait_until(SECS20, || pipes() == 4, || format!("the target never held the page pipes: {:?}", fd_links(pid)));
    send_signal(cryo.pid(), libc::SIGKILL);
    cryo.wait_exit(SECS20);
    wait_untraced(pid, "kill -9 of cryo holding page pipes");
    assert!(p.running(), "the target died");
    assert_text_eq(&outside_view(pid), &before, "the target after kill -9 of cryo holding page pipes");
    image_complete_or_absent(&img, "kill -9 of cryo holding page pipes");
    let ticks = log.line_count();
    log.wait_prefix(&format!("tick {}", ticks + 2), SECS20);
}

fn signals_workload(h: &Harness) -> (Proc, Log) {
    let prog = h.compile("signals");
    let (p, _) = h.spawn(&[prog.to_str().unwrap(), "sig.log"], "sig.out");
    let log = Log::new(h.path("sig.log"));
    log.wait_prefix("tick 5", SECS20);
    (p, log)
}

/// Signals sent while cryo has the target stopped, with the parasite inside
/// (--direct: a low-freeze checkpoint writes pages after letting it go),
/// arrive once each after the checkpoint, with their siginfo (SI_USER from the
/// sender) intact; a SIGSTOP leaves the target stopped, as it asked.
#[test]
fn signals_during_checkpoint_arrive_after_it() {
    let h = Harness::with_cryo("sig-during");
    let (p, log) = signals_workload(&h);
    let pid = p.pid();
    let img = h.path("img");
    let mut cryo = checkpoint_held_in_pages(&h, pid, &img, 1500);
    let me = std::process::id() as i32;
    for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGCHLD] {
        send_signal(pid, sig);
    }
    let during = log.line_count();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(log.line_count(), during, "the target ran during the checkpoint:\n{}", log.text());
    assert!(cryo.wait_exit(SECS20).success(), "{}", cryo.stderr_text());
    log.wait_growth(during, 5, SECS20);
    let lines = log.lines();
    for name in ["TERM", "USR1", "CHLD"] {
        let got: Vec<&String> = lines.iter().filter(|l| l.starts_with(&format!("got {name} "))).collect();
        assert_eq!(got.len(), 1, "SIG{name} delivered once:\n{}", lines.join("\n"));
        assert_eq!(got[0], &format!("got {name} code 0 from {me}"), "SIG{name} kept its siginfo");
    }
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{}", lines.join("\n"));
    assert!(image_complete_or_absent(&img, "after the signals"), "the checkpoint completed");

    // SIGSTOP during a checkpoint: stopped afterwards, and SIGCONT goes on.
    let img2 = h.path("img2");
    let mut cryo = checkpoint_held_in_pages(&h, pid, &img2, 1000);
    send_signal(pid, libc::SIGSTOP);
    assert!(cryo.wait_exit(SECS20).success(), "{}", cryo.stderr_text());
    wait_until(
        Duration::from_secs(5),
        || proc_state(pid) == Some('T'),
        || format!("SIGSTOP sent during the checkpoint was lost: state {:?}", proc_state(pid)),
    );
    let stopped = log.line_count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(log.line_count(), stopped, "the target ran while stopped");
    send_signal(pid, libc::SIGCONT);
    log.wait_for("SIGCONT handled", SECS20, |t| t.contains("got CONT code 0"));
    assert_eq!(tracer_pid(pid), Some(0));
}

/// The target killed while cryo holds it: a clean error, no hang, no image.
#[test]
fn target_killed_during_checkpoint() {
    let h = Harness::with_cryo("killed-during");
    let (mut p, _log) = signals_workload(&h);
    let pid = p.pid();
    let img = h.path("img");
    let mut cryo = checkpoint_held_in_pages(&h, pid, &img, 1000);
    send_signal(pid, libc::SIGKILL);
    let st = cryo.wait_exit(SECS20);
    assert_eq!(st.code(), Some(1), "cryo fails cleanly: {}", cryo.stderr_text());
    let err = cryo.stderr_text();
    assert!(err.contains(&pid.to_string()) && err.contains("exited"), "the error names the process and what happened: {err}");
    p.wait_exit(SECS20);
    assert!(!image_complete_or_absent(&img, "target killed"), "no image of a process that died mid-checkpoint");
}

/// The target execs between cryo's checks and its seize: cryo checkpoints
/// what runs by then or fails cleanly; either way nothing hangs or breaks.
#[test]
fn target_execs_during_checkpoint() {
    let h = Harness::with_cryo("exec-during");
    let script = h.write_file("execer.sh", "trap 'exec sleep 30' USR1\nwhile :; do sleep 0.05; done\n", 0o644);
    let (mut p, _log) = h.spawn(&["bash", script.to_str().unwrap()], "execer.out");
    let pid = p.pid();
    std::thread::sleep(Duration::from_millis(300));
    let img = h.path("img");
    let mut cryo = h.cryo_spawn_env(
        &["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap()],
        &[("CRYO_PAUSE", "seize@1:800")],
        std::process::Stdio::null(),
    );
    std::thread::sleep(Duration::from_millis(200));
    send_signal(pid, libc::SIGUSR1);
    wait_until(SECS20, || !cmdline(pid).starts_with("bash"), || "bash never exec'd sleep".into());
    let st = cryo.wait_exit(SECS20);
    assert!(st.code().is_some(), "cryo crashed: {}", cryo.stderr_text());
    wait_untraced(pid, "after the exec");
    assert!(p.running() && cmdline(pid).starts_with("sleep"), "the exec'd program runs on");
    if st.success() {
        let inv = h.cryo_run(&["inspect", img.to_str().unwrap(), "--json"]);
        inv.assert_ok();
        assert!(inv.stdout.contains("\"sleep\""), "the image is of the program that runs now");
    } else {
        assert!(!image_complete_or_absent(&img, "exec"), "a failed checkpoint leaves no image");
    }
}

/// A full file system: the checkpoint fails naming it, the target is untouched,
/// and nothing is left on the small file system.
#[test]
fn disk_full_fails_cleanly() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (the harness runs cryo as cryo-test)");
        return;
    }
    let h = Harness::with_cryo("disk-full");
    let heap = h.compile("heap");
    let (p, _out) = h.spawn(&[heap.to_str().unwrap(), "heap.log", "100000", "20", "48"], "heap.out");
    let pid = p.pid();
    let log = Log::new(h.path("heap.log"));
    log.wait_prefix("step 2 ", SECS20);
    let small = h.path("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0777", "cryo-test-small", small.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);
    let before = outside_view(pid);
    let img = small.join("img");
    let out = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap(), "--kill"]);
    out.assert_clean_failure().assert_stderr_mentions(&["No space left on device"]);
    assert_running_untouched(pid, &log, 0, "after a checkpoint onto a full disk");
    assert_text_eq(&outside_view(pid), &before, "maps, fds and masks after a full disk");
    let left: Vec<_> = std::fs::read_dir(&small).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "the failed checkpoint left {left:?}");
}

/// Twenty checkpoint/restart cycles of a tree (restart of a restart of ...):
/// its own checks (message sequence, shared counter, reaped children) pass.
#[test]
fn twenty_cycles_of_a_tree() {
    let h = Harness::with_cryo("cycles");
    let prog = h.compile("tree_pipes");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "3000", "10"], "tree.log");
    log.wait_prefix("msg 30 ", SECS20);
    h.checkpoint_kill(&mut p, &h.path("img0"));
    let mut host = h.restart_detached(&h.path("img0"));
    for i in 1..20 {
        log.wait_growth(log.line_count(), 5, SECS20);
        assert!(!log.text().contains("done "), "the tree finished before cycle {i}; give it more work");
        let img = h.path(&format!("img{i}"));
        h.cryo_run(&["checkpoint", &host.to_string(), "-o", img.to_str().unwrap(), "--kill"]).assert_ok();
        let start = Instant::now();
        while pid_alive(host) {
            assert!(start.elapsed() < SECS20, "cycle {i}: the checkpointed tree was not killed");
            std::thread::sleep(Duration::from_millis(5));
        }
        host = h.restart_detached(&img);
    }
    log.wait_prefix("done ", Duration::from_secs(60));
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{}", lines.join("\n"));
    assert_eq!(assert_consecutive(&lines, "msg ", "messages over 20 cycles"), 9000);
    assert_eq!(lines.last().map(String::as_str), Some("done 9000 shared 9000"));
}

/// `kill -9` of `cryo restart` at each stage of rebuilding a tree, up to the
/// last before the release: the processes die with cryo (traced with
/// EXITKILL) and the namespace's init with them, so nothing half-restored
/// runs, not even for a moment.
#[test]
fn sigkill_of_restart_leaves_nothing_running() {
    let h = Harness::with_cryo("kill9-restart");
    let (img, log) = h.killed_tree_image("150");
    let stages = ["restart-shape", "restart-load@2", "restart-memory@2", "restart-fork@2", "restart-fds@3", "restart-state@2", "restart-finish@2", "restart-release"];
    for stage in stages {
        let lines = log.line_count();
        let mut cryo = h.cryo_spawn_env(
            &["restart", img.to_str().unwrap(), "--detach"],
            &[("CRYO_PAUSE", &format!("{stage}:1500"))],
            std::process::Stdio::null(),
        );
        std::thread::sleep(Duration::from_millis(700));
        assert!(cryo.running(), "restart ended before the kill: {}", cryo.stderr_text());
        send_signal(cryo.pid(), libc::SIGKILL);
        cryo.wait_exit(SECS20);
        h.assert_no_leftovers(&[], &format!("kill -9 of cryo restart paused at {stage}"));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(log.line_count(), lines, "the half-restored tree ran ({stage}):\n{}", log.text());
    }
}

/// A restart of a forked tree that runs out of memory (a memory cgroup limit
/// below the tree's memory): cryo warns before it starts, and when the kernel's OOM
/// killer ends a half-restored process, cryo says so, ends the rest of the
/// tree and returns (it once waited forever for the namespace's init, whose
/// exit waited for the killed processes cryo traced).
#[test]
fn restart_out_of_memory_says_so_and_leaves_nothing() {
    assert!(is_root(), "the test needs root to make a memory cgroup for cryo");
    let h = Harness::with_cryo("oom-restart");
    // A parent and three descendants sharing 24 MiB since their forks,
    // each child in a process group of its own: restart cannot fork them
    // from their parent (rebuild::forked), and fills 24 MiB into each.
    let prog = h.compile("forked_heap");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "24", "1000", "20", "groups"], "forked.log");
    log.wait_for("the grandchild's second step", SECS20, |t| t.contains("grandchild step 2 ok"));
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);

    let group = MemoryCgroup::new(&format!("cryo-oom-{}", std::process::id()), 64 << 20);
    let (out, err) = (h.path("restart.out"), h.path("restart.err"));
    let cryo = h.cryo();
    let mut restart = h
        .command(Who::Test, "sh")
        .args(["-c", "read go && exec \"$0\" restart \"$1\" --detach", cryo.to_str().unwrap(), img.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start the restart");
    group.add(restart.id() as i32);
    use std::io::Write;
    restart.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = restart.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = restart.kill();
            panic!("cryo restart still runs after 60 s:\n{}", std::fs::read_to_string(&err).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(!status.success(), "the restart cannot fit in 64 MiB:\n{stderr}");
    assert!(stderr.contains("shared since a fork") && stderr.contains("may run out of memory"), "warned before the restart:\n{stderr}");
    assert!(stderr.contains("out-of-memory killer"), "the error names the OOM killer:\n{stderr}");
    h.assert_no_leftovers(&[], "a restart killed for want of memory");
}

/// A memory cgroup (v1's memory controller, or v2) with a limit, removed on drop.
struct MemoryCgroup {
    dir: std::path::PathBuf,
}

impl MemoryCgroup {
    fn new(name: &str, limit: u64) -> MemoryCgroup {
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let v1 = mine.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.trim_end_matches('/').to_string()));
        let (dir, v2) = match v1 {
            Some(path) => (std::path::PathBuf::from(format!("/sys/fs/cgroup/memory{path}/{name}")), false),
            None => {
                let path = mine.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 path").trim_end_matches('/').to_string();
                (std::path::PathBuf::from(format!("/sys/fs/cgroup{path}/{name}")), true)
            }
        };
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e} (the test needs a memory cgroup it can create)", dir.display()));
        let file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
        std::fs::write(dir.join(file), limit.to_string()).unwrap_or_else(|e| panic!("setting {file} of {}: {e}", dir.display()));
        MemoryCgroup { dir }
    }

    fn add(&self, pid: i32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Whatever a failed test left in it goes first.
        for pid in std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.parse::<i32>().ok()) {
            send_signal(pid, libc::SIGKILL);
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
