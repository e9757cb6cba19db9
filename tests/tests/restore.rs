//! Checkpoint/restart of single programs (issue 2, first milestone).
//!
//! Each test checkpoints a running workload with `--kill`, restarts it, and checks from
//! the workload's own log that it carried on exactly where it stopped.

use cryo_tests::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const SECS20: Duration = Duration::from_secs(20);

/// 64 MiB heap mutated step by step: checkpoint --kill, restart --detach; the log must
/// be byte-for-byte the uninterrupted reference run's (except the pid, which must stay
/// the original's as seen by the process itself). The log fd is the program's own
/// O_WRONLY|O_CREAT (no O_APPEND) fd, so a wrong file offset garbles it. The image is
/// restarted twice, once each way memory is filled: copied into place by cryo
/// (UFFDIO_COPY, by default), and, as where the kernel has no userfaultfd to give,
/// read by the process with a thread of cryo writing part of it meanwhile.
#[test]
fn heap_checkpoint_kill_restart_detach() {
    let h = Harness::with_cryo("heap");
    let heap = h.compile("heap");
    let heap = heap.to_str().unwrap();
    let steps = "40";
    let reference = h.reference_log(heap, &[steps, "0", "64"], SECS20);
    assert!(
        reference.lines().last().unwrap().starts_with("done pid "),
        "{reference}"
    );

    let (mut p, _out) = h.spawn(&[heap, "heap.log", steps, "150", "64"], "heap.out");
    let pid = p.pid();
    let log = Log::new(h.path("heap.log"));
    log.wait_prefix("step 5 ", SECS20);

    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let at_kill = log.text();
    assert!(
        !at_kill.contains("done"),
        "workload finished before the checkpoint"
    );
    let mib = |out: &CmdOut, suffix: &str| -> Option<u64> {
        out.stderr.lines().find_map(|l| l.split(": ").nth(1)?.strip_suffix(suffix)?.split(' ').next()?.parse().ok())
    };
    for copied in [true, false] {
        // The log as it was at the checkpoint, for the second run.
        std::fs::write(h.path("heap.log"), &at_kill).unwrap();
        let env: &[(&str, &str)] = if copied {
            &[("CRYO_LOG", "debug")]
        } else {
            &[("CRYO_LOG", "debug"), ("CRYO_FAULT", "restart-uffd")]
        };
        let (host, out) = h.restart_detached_env(&img, &[], env);
        if copied {
            // Two threads (one process: a CPU is free), all of the heap.
            let n = mib(&out, " MiB copied into place by 2 threads of cryo")
                .unwrap_or_else(|| panic!("no pages copied into place:\n{}", out.describe()));
            assert!(n >= 60, "{n} MiB copied into place:\n{}", out.describe());
        } else {
            // A thread of cryo fills part of the memory beside the process itself.
            let n = mib(&out, " MiB written by a helper thread").unwrap_or_else(|| panic!("no helper thread:\n{}", out.describe()));
            assert!(n >= 8, "the helper thread wrote {n} MiB:\n{}", out.describe());
            assert!(mib(&out, " MiB copied into place by 2 threads of cryo").is_none(), "{}", out.describe());
        }

        // Its own view of its pid is unchanged; the host's differs (new pid namespace).
        let ns = nspids(host);
        assert_eq!(
            ns.last(),
            Some(&pid),
            "restored process must see itself as pid {pid}; NSpid of host pid {host}: {ns:?}"
        );
        log.wait_prefix("done pid ", SECS20);
        let text = log.text();
        assert!(text.len() > at_kill.len(), "no progress after restart");
        assert_text_eq(
            &text,
            &heap_expected(&reference, pid),
            &format!("heap log after restart (pages copied into place: {copied})"),
        );
        // The program ends after its last step; the next run rewrites its log.
        wait_until(SECS20, || !pid_alive(host), || format!("restored process {host} did not end"));
    }
}

