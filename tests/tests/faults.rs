//! Fault injection: `CRYO_FAULT=<stage> cryo checkpoint` must fail at that stage and leave
//! the target running exactly as before, with no complete image behind.

use cryo_tests::*;
use std::time::Duration;

const SECS20: Duration = Duration::from_secs(20);
const STEPS: &str = "50";
const MIB: &str = "16";

fn fault_case(stage: &str) {
    fault_case_with(stage, true)
}

/// `kill`: checkpoint with --kill (a failed checkpoint must never kill); without
/// it for the stages only a checkpoint that leaves the target running reaches.
fn fault_case_with(stage: &str, kill: bool) {
    let h = Harness::with_cryo(&format!("fault-{stage}"));
    let heap = h.compile("heap");
    let heap = heap.to_str().unwrap();
    let reference = h.reference_log(heap, &[STEPS, "0", MIB], SECS20);

    let (mut p, _out) = h.spawn(&[heap, "heap.log", STEPS, "100", MIB], "heap.out");
    let pid = p.pid();
    let log = Log::new(h.path("heap.log"));
    log.wait_prefix("step 3 ", SECS20);
    let before = outside_view(pid);

    let img = h.path("img");
    let pid_s = pid.to_string();
    let mut args = vec!["checkpoint", &pid_s, "-o", img.to_str().unwrap()];
    if kill {
        args.push("--kill");
    }
    let out = h.cryo_run_env(&args, &[("CRYO_FAULT", stage)]);
    out.assert_clean_failure();
    assert_text_eq(&outside_view(pid), &before, &format!("maps, fds and signal masks after CRYO_FAULT={stage}"));
    assert_no_partial_image(&img, stage);
    assert!(
        p.running(),
        "target died after the failed checkpoint ({stage})"
    );
    assert_running_untouched(pid, &log, 0, &format!("after CRYO_FAULT={stage}"));

    // No complete image: restarting it fails cleanly and starts nothing.
    let pf = h.path("fault.pid");
    h.register_pidfile(&pf);
    let r = h.cryo_run(&[
        "restart",
        img.to_str().unwrap(),
        "--detach",
        "--pidfile",
        pf.to_str().unwrap(),
    ]);
    r.assert_clean_failure();
    h.assert_no_leftovers(
        &[pid],
        &format!("restart of the image left by CRYO_FAULT={stage}"),
    );

    // The failed attempt does not spoil a later one (this also proves the failure above
    // came from the injected fault, not from cryo being unable to checkpoint this target).
    let img2 = h.path("img2");
    h.cryo_run(&["checkpoint", &pid.to_string(), "-o", img2.to_str().unwrap()])
        .assert_ok();
    assert_running_untouched(
        pid,
        &log,
        0,
        "after a successful --leave-running checkpoint",
    );

    // Self-checks: the run completes and matches the reference exactly.
    let st = p.wait_exit(SECS20);
    assert!(
        st.success(),
        "heap exited with {}\n{}",
        describe_status(st),
        log.text()
    );
    assert_text_eq(
        &log.text(),
        &heap_expected(&reference, pid),
        &format!("heap log after CRYO_FAULT={stage}"),
    );
}

/// Nothing that looks like an image, and no hidden partial directory, is left.
fn assert_no_partial_image(img: &std::path::Path, stage: &str) {
    assert!(!img.exists(), "CRYO_FAULT={stage} left {}", img.display());
    let partial = partial_images(img.parent().unwrap());
    assert!(partial.is_empty(), "CRYO_FAULT={stage} left partial images {partial:?}");
}

#[test]
fn fault_detach() {
    fault_case_with("detach", false)
}

/// Every remote syscall of a checkpoint, failed in turn (the Nth for a growing N,
/// until the checkpoint has fewer): the target is left exactly as it was each time.
#[test]
fn fault_each_remote_syscall() {
    let h = Harness::with_cryo("fault-syscalls");
    let heap = h.compile("heap");
    let (mut p, _out) = h.spawn(&[heap.to_str().unwrap(), "heap.log", "100000", "20", MIB], "heap.out");
    let pid = p.pid();
    let log = Log::new(h.path("heap.log"));
    log.wait_prefix("step 3 ", SECS20);
    let before = outside_view(pid);
    let mut n = 1;
    let mut failed = 0;
    loop {
        let img = h.path(&format!("img{n}"));
        let stage = format!("syscall@{n}");
        let out = h.cryo_run_env(&["checkpoint", &pid.to_string(), "-o", img.to_str().unwrap(), "--kill"], &[("CRYO_FAULT", &stage)]);
        if out.success() {
            assert!(failed >= 5, "only {failed} remote syscalls were failed before the checkpoint made fewer than {n}");
            break;
        }
        out.assert_clean_failure().assert_stderr_mentions(&[&stage]);
        failed += 1;
        assert!(p.running(), "target died after CRYO_FAULT={stage}");
        assert_eq!(tracer_pid(pid), Some(0), "target still traced after CRYO_FAULT={stage}");
        assert!(!matches!(proc_state(pid), Some('t' | 'T')), "target left stopped after CRYO_FAULT={stage}");
        assert_text_eq(&outside_view(pid), &before, &format!("maps, fds and signal masks after CRYO_FAULT={stage}"));
        assert_no_partial_image(&img, &stage);
        n += 1 + n / 4;
        assert!(n < 100_000, "the checkpoint never succeeded");
    }
    // The last checkpoint succeeded with --kill; its image carries the run on.
    p.wait_exit(SECS20);
    let host = h.restart_detached(&h.path(&format!("img{n}")));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        pid_alive(host),
        "the restored heap died: {}\n{}",
        std::fs::read_to_string(h.path("heap.out")).unwrap_or_default(),
        log.text()
    );
    log.wait_growth(log.line_count(), 3, SECS20);
}

