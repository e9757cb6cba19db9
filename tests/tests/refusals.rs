//! Processes cryo must refuse to checkpoint, and must leave exactly as they were.

use cryo_tests::*;
use std::time::{Duration, Instant};

const SECS20: Duration = Duration::from_secs(20);

#[test]
fn nonexistent_pid() {
    let h = Harness::with_cryo("nopid");
    let pid = unused_pid();
    let img = h.path("img");
    let out = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap()]);
    out.assert_clean_failure()
        .assert_stderr_mentions(&[&pid.to_string()]);
    // Nothing restartable was left behind.
    let r = h.cryo_run(&["restart", img.to_str().unwrap(), "--detach"]);
    r.assert_clean_failure();
}

/// A process already traced by strace: refused, still traced by strace only, still running.
#[test]
fn traced_process() {
    if !have("strace") {
        panic!("strace is not installed (test.sh installs it: apt-get install strace)");
    }
    let h = Harness::with_cryo("traced");
    let ticker = h.compile("ticker");
    let (p, log) = h.spawn(&[ticker.to_str().unwrap(), "100", "0", "0"], "ticker.log");
    let pid = p.pid();
    log.wait_prefix("tick 2 ", SECS20);
    let (st, _slog) = h.spawn(
        &["strace", "-o", "strace.out", "-p", &pid.to_string()],
        "strace.log",
    );
    let start = Instant::now();
    while tracer_pid(pid) != Some(st.pid()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "strace did not attach (TracerPid {:?})",
            tracer_pid(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let img = h.path("img");
    let out = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap()]);
    out.assert_clean_failure()
        .assert_stderr_mentions(&["trace"]);

    // Still running and traced by strace (whose syscall stops are brief 't' states, so
    // check TracerPid and progress rather than sampling the state).
    let base = log.line_count();
    log.wait_growth(base, 3, Duration::from_secs(10));
    assert_eq!(
        tracer_pid(pid),
        Some(st.pid()),
        "must still be traced by strace only"
    );
    assert!(
        !read_maps(pid).contains("memfd:cryo"),
        "cryo left a mapping behind"
    );
    let strace_out = std::fs::read_to_string(h.path("strace.out")).unwrap_or_default();
    assert!(
        strace_out.contains("nanosleep") || strace_out.contains("write"),
        "strace keeps seeing syscalls:\n{strace_out}"
    );
    let r = h.cryo_run(&["restart", img.to_str().unwrap(), "--detach"]);
    r.assert_clean_failure();

    // Control: once strace detaches, the same process can be checkpointed (so the
    // refusal above was about the tracer), and it keeps running untouched afterwards.
    let mut st = st;
    send_signal(st.pid(), libc::SIGINT);
    st.wait_exit(Duration::from_secs(10));
    let start = Instant::now();
    while tracer_pid(pid) != Some(0) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "strace did not detach"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let img2 = h.path("img2");
    h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img2.to_str().unwrap()])
        .assert_ok();
    assert_running_untouched(
        pid,
        &log,
        0,
        "after checkpointing the formerly traced process",
    );
    assert_consecutive(&log.lines(), "tick ", "ticker");
}

/// Another user's process: refused with a permission message; the process is untouched.
#[test]
fn other_users_process() {
    if !is_root() {
        println!(
            "SKIP other_users_process: needs root to run a workload as the second user {OTHER_USER}"
        );
        return;
    }
    let h = Harness::with_cryo("otheruser");
    let ticker = h.compile("ticker");
    h.mkdir_for("other", Who::Other);
    let mut o = SpawnOpts::log("other/ticker.log");
    o.who = Who::Other;
    let (p, log) = h.spawn_with(&[ticker.to_str().unwrap(), "100", "0", "0"], o);
    let pid = p.pid();
    log.wait_prefix("tick 2 ", SECS20);

    let img = h.path("img");
    let out = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap()]);
    let other = h.ident(Who::Other);
    out.assert_clean_failure().assert_stderr_mentions(&[
        "permission",
        "not permitted",
        "denied",
        "another user",
        "owned by",
        "belongs to",
        OTHER_USER,
        &format!("uid {}", other.uid),
    ]);
    assert_running_untouched(
        pid,
        &log,
        0,
        "other user's process after refused checkpoint",
    );
    assert_consecutive(&log.lines(), "tick ", "other user's ticker");
}