/// A program sleeping in nanosleep (1 s per iteration) keeps counting after restart with
/// no repeat or gap, and never sees EINTR.
#[test]
fn nanosleep_counter_continues() {
    let h = Harness::with_cryo("nanosleep");
    let ticker = h.compile("ticker");
    let (mut p, log) = h.spawn(&[ticker.to_str().unwrap(), "1000", "8", "0"], "ticker.log");
    let pid = p.pid();
    log.wait_prefix("tick 2 ", SECS20);
    // Checkpoint while it is inside nanosleep.
    std::thread::sleep(Duration::from_millis(300));
    h.checkpoint_kill(&mut p, &h.path("img"));
    let before = log.lines().len();
    h.restart_detached(&h.path("img"));
    log.wait_line("exit 0");
    let lines = log.lines();
    assert!(lines.len() > before, "no progress after restart");
    assert_eq!(assert_consecutive(&lines, "tick ", "ticker"), 8);
    for l in &lines[..lines.len() - 1] {
        assert!(
            l.ends_with(&format!(" pid {pid}")),
            "pid changed: {l:?}\n{lines:?}"
        );
    }
    assert_eq!(lines.len(), 9, "{lines:?}");
}

/// A program blocked in read() on a pipe: restart in the foreground, feed it through
/// `cryo restart`'s stdin, close it → the program exits 0 → cryo restart exits 0.
#[test]
fn stdin_pipe_reader_restart_foreground() {
    let h = Harness::with_cryo("stdin");
    let bin = h.compile("stdin_echo");
    let mut o = SpawnOpts::log("echo.log");
    o.stdin_piped = true;
    let (mut p, log) = h.spawn_with(&[bin.to_str().unwrap()], o);
    let mut stdin = p.take_stdin();
    log.wait_prefix("ready pid ", SECS20);
    writeln!(stdin, "before-1").unwrap();
    log.wait_line("echo: before-1");
    std::thread::sleep(Duration::from_millis(100));
    h.checkpoint_kill(&mut p, &h.path("img"));
    drop(stdin);

    let mut r = h.cryo_spawn(
        &["restart", h.path("img").to_str().unwrap()],
        Stdio::piped(),
    );
    let mut rin = r.take_stdin();
    writeln!(rin, "after-1").unwrap();
    log.wait_line("echo: after-1");
    writeln!(rin, "after-2").unwrap();
    log.wait_line("echo: after-2");
    assert!(
        r.running(),
        "cryo restart exited early: {}",
        r.stderr_text()
    );
    drop(rin);
    let st = r.wait_exit(SECS20);
    assert_eq!(
        st.code(),
        Some(0),
        "cryo restart should exit with the program's status 0, got {}; stderr: {}",
        describe_status(st),
        r.stderr_text()
    );
    let lines = log.lines();
    assert_eq!(
        lines[1..],
        ["echo: before-1", "echo: after-1", "echo: after-2", "eof"],
        "{lines:?}"
    );
}

/// Foreground restart exits with the restored program's exit status (7).
#[test]
fn foreground_restart_exit_status() {
    let h = Harness::with_cryo("exitcode");
    let ticker = h.compile("ticker");
    let (mut p, log) = h.spawn(&[ticker.to_str().unwrap(), "200", "15", "7"], "ticker.log");
    log.wait_prefix("tick 3 ", SECS20);
    h.checkpoint_kill(&mut p, &h.path("img"));
    let mut r = h.cryo_spawn(&["restart", h.path("img").to_str().unwrap()], Stdio::null());
    let st = r.wait_exit(SECS20);
    assert_eq!(
        st.code(),
        Some(7),
        "cryo restart should exit 7 like the program, got {}; stderr: {}\n{}",
        describe_status(st),
        r.stderr_text(),
        log.text()
    );
    let lines = log.lines();
    assert_eq!(assert_consecutive(&lines, "tick ", "ticker"), 15);
    assert_eq!(lines.last().unwrap(), "exit 7");
}

/// A signal sent to a foreground `cryo restart` reaches the restored program.
#[test]
fn foreground_restart_forwards_signals() {
    let h = Harness::with_cryo("signals");
    let ticker = h.compile("ticker");
    let (mut p, log) = h.spawn(
        &[ticker.to_str().unwrap(), "200", "0", "0", "sigusr1"],
        "ticker.log",
    );
    log.wait_prefix("tick 3 ", SECS20);
    h.checkpoint_kill(&mut p, &h.path("img"));
    let n = log.lines().len();
    let mut r = h.cryo_spawn(&["restart", h.path("img").to_str().unwrap()], Stdio::null());
    log.wait_growth(n, 2, SECS20);
    assert!(
        r.running(),
        "cryo restart exited early: {}",
        r.stderr_text()
    );
    send_signal(r.pid(), libc::SIGUSR1);
    let st = r.wait_exit(SECS20);
    assert_eq!(log.lines().last().unwrap(), "got SIGUSR1", "{}", log.text());
    assert_eq!(
        st.code(),
        Some(9),
        "program exits 9 on SIGUSR1, so must cryo restart; got {}; stderr: {}",
        describe_status(st),
        r.stderr_text()
    );
}