/// Each stage of a restart of a tree, failed: the restart fails cleanly and
/// nothing it created keeps running; then the same image restarts fine.
#[test]
fn restart_faults_leave_nothing_running() {
    let h = Harness::with_cryo("fault-restart");
    let (img, log) = h.killed_tree_image("150");
    let stages = [
        "restart-shape",
        "restart-load@3",
        "restart-memory@2",
        "restart-fork@2",
        "restart-fds@4",
        "restart-state@3",
        "restart-finish@2",
        "restart-release",
        "syscall@7",
        "syscall@60",
        "parasite-cmd@9",
    ];
    for stage in stages {
        let lines = log.line_count();
        let pf = h.path("fault.pid");
        h.register_pidfile(&pf);
        let out = h.cryo_run_env(&["restart", img.to_str().unwrap(), "--detach", "--pidfile", pf.to_str().unwrap()], &[("CRYO_FAULT", stage)]);
        out.assert_clean_failure();
        h.assert_no_leftovers(&[], &format!("restart with CRYO_FAULT={stage}"));
        assert!(!pf.exists(), "a failed restart wrote its pidfile");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(log.line_count(), lines, "the half-restored tree ran after CRYO_FAULT={stage}:\n{}", log.text());
    }
    h.restart_detached(&img);
    log.wait_prefix("done ", SECS20);
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{}", lines.join("\n"));
    assert_eq!(assert_consecutive(&lines, "msg ", "messages over pipes"), 450);
}

/// A restart that fails, or whose cryo is killed, while cryo copies a
/// process's memory into place (UFFDIO_COPY, two threads at work): nothing
/// of it runs, and the same image restarts fine afterwards.
#[test]
fn restart_stopped_while_copying_memory_leaves_nothing() {
    let h = Harness::with_cryo("fault-copy");
    let heap = h.compile("heap");
    let (mut p, _out) = h.spawn(&[heap.to_str().unwrap(), "heap.log", STEPS, "100", "64"], "heap.out");
    let log = Log::new(h.path("heap.log"));
    log.wait_prefix("step 3 ", SECS20);
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let img = img.to_str().unwrap();
    let lines = log.line_count();
    // The third piece of 2 MiB (of 32): both threads are copying by then.
    let out = h.cryo_run_env(&["restart", img, "--detach"], &[("CRYO_FAULT", "restart-copy@3")]);
    out.assert_clean_failure().assert_stderr_mentions(&["restart-copy@3"]);
    h.assert_no_leftovers(&[], "a restart failed while copying memory");
    let mut cryo = h.cryo_spawn_env(&["restart", img, "--detach"], &[("CRYO_PAUSE", "restart-copy@3:1500")], std::process::Stdio::null());
    std::thread::sleep(Duration::from_millis(700));
    assert!(cryo.running(), "restart ended before the kill: {}", cryo.stderr_text());
    send_signal(cryo.pid(), libc::SIGKILL);
    cryo.wait_exit(SECS20);
    h.assert_no_leftovers(&[], "kill -9 of cryo restart while it copied memory");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log.line_count(), lines, "the half-restored process ran:\n{}", log.text());
    h.restart_detached(std::path::Path::new(img));
    log.wait_prefix("done ", SECS20);
}

macro_rules! fault_tests {
    ($($name:ident => $stage:literal,)*) => {
        $( #[test] fn $name() { fault_case($stage) } )*
    };
}

fault_tests! {
    fault_seize => "seize",
    fault_regs => "regs",
    fault_parasite_load => "parasite-load",
    fault_parasite_cmd => "parasite-cmd",
    fault_page_pipes => "page-pipes",
    fault_pages => "pages",
    fault_image_write => "image-write",
    fault_cure => "cure",
}
