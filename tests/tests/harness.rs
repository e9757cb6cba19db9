//! Self-tests of the harness: these need no cryo binary and must pass today.

use cryo_tests::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

#[test]
fn workload_runs_as_test_user_in_own_session_and_is_cleaned_up() {
    let h = Harness::new("harness-user");
    let id = h.ident(Who::Test);
    let md = fs::metadata(&h.dir).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o755, "work dir mode");
    assert_eq!((md.uid(), md.gid()), (id.uid, id.gid), "work dir owner");
    if is_root() {
        assert_ne!(id.uid, 0, "workloads must not run as root");
    }

    let ticker = h.compile("ticker");
    let (p, log) = h.spawn(&[ticker.to_str().unwrap(), "50", "0", "0"], "ticker.log");
    let pid = p.pid();
    log.wait_prefix("tick 3 ", Duration::from_secs(10));

    let uids = status_field(pid, "Uid").unwrap();
    let gids = status_field(pid, "Gid").unwrap();
    assert!(
        uids.split_whitespace().all(|u| u == id.uid.to_string()),
        "Uid: {uids}"
    );
    assert!(
        gids.split_whitespace().all(|g| g == id.gid.to_string()),
        "Gid: {gids}"
    );
    if is_root() {
        assert_eq!(
            status_field(pid, "Groups").unwrap(),
            "",
            "supplementary groups dropped"
        );
    }
    // setsid: session leader and group leader
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    assert_eq!(f[2], pid.to_string(), "pgrp");
    assert_eq!(f[3], pid.to_string(), "session");
    assert_eq!(tracer_pid(pid), Some(0));
    assert!(matches!(proc_state(pid), Some('S') | Some('R')));
    assert_eq!(fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), h.dir);
    // Only stdin/stdout/stderr: nothing leaks in from the test runner (cargo's jobserver
    // pipe, the harness's own files), so a restore never has to deal with strays.
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "open fds of the workload");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/fd/1")).unwrap(),
        h.path("ticker.log")
    );

    let lines = log.lines();
    assert_eq!(lines[0], format!("tick 1 pid {pid}"));
    assert!(assert_consecutive(&lines, "tick ", "ticker") >= 3);
    assert_running_untouched(pid, &log, 0, "plain ticker");
    assert_eq!(
        h.leftovers(&[]).len(),
        1,
        "the ticker is found by the dir sweep"
    );

    drop(p);
    assert!(!pid_alive(pid), "Proc drop kills the workload");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "and reaps it"
    );
}