/// Interpreter loops writing "count N" then "done": checkpoint --kill after a few counts,
/// restart --detach (plus `restart`), the count continues with no repeat or gap.
fn counting_script(name: &str, file: &str, content: &str, interp: &[&str], n: u64) {
    counting_script_with(name, file, content, interp, n, &[]);
}

fn counting_script_with(name: &str, file: &str, content: &str, interp: &[&str], n: u64, restart: &[&str]) {
    let h = Harness::with_cryo(name);
    let script = h.write_file(file, content, 0o644);
    let mut argv: Vec<&str> = interp.to_vec();
    argv.push(script.to_str().unwrap());
    let (mut p, log) = h.spawn(&argv, "count.log");
    log.wait_line("count 5");
    h.checkpoint_kill(&mut p, &h.path("img"));
    let before = log.lines().len();
    h.restart_detached_with(&h.path("img"), restart);
    log.wait_line("done");
    let lines = log.lines();
    assert!(lines.len() > before, "no progress after restart");
    assert_eq!(assert_consecutive(&lines, "count ", name), n, "{lines:?}");
    assert_eq!(lines.len() as u64, n + 1, "only counts and done: {lines:?}");
}

#[test]
fn python_loop_continues() {
    // /usr/bin/python3, not a pyenv shim: root's home is unreadable to the test user.
    let script = "import time\nfor i in range(1, 31):\n    print(f'count {i}', flush=True)\n    time.sleep(0.2)\nprint('done', flush=True)\n";
    counting_script("python", "loop.py", script, &["/usr/bin/python3", "-u"], 30);
}

/// A python3 heap of 100 MB restarted lazily: the interpreter's objects come in as it
/// touches them, and a digest of all of them is the same afterwards.
#[test]
fn python_heap_restarted_lazily() {
    let script = "import hashlib, time\n\
        data = [bytes([i % 251]) * 1000 for i in range(100000)]\n\
        digest = hashlib.sha256(b''.join(data)).hexdigest()\n\
        for i in range(1, 21):\n    print(f'count {i}', flush=True)\n    time.sleep(0.1)\n\
        print('done' if hashlib.sha256(b''.join(data)).hexdigest() == digest else 'BAD digest', flush=True)\n";
    counting_script_with("python-lazy", "heap.py", script, &["/usr/bin/python3", "-u"], 20, &["--lazy"]);
}

#[test]
fn bash_loop_continues() {
    // A real shell loop: bash forks /usr/bin/sleep each iteration, so the checkpointed
    // tree is bash (in wait4) plus, most of the time, a sleep child.
    let script = "for ((i = 1; i <= 30; i++)); do echo \"count $i\"; sleep 0.2; done\necho done\n";
    counting_script("bash", "loop.sh", script, &["/bin/bash"], 30);
}

#[test]
fn perl_loop_continues() {
    let script = "$| = 1;\nfor my $i (1..30) { print \"count $i\\n\"; select(undef, undef, undef, 0.2); }\nprint \"done\\n\";\n";
    counting_script("perl", "loop.pl", script, &["/usr/bin/perl"], 30);
}

/// Runtimes with JIT compilers and many threads of their own: node (V8's
/// workers, libuv's pool) and a JVM (compiler, GC and other threads), each
/// counting on a timer.
#[test]
fn node_loop_continues() {
    let node = which("node").unwrap_or_else(|| panic!("node is not installed (test.sh installs it: apt-get install nodejs)"));
    let script = "let i = 0;\nconst t = setInterval(() => {\n  i++;\n  console.log(`count ${i}`);\n  if (i === 30) { clearInterval(t); console.log('done'); }\n}, 200);\n";
    counting_script("node", "loop.js", script, &[&node], 30);
}