/// PR_SET_DUMPABLE 0: refused with a clear message; the process is untouched.
#[test]
fn non_dumpable_process() {
    let h = Harness::with_cryo("nodump");
    let ticker = h.compile("ticker");
    let (p, log) = h.spawn(
        &[ticker.to_str().unwrap(), "100", "0", "0", "nodump"],
        "ticker.log",
    );
    let pid = p.pid();
    log.wait_prefix("tick 2 ", SECS20);
    let img = h.path("img");
    let out = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap()]);
    out.assert_clean_failure()
        .assert_stderr_mentions(&["dumpable"]);
    // /proc/PID/maps of a non-dumpable process is root-only; state and progress are not.
    let base = log.line_count();
    for _ in 0..10 {
        let s = proc_state(pid);
        assert!(matches!(s, Some('S') | Some('R')), "state {s:?}");
        assert_eq!(tracer_pid(pid), Some(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    if is_root() {
        assert!(
            !read_maps(pid).contains("memfd:cryo"),
            "cryo left a mapping behind"
        );
    }
    log.wait_growth(base, 2, Duration::from_secs(10));
    assert_consecutive(&log.lines(), "tick ", "non-dumpable ticker");
}

/// A seccomp-filtered process: its filter cannot be read, so cryo refuses before
/// injecting anything that the filter might punish; the process counts on.
#[test]
fn seccomp_filtered_process() {
    let h = Harness::with_cryo("seccomp");
    let prog = h.compile("seccomp");
    let (p, log) = h.spawn(&[prog.to_str().unwrap()], "seccomp.log");
    let pid = p.pid();
    log.wait_line("filtered");
    let img = h.path("img");
    let out = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap(), "--kill"]);
    out.assert_clean_failure().assert_stderr_mentions(&["seccomp"]);
    assert!(!img.exists(), "a refused checkpoint must leave no image");
    assert_eq!(tracer_pid(pid), Some(0));
    assert!(!read_maps(pid).contains("memfd:cryo"), "cryo left a mapping behind");
    let base = log.line_count();
    log.wait_growth(base, 3, Duration::from_secs(10));
    assert_consecutive(&log.lines()[1..], "tick ", "seccomp ticker");
}

/// Two checkpoints of one process at once: the second is refused with the
/// first cryo's pid, and the first completes; the process runs on unharmed.
#[test]
fn concurrent_checkpoint_is_refused() {
    let h = Harness::with_cryo("busy");
    let heap = h.compile("heap");
    let (p, _out) = h.spawn(&[heap.to_str().unwrap(), "heap.log", "100000", "100", "768"], "heap.out");
    let pid = p.pid();
    let log = Log::new(h.path("heap.log"));
    log.wait_prefix("step 2 ", SECS20);
    let first_img = h.path("first");
    // --direct: the first holds the process stopped (traced) for its whole run.
    let mut first = h.cryo_spawn(&["checkpoint", &pid.to_string(), "-o", first_img.to_str().unwrap(), "--direct"], std::process::Stdio::null());
    // The tracer is the checkpoint's worker, a child of the cryo started here.
    wait_until(
        SECS20,
        || tracer_pid(pid).is_some_and(|t| t != 0 && (t == first.pid() || ppid_of(t) == Some(first.pid()))),
        || format!("the first checkpoint never attached\n{}", first.stderr_text()),
    );
    let second = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", h.path("second").to_str().unwrap()]);
    second.assert_clean_failure().assert_stderr_mentions(&["another cryo", &first.pid().to_string()]);
    assert!(first.wait_exit(SECS20).success(), "{}", first.stderr_text());
    h.cryo_run(&["inspect", first_img.to_str().unwrap()]).assert_ok();
    assert_running_untouched(pid, &log, 0, "after two overlapping checkpoints");

    // A low-freeze checkpoint lets the process go long before its image is
    // written: its lock still refuses a second one meanwhile.
    let third_img = h.path("third");
    let mut third = h.cryo_spawn_env(
        &["checkpoint", &pid.to_string(), "-o", third_img.to_str().unwrap()],
        &[("CRYO_PAUSE", "image-write:2000")],
        std::process::Stdio::null(),
    );
    // Its image begun, and the process let go before the image is complete.
    wait_until(
        SECS20,
        || !partial_images(&h.path("")).is_empty() && tracer_pid(pid) == Some(0),
        || format!("the low-freeze checkpoint never released the process mid-image\n{}", third.stderr_text()),
    );
    let fourth = h.cryo_run(&["checkpoint", &pid.to_string(), "-o", h.path("fourth").to_str().unwrap()]);
    fourth.assert_clean_failure().assert_stderr_mentions(&["another cryo", &third.pid().to_string()]);
    assert!(third.wait_exit(SECS20).success(), "{}", third.stderr_text());
    assert_running_untouched(pid, &log, 0, "after a checkpoint refused during a low-freeze one");
}