#[test]
fn cleanup_kills_detached_grandchildren_and_pidfile_pids() {
    let h = Harness::new("harness-cleanup");
    // A grandchild that outlives its parent (like a restored tree detached from cryo),
    // and a pid known only through a pidfile.
    let script = h.write_file(
        "spawner.sh",
        "#!/bin/bash\nsleep 300 &\necho $! > grandchild.pid\nsleep 300 &\necho $! > other.pid\n",
        0o755,
    );
    let (mut p, _log) = h.spawn(&[script.to_str().unwrap()], "spawner.log");
    assert!(p.wait_exit(Duration::from_secs(10)).success());
    let read = |f: &str| -> i32 {
        fs::read_to_string(h.path(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (g1, g2) = (read("grandchild.pid"), read("other.pid"));
    h.register_pidfile(&h.path("other.pid"));
    assert!(pid_alive(g1) && pid_alive(g2));
    let left: Vec<i32> = h.leftovers(&[]).into_iter().map(|(p, _)| p).collect();
    assert!(
        left.contains(&g1) && left.contains(&g2),
        "sweep finds {left:?}"
    );
    let dir = h.dir.clone();
    drop(h);
    // Orphans are reaped by pid 1, possibly late: wait until they are not alive.
    let start = std::time::Instant::now();
    while (pid_alive(g1) || pid_alive(g2)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pid_alive(g1) && !pid_alive(g2),
        "cleanup must kill {g1} and {g2}"
    );
    assert!(!dir.exists(), "work dir removed after a passing test");
}

#[test]
fn heap_workload_is_deterministic_and_self_checking() {
    let h = Harness::new("harness-heap");
    let heap = h.compile("heap");
    let heap = heap.to_str().unwrap();
    h.run_to_completion(
        &[heap, "a.log", "20", "0", "16"],
        "a.out",
        Duration::from_secs(20),
    );
    h.run_to_completion(
        &[heap, "b.log", "20", "5", "16"],
        "b.out",
        Duration::from_secs(20),
    );
    let (a, b) = (Log::new(h.path("a.log")), Log::new(h.path("b.log")));
    let (ta, tb) = (a.text(), b.text());
    assert_eq!(ta.lines().count(), 22, "start + 20 steps + done:\n{ta}");
    assert!(ta.lines().last().unwrap().starts_with("done pid "));
    assert!(!ta.contains("MISMATCH") && !ta.contains("EINTR"));
    let pid_b: i32 = tb.lines().next().unwrap()["start pid ".len()..]
        .parse()
        .unwrap();
    // Sleeping between steps does not change the sequence; only the pid differs.
    assert_text_eq(
        &tb,
        &heap_expected(&ta, pid_b),
        "heap run with sleeps vs reference",
    );
    assert_consecutive(&b.lines(), "step ", "heap");
}

#[test]
fn other_user_workload() {
    if !is_root() {
        println!("SKIP other_user_workload: needs root to run a process as {OTHER_USER}");
        return;
    }
    let h = Harness::new("harness-other");
    let other = h.ident(Who::Other);
    assert_ne!(other, h.ident(Who::Test));
    let ticker = h.compile("ticker");
    h.mkdir_for("other", Who::Other);
    let mut o = SpawnOpts::log("other/ticker.log");
    o.who = Who::Other;
    let (p, log) = h.spawn_with(&[ticker.to_str().unwrap(), "50", "0", "0"], o);
    log.wait_prefix("tick 2 ", Duration::from_secs(10));
    let uid = status_field(p.pid(), "Uid").unwrap();
    assert!(uid.starts_with(&other.uid.to_string()), "Uid {uid}");
}

#[test]
fn stdin_echo_workload() {
    let h = Harness::new("harness-stdin");
    let bin = h.compile("stdin_echo");
    let mut o = SpawnOpts::log("echo.log");
    o.stdin_piped = true;
    let (mut p, log) = h.spawn_with(&[bin.to_str().unwrap()], o);
    let mut stdin = p.take_stdin();
    use std::io::Write;
    log.wait_prefix("ready pid ", Duration::from_secs(5));
    writeln!(stdin, "hello").unwrap();
    log.wait_line("echo: hello");
    drop(stdin);
    assert!(p.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(log.lines().last().unwrap(), "eof");
}

/// Precondition for every checkpoint test: the test user may ptrace the workloads the
/// harness starts (same uid, dumpable after the uid switch + exec, no Yama in the way).
#[test]
fn workload_is_traceable_by_test_user() {
    if !have("strace") {
        panic!("strace is not installed (test.sh installs it: apt-get install strace)");
    }
    let h = Harness::new("harness-traceable");
    let ticker = h.compile("ticker");
    let (p, log) = h.spawn(&[ticker.to_str().unwrap(), "50", "0", "0"], "ticker.log");
    let pid = p.pid();
    log.wait_prefix("tick 2 ", Duration::from_secs(10));
    let (mut st, slog) = h.spawn(
        &["strace", "-o", "strace.out", "-p", &pid.to_string()],
        "strace.log",
    );
    let start = std::time::Instant::now();
    while tracer_pid(pid) != Some(st.pid()) {
        assert!(
            st.running() && start.elapsed() < Duration::from_secs(10),
            "the test user cannot ptrace the workload:\n{}",
            slog.text() + &fs::read_to_string(h.path("strace.log.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal(st.pid(), libc::SIGINT);
    assert!(
        st.wait_timeout(Duration::from_secs(10)).is_some(),
        "strace did not detach"
    );
    let start = std::time::Instant::now();
    while tracer_pid(pid) != Some(0) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still traced after strace exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_running_untouched(pid, &log, 0, "after strace detached");
}