#[test]
fn java_loop_continues() {
    let java = which("java").unwrap_or_else(|| panic!("java is not installed (test.sh installs it: apt-get install default-jdk-headless)"));
    // Run from source (JDK 11+): compiled in memory at start.
    let script = "public class Loop {\n  public static void main(String[] a) throws Exception {\n    for (int i = 1; i <= 30; i++) { System.out.println(\"count \" + i); Thread.sleep(200); }\n    System.out.println(\"done\");\n  }\n}\n";
    counting_script("java", "Loop.java", script, &[&java], 30);
}

/// Resource limits the process had (lowered by its shell) come back.
#[test]
fn resource_limits_come_back() {
    let h = Harness::with_cryo("rlimits");
    let ticker = h.compile("ticker");
    let cmd = format!("ulimit -n 777 && ulimit -s 4096 && exec {} 100 0 0", ticker.display());
    let (mut p, log) = h.spawn(&["/bin/sh", "-c", &cmd], "ticker.log");
    log.wait_prefix("tick 2 ", SECS20);
    h.checkpoint_kill(&mut p, &h.path("img"));
    let host = h.restart_detached(&h.path("img"));
    let limits = std::fs::read_to_string(format!("/proc/{host}/limits")).unwrap();
    let row = |name: &str| limits.lines().find(|l| l.starts_with(name)).unwrap_or("").to_string();
    assert_eq!(row("Max open files").split_whitespace().filter(|w| *w == "777").count(), 2, "{limits}");
    assert_eq!(row("Max stack size").split_whitespace().filter(|w| *w == "4194304").count(), 2, "{limits}");
    let base = log.line_count();
    log.wait_growth(base, 3, SECS20);
}

/// An image of the lazy workload (tests/workloads/lazy.c) with `mib` MiB buffers, taken
/// with --kill once it is ready; and its log.
fn lazy_image(h: &Harness, mib: &str) -> (std::path::PathBuf, Log) {
    let prog = h.compile_with("lazy", &["-pthread"]);
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), mib], "lazy.log");
    log.wait_line("ready");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    (img, log)
}

