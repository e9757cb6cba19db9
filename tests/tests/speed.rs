//! The fast paths: low-freeze checkpoints written from a copy-on-write
//! snapshot. Speed itself is measured by bench/run.sh, not here; these tests
//! check that the fast paths give the same images and leave the target as
//! the slow ones do.

use cryo_tests::*;
use std::time::{Duration, Instant};

const SECS20: Duration = Duration::from_secs(20);
const STEPS: &str = "60";
const MIB: &str = "32";

/// The heap workload, its reference log, and a running copy that rewrites
/// its whole heap in a loop (so it writes memory while its snapshot is read).
fn heap_running(h: &Harness) -> (Proc, Log, String) {
    let heap = h.compile("heap");
    let heap = heap.to_str().unwrap();
    h.run_to_completion(&[heap, "ref.log", STEPS, "0", MIB], "ref.out", SECS20);
    let reference = Log::new(h.path("ref.log")).text();
    let (p, log) = {
        let (p, _) = h.spawn(&[heap, "heap.log", STEPS, "15", MIB], "heap.out");
        (p, Log::new(h.path("heap.log")))
    };
    log.wait_prefix("step 4 ", SECS20);
    (p, log, reference)
}

fn checkpoint_json(h: &Harness, pid: i32, img: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> (CmdOut, serde_json::Value) {
    let pid = pid.to_string();
    let mut args = vec!["checkpoint", &pid, "-o", img.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = h.cryo_run_env(&args, env);
    out.assert_ok();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{}", out.describe()));
    (out, v)
}

/// The target has no child left by the snapshot (the helper reaped, the
/// snapshot killed), and nothing of cryo runs in the work dir.
fn assert_no_snapshot_left(h: &Harness, pid: i32, context: &str) {
    assert!(children(pid).is_empty(), "{context}: the target has children {:?}", children(pid));
    h.assert_no_leftovers(&[pid], context);
}

/// Restart `img` after the original finished, wait for the restored process
/// to finish, and check the whole log against the reference: the restored
/// process rewrites the log from the offset it had at the freeze, so any
/// page that changed after the freeze shows as a wrong checksum.
fn restart_matches_reference(h: &Harness, p: &mut Proc, log: &Log, reference: &str, img: &std::path::Path) {
    let pid = p.pid();
    let st = p.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "heap exited with {}\n{}", describe_status(st), log.text());
    let restored = h.restart_detached(img);
    let start = Instant::now();
    while pid_alive(restored) {
        assert!(start.elapsed() < Duration::from_secs(60), "the restored heap did not finish\n{}", log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_text_eq(&log.text(), &heap_expected(reference, pid), "heap log after restarting the low-freeze image");
}

/// The default (leave-running) checkpoint writes memory from a snapshot:
/// the target is stopped for less than the whole checkpoint, runs on
/// untraced with no child left behind, and the image restores the moment of
/// the freeze exactly, although the target rewrote its heap meanwhile.
#[test]
fn low_freeze_snapshot_restores_the_moment_of_the_freeze() {
    let h = Harness::with_cryo("low-freeze");
    let (mut p, log, reference) = heap_running(&h);
    let pid = p.pid();
    let img = h.path("img");
    let (_, v) = checkpoint_json(&h, pid, &img, &["--leave-running"], &[]);
    assert_eq!(v["snapshots"], 1, "memory written from a snapshot: {v}");
    assert!(v["frozen_us"].as_u64() < v["total_us"].as_u64(), "stopped for less than the checkpoint: {v}");
    assert_no_snapshot_left(&h, pid, "after a low-freeze checkpoint");
    assert_running_untouched(pid, &log, 0, "after a low-freeze checkpoint");
    restart_matches_reference(&h, &mut p, &log, &reference, &img);
}

/// --direct and --kill keep writing memory while the target is stopped.
#[test]
fn direct_checkpoint_uses_no_snapshot() {
    let h = Harness::with_cryo("direct");
    let (mut p, log, reference) = heap_running(&h);
    let pid = p.pid();
    let (_, v) = checkpoint_json(&h, pid, &h.path("direct"), &["--direct"], &[]);
    assert_eq!(v["snapshots"], 0, "{v}");
    assert_running_untouched(pid, &log, 0, "after a --direct checkpoint");
    let img = h.path("img");
    let (_, v) = checkpoint_json(&h, pid, &img, &["--kill"], &[]);
    assert_eq!(v["snapshots"], 0, "{v}");
    assert!(p.wait_timeout(SECS20).is_some(), "--kill left the target running");
    h.restart_detached(&img);
    log.wait_prefix("done ", Duration::from_secs(60));
    assert_text_eq(&log.text(), &heap_expected(&reference, pid), "heap log after --kill and restart");
}

/// A snapshot that cannot be made (injected at its fork, and after the
/// snapshot exists while it closes its fds) falls back to writing memory
/// while stopped, says so, and leaves nothing behind.
#[test]
fn snapshot_failure_falls_back_to_a_direct_dump() {
    for stage in ["snapshot-fork", "snapshot-fds"] {
        let h = Harness::with_cryo(&format!("fallback-{stage}"));
        let (mut p, log, reference) = heap_running(&h);
        let pid = p.pid();
        let img = h.path("img");
        let (out, v) = checkpoint_json(&h, pid, &img, &[], &[("CRYO_FAULT", stage)]);
        assert_eq!(v["snapshots"], 0, "{stage}: {v}");
        assert!(out.stderr.contains("no copy-on-write snapshot"), "{stage}: no warning\n{}", out.describe());
        assert_no_snapshot_left(&h, pid, stage);
        assert_running_untouched(pid, &log, 0, stage);
        restart_matches_reference(&h, &mut p, &log, &reference, &img);
    }
}

/// A failure while memory is written from the snapshot, after the target
/// was let go: no image, the snapshot gone, the target runs on untouched.
#[test]
fn failure_while_writing_from_the_snapshot_leaves_the_target_running() {
    let h = Harness::with_cryo("snapshot-pages-fault");
    let (mut p, log, reference) = heap_running(&h);
    let pid = p.pid();
    let img = h.path("img");
    let pid_s = pid.to_string();
    let out = h.cryo_run_env(&["checkpoint", &pid_s, "-o", img.to_str().unwrap()], &[("CRYO_FAULT", "snapshot-pages")]);
    out.assert_clean_failure();
    assert!(!img.join("inventory.cryo").exists(), "a failed checkpoint left an image");
    assert_no_snapshot_left(&h, pid, "after a failure in the snapshot");
    assert_running_untouched(pid, &log, 0, "after a failure in the snapshot");
    let st = p.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "heap exited with {}\n{}", describe_status(st), log.text());
    assert_text_eq(&log.text(), &heap_expected(&reference, pid), "heap log after the failed checkpoint");
}