/// The lazy workload checkpointed with --kill, restarted with
/// `--lazy --detach` and told to go once the restart reports it running; returns the
/// workload's log and cryo's stderr once both are done.
fn lazy_restart(name: &str, env: &[(&str, &str)]) -> (String, String) {
    let h = Harness::with_cryo(name);
    let (img, log) = lazy_image(&h, "64");
    let pf = h.path("restored.pid");
    let mut env = env.to_vec();
    env.push(("CRYO_LOG", "debug"));
    let mut cryo = h.cryo_spawn_env(
        &["restart", img.to_str().unwrap(), "--lazy", "--detach", "--pidfile", pf.to_str().unwrap()],
        &env,
        Stdio::null(),
    );
    let start = std::time::Instant::now();
    while !pf.exists() {
        assert!(cryo.running(), "restart --lazy ended before the tree ran: {}", cryo.stderr_text());
        assert!(start.elapsed() < SECS20, "no pidfile after 20 s: {}", cryo.stderr_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    h.register_pidfile(&pf);
    h.write_file("go", "", 0o644);
    log.wait_line("done");
    let st = cryo.wait_exit(SECS20);
    let err = cryo.stderr_text();
    assert!(st.success(), "restart --lazy: {st}\n{err}");
    let text = log.text();
    assert!(!text.lines().any(|l| l.starts_with("BAD")), "the restored program found faults:\n{text}\ncryo:\n{err}");
    for what in ["sendmsg", "write and read", "in place", "thread", "fork"] {
        assert!(text.lines().any(|l| l == format!("OK {what}")), "no OK {what}:\n{text}");
    }
    (text, err)
}

/// The count before `what` in cryo's "lazy: every page in ..." line.
fn lazy_count(err: &str, what: &str) -> u64 {
    let line = err.lines().find(|l| l.contains("lazy: every page in")).unwrap_or_else(|| panic!("no lazy summary:\n{err}"));
    let before = &line[..line.find(what).unwrap_or_else(|| panic!("no {what:?} in {line}"))];
    before.split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count before {what:?} in {line}"))
}

/// With nothing pushed in the background, each page comes because the program or the
/// kernel on its behalf needed it: write and read buffers (filled at syscall entry),
/// pages touched in place (page faults), a buffer behind an iovec (sendmsg fails with
/// EFAULT and runs again), then a new thread and a fork. The program checks every byte,
/// and cryo returns only once every page is in.
#[test]
fn lazy_restart_fills_memory_as_it_is_touched() {
    let (_, err) = lazy_restart("lazy-demand", &[("CRYO_LAZY_PUSH", "0")]);
    assert!(lazy_count(&err, "syscalls needed pages first") >= 2, "{err}");
    assert!(lazy_count(&err, "faults") >= 1, "{err}");
    assert!(lazy_count(&err, "re-run after EFAULT") >= 1, "{err}");
    assert_eq!(lazy_count(&err, "MiB pushed"), 0, "{err}");
}

/// Pages pushed in the background and pages touched meet without harm.
#[test]
fn lazy_restart_pushes_the_rest() {
    let (_, err) = lazy_restart("lazy-push", &[]);
    assert!(err.contains("lazy: every page in"), "{err}");
}

/// A lazy restart that cannot complete the memory (here a fault injected where cryo
/// starts filling it) kills the tree, which already ran, and says so.
#[test]
fn failed_lazy_restart_kills_the_tree() {
    let h = Harness::with_cryo("lazy-fails");
    let (img, _) = lazy_image(&h, "16");
    let pf = h.path("restored.pid");
    h.register_pidfile(&pf);
    let out = h.cryo_run_env(
        &["restart", img.to_str().unwrap(), "--lazy", "--detach", "--pidfile", pf.to_str().unwrap()],
        &[("CRYO_FAULT", "restart-lazy")],
    );
    assert!(!out.status.success(), "{}", out.describe());
    assert!(out.stderr.contains("the tree was killed"), "{}", out.describe());
    let pid: i32 = std::fs::read_to_string(&pf).unwrap().trim().parse().unwrap();
    let start = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(start.elapsed() < SECS20, "restored process {pid} still there after the failed lazy restart");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Locked memory comes back locked (VmFlags "lo"; "lf" for mlock2's
/// MLOCK_ONFAULT) and with its contents, in an eager restart and in a lazy
/// one (which fills locked memory before the tree runs).
#[test]
fn locked_memory_comes_back_locked() {
    let h = Harness::with_cryo("locked");
    let prog = h.compile("locked");
    for (i, restart) in [&[][..], &["--lazy"][..]].into_iter().enumerate() {
        let name = format!("ticks{i}.log");
        let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "60"], &name);
        let first = log.wait_prefix("tick 3 ", SECS20);
        let sum = first.split_whitespace().nth(3).unwrap().to_string();
        // SAFETY: sysconf has no memory arguments.
        let page_kb = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024;
        assert_eq!(lock_flags(p.pid(), page_kb), [vec!["lo"], vec!["lf", "lo"]], "the program's own locks");
        let img = h.path(&format!("img{i}"));
        h.checkpoint_kill(&mut p, &img);
        let before = log.lines().len();
        let restored = h.restart_detached_with(&img, restart);
        assert_eq!(lock_flags(restored, page_kb), [vec!["lo"], vec!["lf", "lo"]], "locked again after restart {restart:?}");
        assert_ticks_kept_sum(&log, before, 60, &sum, &format!("locked memory, restart {restart:?}"));
    }
}

/// mlockall(MCL_FUTURE), with and without MCL_ONFAULT, which cannot be read
/// from outside (cryo sees it on the parasite's mapping): after a restart,
/// an area the program maps is locked by the kernel again.
#[test]
fn mlockall_future_comes_back() {
    let h = Harness::with_cryo("mlockall");
    let prog = h.compile("locked");
    // SAFETY: sysconf has no memory arguments.
    let page_kb = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024;
    for (mode, flags) in [("future", vec!["lo"]), ("future-onfault", vec!["lf", "lo"])] {
        let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "400", mode], &format!("{mode}.log"));
        log.wait_prefix("tick 3 ", SECS20);
        let img = h.path(&format!("img-{mode}"));
        h.checkpoint_kill(&mut p, &img);
        let restored = h.restart_detached(&img);
        assert_eq!(lock_flags(restored, page_kb), [vec!["lo"], vec!["lf", "lo"]], "mlock'd areas after restart ({mode})");
        let seven = || vm_flags_of_size(restored, 7 * page_kb, &["lf", "lo"]);
        let before = seven();
        h.write_file("newmap", "", 0o644);
        log.wait_prefix("mapped", SECS20);
        // The new area is the one more of its size.
        let mut new = seven();
        for b in &before {
            let at = new.iter().position(|f| f == b).expect("the areas of that size before are still there");
            new.remove(at);
        }
        assert_eq!(new, vec![flags], "an area mapped after restart ({mode})");
        std::fs::remove_file(h.path("newmap")).unwrap();
        send_signal(restored, libc::SIGKILL);
    }
}

/// The lock flags ("lf", "lo") of a locked process's two areas (66 and 34 pages).
fn lock_flags(pid: i32, page_kb: u64) -> [Vec<&'static str>; 2] {
    let one = |pages: u64| vm_flags_of_size(pid, pages * page_kb, &["lf", "lo"]).concat();
    [one(66), one(34)]
}

/// The personality (here ADDR_NO_RANDOMIZE, as `setarch -R` sets it, which
/// exec keeps) comes back.
#[test]
fn personality_comes_back() {
    let h = Harness::with_cryo("personality");
    const NO_RANDOMIZE: &str = "import ctypes, os\n\
        ctypes.CDLL(None).personality(0x0040000)\n\
        os.execvp('sleep', ['sleep', '600'])";
    let (mut p, _out) = h.spawn(&["python3", "-c", NO_RANDOMIZE], "sleep.out");
    let pid = p.pid();
    let persona = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/personality")).unwrap().trim().to_string();
    wait_until(SECS20, || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep"), || "sleep never ran".into());
    assert_eq!(persona(pid), "00040000", "the program's own personality");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let host = h.restart_detached(&img);
    assert_eq!(persona(host), "00040000", "personality after restart");
}

/// With `--huge-pages on`, a 64 MiB heap the image holds whole comes back on
/// transparent huge pages (where the kernel has them on), with the area's
/// flags as they were (no MADV_HUGEPAGE mark) and the reference run's log; a
/// program that turned huge pages off (PR_SET_THP_DISABLE, which exec keeps)
/// has them off again and gets none.
#[test]
fn huge_pages_fill_memory_stored_whole() {
    let h = Harness::with_cryo("huge");
    let heap = h.compile("heap");
    let heap = heap.to_str().unwrap();
    let steps = "30";
    let reference = h.reference_log(heap, &[steps, "0", "64"], SECS20);
    let thp = thp_available();
    const THP_OFF: &str = "import ctypes, os, sys\n\
        assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0\n\
        os.execv(sys.argv[1], sys.argv[1:])";
    for (i, off) in [false, true].into_iter().enumerate() {
        let log_name = format!("heap{i}.log");
        let mut argv = if off { vec!["python3", "-c", THP_OFF] } else { Vec::new() };
        argv.extend([heap, log_name.as_str(), steps, "150", "64"]);
        let (mut p, _out) = h.spawn(&argv, &format!("heap{i}.out"));
        let pid = p.pid();
        let log = Log::new(h.path(&log_name));
        log.wait_prefix("step 3 ", SECS20);
        let (flags, _) = largest_area(pid);
        assert_eq!(thp_enabled(pid), !off, "the program's own setting");
        let img = h.path(&format!("img{i}"));
        h.checkpoint_kill(&mut p, &img);
        let host = h.restart_detached_with(&img, &["--huge-pages", "on"]);
        let (flags_after, huge_kb) = largest_area(host);
        assert_eq!(flags_after, flags, "VmFlags of the heap after restart");
        assert_eq!(thp_enabled(host), !off, "PR_SET_THP_DISABLE after restart");
        if off || !thp {
            assert_eq!(huge_kb, 0, "huge pages where none may be (THP off: {off}, kernel has them: {thp})");
        } else {
            // 31 stretches of 2 MiB lie inside the heap; a few may stay small
            // where the kernel finds no free huge page.
            assert!(huge_kb >= 32 << 10, "only {huge_kb} kB of the heap on huge pages");
        }
        log.wait_prefix("done pid ", SECS20);
        assert_text_eq(&log.text(), &heap_expected(&reference, pid), &format!("heap log after restart (THP off: {off})"));
    }
}


/// A restart on another kernel, whose vDSO differs: with the image's vDSO
/// taken for another kernel's (CRYO_TEST_VDSO_REDIRECT), this kernel's goes
/// elsewhere with its data pages and the image's copy goes back where it
/// was, each of its functions jumping to this kernel's. The program's clocks
/// (clock_gettime, gettimeofday, time, clock_getres and getcpu, through the
/// vDSO pointers glibc saved at its start) answer right after it.
#[test]
fn vdso_of_another_kernel_is_redirected() {
    redirected_vdso_case("vdso", |h, p| {
        let img = h.path("img");
        h.checkpoint_kill(p, &img);
        let (host, out) = h.restart_detached_env(&img, &[], &[(REDIRECT, "1"), ("CRYO_LOG", "info")]);
        (host, out.stderr)
    });
}

/// The same through a stream (`checkpoint -o - | restart -`), where the
/// image's vDSO arrives with the pages, after memory was mapped: restart puts
/// this kernel's in place first and redirects once the copy is there.
#[test]
fn vdso_of_another_kernel_is_redirected_from_a_stream() {
    redirected_vdso_case("vdso-stream", |h, p| {
        let stream = h.path("image.stream");
        let sent = h
            .command(Who::Test, h.cryo())
            .args(["checkpoint", &p.pid().to_string(), "--kill", "-o", "-"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stream).unwrap())
            .output()
            .expect("run cryo checkpoint");
        assert!(sent.status.success(), "checkpoint -o - failed: {}", String::from_utf8_lossy(&sent.stderr));
        assert!(p.wait_timeout(Duration::from_secs(10)).is_some(), "the original still runs after checkpoint --kill");
        let pf = h.path("restored.pid");
        h.register_pidfile(&pf);
        let restarted = h
            .command(Who::Test, h.cryo())
            .args(["restart", "-", "--detach", "--pidfile", pf.to_str().unwrap()])
            .env(REDIRECT, "1")
            .env("CRYO_LOG", "info")
            .stdin(std::fs::File::open(&stream).unwrap())
            .output()
            .expect("run cryo restart");
        let err = String::from_utf8_lossy(&restarted.stderr).into_owned();
        assert!(restarted.status.success(), "restart - failed: {err}");
        (std::fs::read_to_string(&pf).unwrap().trim().parse().unwrap(), err)
    });
}

const REDIRECT: &str = "CRYO_TEST_VDSO_REDIRECT";

/// The clocks workload, checkpointed and restarted by `restart` (which
/// returns the restored pid and cryo's stderr) with the image's vDSO taken
/// for another kernel's: the redirection is reported and visible in the
/// memory map, and the clocks answer right for 25 more ticks.
fn redirected_vdso_case(name: &str, restart: impl FnOnce(&Harness, &mut Proc) -> (i32, String)) {
    let h = Harness::with_cryo(name);
    let prog = h.compile("clocks");
    let (mut p, _out) = h.spawn(&[prog.to_str().unwrap(), "clocks.log"], "clocks.out");
    let log = Log::new(h.path("clocks.log"));
    log.wait_prefix("tick 5 ", SECS20);
    let old = vdso_start(p.pid()).expect("the program has a vDSO");
    let (host, err) = restart(&h, &mut p);
    let before = log.lines().len();
    assert!(err.contains("jumps to this kernel's"), "restart says the vDSO was redirected:\n{err}");
    let maps = read_maps(host);
    assert_ne!(vdso_start(host), Some(old), "this kernel's vDSO moved aside:\n{maps}");
    assert!(
        maps.lines().any(|l| l.starts_with(&format!("{old:x}-")) && l.contains(" r-xp ")),
        "the image's vDSO is back at {old:#x}, executable:\n{maps}"
    );
    log.wait_prefix(&format!("tick {} ", before + 25), SECS20);
    let bad: Vec<String> = log.lines().into_iter().filter(|l| l.starts_with("BAD")).collect();
    assert!(bad.is_empty(), "the clocks went wrong after the restart: {bad:?}");
}

fn vdso_start(pid: i32) -> Option<u64> {
    read_maps(pid).lines().find(|l| l.ends_with("[vdso]")).and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
}
