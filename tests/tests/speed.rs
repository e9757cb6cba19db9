//! The fast paths: low-freeze checkpoints written from a copy-on-write
//! snapshot. Speed itself is measured by bench/run.sh, not here; these tests
//! check that the fast paths give the same images and leave the target as
//! the slow ones do.

use cryo_tests::*;
use std::time::{Duration, Instant};

const SECS20: Duration = Duration::from_secs(20);
const STEPS: &str = "150";
const MIB: &str = "16";

/// The heap workload, its reference log, and a running copy that rewrites
/// its whole heap in a loop (so it writes memory while its snapshot is read).
fn heap_running(h: &Harness) -> (Proc, Log, String) {
    let heap = h.compile("heap");
    let heap = heap.to_str().unwrap();
    let reference = h.reference_log(heap, &[STEPS, "0", MIB], SECS20);
    let (p, log) = {
        let (p, _) = h.spawn(&[heap, "heap.log", STEPS, "20", MIB], "heap.out");
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

/// MiB of memory read with process_vm_readv and through /proc/PID/mem, as a
/// checkpoint's debug log says (added up over its processes and snapshots).
fn memory_read(out: &CmdOut) -> (u64, u64) {
    let counts: Vec<(u64, u64)> = out
        .stderr
        .lines()
        .filter_map(|l| {
            let (pinned, copied) = l.split(": ").nth(1)?.strip_suffix(" MiB through /proc/PID/mem")?.split_once(" MiB read with process_vm_readv, ")?;
            Some((pinned.parse().ok()?, copied.parse().ok()?))
        })
        .collect();
    assert!(!counts.is_empty(), "no account of how memory was read:\n{}", out.describe());
    counts.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1))
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

/// Restart `img` (the original is gone) and check that the workload (heap
/// or dirty) finishes with the reference run's log.
fn restart_finishes_as_reference(h: &Harness, img: &std::path::Path, log: &Log, reference: &str, pid: i32, what: &str) {
    h.restart_detached(img);
    log.wait_prefix("done ", Duration::from_secs(60));
    assert_text_eq(&log.text(), &heap_expected(reference, pid), what);
}

/// The default (leave-running) checkpoint writes memory from a snapshot:
/// the target is stopped for less than the whole checkpoint, runs on
/// untraced with no child left behind, and the image restores the moment of
/// the freeze exactly, although the target rewrote its heap meanwhile. The
/// snapshot, whose every page is shared with the target, is read through
/// /proc/PID/mem: process_vm_readv would unshare (copy) what it reads.
#[test]
fn low_freeze_snapshot_restores_the_moment_of_the_freeze() {
    let h = Harness::with_cryo("low-freeze");
    let (mut p, log, reference) = heap_running(&h);
    let pid = p.pid();
    let img = h.path("img");
    let (out, v) = checkpoint_json(&h, pid, &img, &["--leave-running"], &[("CRYO_LOG", "debug")]);
    assert_eq!(v["snapshots"], 1, "memory written from a snapshot: {v}");
    let (pinned, copied) = memory_read(&out);
    assert!(pinned == 0 && copied >= MIB.parse().unwrap(), "the snapshot was read through /proc/PID/mem:\n{}", out.describe());
    assert!(v["frozen_us"].as_u64() < v["total_us"].as_u64(), "stopped for less than the checkpoint: {v}");
    assert_no_snapshot_left(&h, pid, "after a low-freeze checkpoint");
    assert_running_untouched(pid, &log, 0, "after a low-freeze checkpoint");
    restart_matches_reference(&h, &mut p, &log, &reference, &img);
}

/// --direct and --kill keep writing memory while the target is stopped.
/// cryo reads it with process_vm_readv (no page of the heap is shared with
/// another process), and the image restores the heap exactly.
#[test]
fn direct_checkpoint_uses_no_snapshot() {
    let h = Harness::with_cryo("direct");
    let (mut p, log, reference) = heap_running(&h);
    let pid = p.pid();
    let (_, v) = checkpoint_json(&h, pid, &h.path("direct"), &["--direct"], &[]);
    assert_eq!(v["snapshots"], 0, "{v}");
    assert_running_untouched(pid, &log, 0, "after a --direct checkpoint");
    let img = h.path("img");
    let (out, v) = checkpoint_json(&h, pid, &img, &["--kill"], &[("CRYO_LOG", "debug")]);
    assert_eq!(v["snapshots"], 0, "{v}");
    let (pinned, _) = memory_read(&out);
    assert!(pinned >= MIB.parse().unwrap(), "the heap was read with process_vm_readv:\n{}", out.describe());
    assert!(p.wait_timeout(SECS20).is_some(), "--kill left the target running");
    restart_finishes_as_reference(&h, &img, &log, &reference, pid, "heap log after --kill and restart");
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

/// A tree's processes are dumped several at once (on helper threads whose
/// ptrace requests the tracer thread makes): with --kill while the tree is
/// frozen, by default their snapshots after it was let go. A failure in one
/// of them leaves every process running untouched, and each image brings
/// every process back as it was at its freeze (a restart also fills the
/// processes' memory several at once).
#[test]
fn tree_dumped_in_parallel() {
    let h = Harness::with_cryo("parallel-dump");
    // 20 s at least: two failed checkpoints, each followed by a check that
    // takes a second per heap, then two that succeed.
    let mut t = HeapTree::start(&h, 4, "800", "25", MIB);
    let root = t.shell.pid().to_string();
    let (low_freeze, killed) = (h.path("low-freeze"), h.path("killed"));

    // The second write of pages fails while other processes are under way.
    for (mode, stage) in [("", "snapshot-pages@2"), ("--kill", "pages@2")] {
        let mut args = vec!["checkpoint", &root, "-o", killed.to_str().unwrap(), "--jobs", "3"];
        args.extend(Some(mode).filter(|m| !m.is_empty()));
        let out = h.cryo_run_env(&args, &[("CRYO_FAULT", stage)]);
        out.assert_clean_failure();
        assert!(!killed.join("inventory.cryo").exists(), "a failed checkpoint left an image");
        t.assert_untouched(&h, &format!("after CRYO_FAULT={stage} in one of the processes dumped at once"));
    }

    let (out, v) = checkpoint_json(&h, t.shell.pid(), &low_freeze, &["--jobs", "3"], &[("CRYO_LOG", "debug")]);
    assert_eq!((v["processes"].as_u64(), v["snapshots"].as_u64()), (Some(5), Some(5)), "{v}");
    assert!(out.stderr.contains("5 snapshots written 3 at a time"), "{}", out.describe());
    for log in &t.logs {
        log.wait_growth(log.line_count(), 3, SECS20);
    }
    let (out, v) = checkpoint_json(&h, t.shell.pid(), &killed, &["--jobs", "3", "--kill"], &[("CRYO_LOG", "debug")]);
    assert_eq!((v["processes"].as_u64(), v["snapshots"].as_u64()), (Some(5), Some(0)), "{v}");
    assert!(out.stderr.contains("5 processes dumped 3 at a time"), "{}", out.describe());
    t.shell.wait_exit(Duration::from_secs(10));
    // The restarts fill the processes' memory several at once too.
    for img in [&killed, &low_freeze] {
        let (restored, out) = h.restart_detached_env(img, &["--jobs", "3"], &[("CRYO_LOG", "debug")]);
        assert!(out.stderr.contains("memory of 5 processes filled 3 at a time"), "{}", out.describe());
        wait_until(Duration::from_secs(60), || !pid_alive(restored), || format!("the tree restored from {} did not finish", img.display()));
        t.assert_logs_match(&format!("restored from {}", img.display()));
    }
}

// ---------------------------------------------------------------------------------------
// Incremental checkpoints
// ---------------------------------------------------------------------------------------

const DIRTY_MIB: &str = "64";

/// The dirty workload (64 MiB, 4 pages rewritten per step), its reference
/// log, and a running copy.
fn dirty_running(h: &Harness, steps: &str, sleep_ms: &str) -> (Proc, Log, String) {
    dirty_running_with(h, steps, sleep_ms, &[])
}

/// [`dirty_running`] with more arguments (DROP_EVERY).
fn dirty_running_with(h: &Harness, steps: &str, sleep_ms: &str, extra: &[&str]) -> (Proc, Log, String) {
    let prog = h.compile("dirty");
    let prog = prog.to_str().unwrap();
    let reference = h.reference_log(prog, &[&[steps, "0", DIRTY_MIB, "4"], extra].concat(), SECS20);
    let (p, _) = h.spawn(&[&[prog, "dirty.log", steps, sleep_ms, DIRTY_MIB, "4"], extra].concat(), "dirty.out");
    let log = Log::new(h.path("dirty.log"));
    log.wait_prefix("step 3 ", SECS20);
    (p, log, reference)
}

fn has_userfaultfd(pid: i32) -> bool {
    fd_links(pid).iter().any(|l| l.contains("userfaultfd"))
}

/// A chain full -> incremental -> incremental (the last with --kill): the
/// incremental images hold only the written pages, the target runs on
/// untouched between them (its tracking fd is not dumped as one of its fds),
/// and the restart reads every page from the right image of the chain.
#[test]
fn incremental_chain_stores_written_pages_and_restarts() {
    let h = Harness::with_cryo("incremental");
    let (mut p, log, reference) = dirty_running(&h, "150", "40");
    let pid = p.pid();
    let (i0, i1, i2) = (h.path("i0"), h.path("i1"), h.path("i2"));
    let (_, v0) = checkpoint_json(&h, pid, &i0, &["--track"], &[]);
    assert!(v0["parent"].is_null(), "the first image is full: {v0}");
    assert!(v0["bytes"].as_u64().unwrap() >= 64 << 20, "a full image holds the buffer: {v0}");
    assert!(has_userfaultfd(pid), "--track leaves a userfaultfd in the target");
    assert_running_untouched(pid, &log, 0, "after a --track checkpoint");
    let (_, v1) = checkpoint_json(&h, pid, &i1, &["--parent", i0.to_str().unwrap()], &[]);
    assert!(v1["parent"].is_string(), "incremental against i0: {v1}");
    assert_eq!(v1["snapshots"], 0, "a small incremental image is written while stopped: {v1}");
    let b1 = v1["bytes"].as_u64().unwrap();
    assert!(b1 < 4 << 20, "the incremental image holds only the written pages ({b1} bytes): {v1}");
    assert_running_untouched(pid, &log, 0, "after an incremental checkpoint");
    let (_, v2) = checkpoint_json(&h, pid, &i2, &["--parent", i1.to_str().unwrap(), "--kill"], &[]);
    assert!(v2["parent"].is_string() && v2["bytes"].as_u64().unwrap() < 4 << 20, "{v2}");
    assert!(p.wait_timeout(SECS20).is_some(), "--kill left the target running");

    // A missing parent is a clear error, and starts nothing.
    let moved = h.path("i1-moved");
    std::fs::rename(&i1, &moved).unwrap();
    let out = h.cryo_run(&["restart", i2.to_str().unwrap(), "--detach"]);
    out.assert_clean_failure();
    assert!(out.stderr.contains("i1") && out.stderr.contains("parent"), "names the missing parent:\n{}", out.describe());
    h.assert_no_leftovers(&[], "restart with a missing parent image");
    std::fs::rename(&moved, &i1).unwrap();

    restart_finishes_as_reference(&h, &i2, &log, &reference, pid, "dirty log after restarting the incremental chain");
}

/// Memory the program drops between checkpoints (MADV_DONTNEED of whole
/// page tables) restarts as zero, not as what the parent image held there:
/// an incremental checkpoint learns of dropped anonymous pages from its
/// write tracking alone, without looking at every page.
#[test]
fn incremental_chain_does_not_bring_back_dropped_memory() {
    let h = Harness::with_cryo("incremental-dropped");
    // Every third step drops 4 MiB.
    let (mut p, log, reference) = dirty_running_with(&h, "150", "40", &["3"]);
    let pid = p.pid();
    // A few drops after each image (the log's first line is "start").
    let steps_on = |n: usize| log.wait_prefix(&format!("step {} ", log.line_count() - 1 + n), SECS20);
    let (i0, i1, i2) = (h.path("i0"), h.path("i1"), h.path("i2"));
    checkpoint_json(&h, pid, &i0, &["--track"], &[]);
    steps_on(7);
    let (_, v1) = checkpoint_json(&h, pid, &i1, &["--parent", i0.to_str().unwrap()], &[]);
    assert!(v1["parent"].is_string() && v1["bytes"].as_u64().unwrap() < 4 << 20, "a small incremental image: {v1}");
    steps_on(7);
    let (_, v2) = checkpoint_json(&h, pid, &i2, &["--parent", i1.to_str().unwrap(), "--kill"], &[]);
    assert!(v2["parent"].is_string(), "{v2}");
    assert!(p.wait_timeout(SECS20).is_some(), "--kill left the target running");
    restart_finishes_as_reference(&h, &i2, &log, &reference, pid, "dirty log after restarting a chain across dropped memory");
}

/// A parent without tracking, or one whose tracking another checkpoint has
/// used since, gives a full image (said so), never one that misses writes;
/// a parent of another process is refused and the target left as it was.
#[test]
fn incremental_falls_back_to_full_when_tracking_does_not_match() {
    let h = Harness::with_cryo("incremental-fallback");
    let (mut p, log, reference) = dirty_running(&h, "150", "40");
    let pid = p.pid();
    let plain = h.path("plain");
    checkpoint_json(&h, pid, &plain, &[], &[]);
    let (out, v) = checkpoint_json(&h, pid, &h.path("a"), &["--parent", plain.to_str().unwrap()], &[]);
    assert!(v["parent"].is_null(), "no tracking in the parent: a full image: {v}");
    assert!(out.stderr.contains("without write tracking"), "says why:\n{}", out.describe());

    // t0 (tracked), t1 against t0, then t2 against t0 again: t1's scan used
    // t0's tracking, so t2 must be full.
    let (t0, t1) = (h.path("t0"), h.path("t1"));
    checkpoint_json(&h, pid, &t0, &["--track"], &[]);
    let (_, v1) = checkpoint_json(&h, pid, &t1, &["--parent", t0.to_str().unwrap()], &[]);
    assert!(v1["parent"].is_string(), "{v1}");
    let (out, v2) = checkpoint_json(&h, pid, &h.path("t2"), &["--parent", t0.to_str().unwrap()], &[]);
    assert!(v2["parent"].is_null(), "t0's tracking was used by t1: {v2}");
    assert!(out.stderr.contains("not the one its parent image left"), "says why:\n{}", out.describe());

    // A failed incremental checkpoint (after its scan) spoils its parent for
    // the next one. t2 was full, but tracked: a parent.
    let t2 = h.path("t2");
    let t3 = h.path("t3");
    let pid_s = pid.to_string();
    let out = h.cryo_run_env(&["checkpoint", &pid_s, "-o", t3.to_str().unwrap(), "--parent", t2.to_str().unwrap()], &[("CRYO_FAULT", "pages")]);
    out.assert_clean_failure();
    assert_running_untouched(pid, &log, 0, "after a failed incremental checkpoint");
    let (_, v4) = checkpoint_json(&h, pid, &h.path("t4"), &["--parent", t2.to_str().unwrap()], &[]);
    assert!(v4["parent"].is_null(), "the failed checkpoint had scanned: full: {v4}");

    // Another tree's image as parent: refused before anything is touched.
    let other = h.compile("ticker");
    let (_q, qlog) = h.spawn(&[other.to_str().unwrap(), "100", "0", "0"], "ticker.log");
    qlog.wait_prefix("tick 2 ", SECS20);
    let out = h.cryo_run(&["checkpoint", &_q.pid().to_string(), "-o", h.path("x").to_str().unwrap(), "--parent", t0.to_str().unwrap()]);
    out.assert_clean_failure();
    assert!(out.stderr.contains("not of this tree"), "{}", out.describe());
    assert_running_untouched(_q.pid(), &qlog, 0, "after a refused --parent");

    let st = p.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "dirty exited with {}", describe_status(st));
    assert_text_eq(&log.text(), &heap_expected(&reference, pid), "dirty log");
}

/// A checkpoint that fails while the target is frozen (`--direct`), or after
/// letting it go (while writing from the snapshot), takes the write tracking
/// it started away again: the target has no userfaultfd after it.
#[test]
fn failed_tracked_checkpoint_leaves_no_tracking() {
    let cases = [("--direct", "tracking"), ("--direct", "pages"), ("--direct", "image-write"), ("", "snapshot-pages"), ("", "image-write")];
    for (mode, stage) in cases {
        let h = Harness::with_cryo(&format!("track-fault-{stage}"));
        let (mut p, log, reference) = dirty_running(&h, "100", "30");
        let pid = p.pid();
        let pid_s = pid.to_string();
        let img = h.path("img");
        let mut args = vec!["checkpoint", &pid_s, "-o", img.to_str().unwrap(), "--track"];
        args.extend(Some(mode).filter(|m| !m.is_empty()));
        let out = h.cryo_run_env(&args, &[("CRYO_FAULT", stage)]);
        out.assert_clean_failure();
        assert!(!has_userfaultfd(pid), "{mode} {stage}: a userfaultfd was left in the target");
        assert_running_untouched(pid, &log, 0, stage);
        let st = p.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "{stage}: dirty exited with {}", describe_status(st));
        assert_text_eq(&log.text(), &heap_expected(&reference, pid), stage);
    }
}

/// The dirty workload rewriting 64 pages every 10 ms (so that it writes
/// while a pre-copy reads its memory), its reference log, and a running copy.
fn busy_dirty_running(h: &Harness) -> (Proc, Log, String) {
    let prog = h.compile("dirty");
    let prog = prog.to_str().unwrap();
    let reference = h.reference_log(prog, &["250", "0", DIRTY_MIB, "64"], SECS20);
    let (p, _) = h.spawn(&[prog, "dirty.log", "250", "10", DIRTY_MIB, "64"], "dirty.out");
    let log = Log::new(h.path("dirty.log"));
    log.wait_prefix("step 3 ", SECS20);
    (p, log, reference)
}

/// Bytes of the files of a directory (not of its subdirectories).
fn files_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).unwrap().flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// `--precopy` copies memory while the target runs, then stops it again
/// for what it wrote meanwhile: two stops, the copy inside the image (and
/// refused on its own), no write tracking left unless asked (--track), and
/// restarts of both images, the second chained further with --parent,
/// finish as the reference run although the target wrote all along.
#[test]
fn pre_copy_stores_what_was_written_during_the_copy() {
    let h = Harness::with_cryo("pre-copy");
    let (mut p, log, reference) = busy_dirty_running(&h);
    let pid = p.pid();
    let (a, b, c) = (h.path("a"), h.path("b"), h.path("c"));
    let (out, v) = checkpoint_json(&h, pid, &a, &["--precopy"], &[]);
    let stops = v["stops_us"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(stops.len(), 2, "two stops: {v}");
    assert_eq!(stops.iter().map(|s| s.as_u64().unwrap()).sum::<u64>(), v["frozen_us"].as_u64().unwrap(), "{v}");
    let copied = files_bytes(&a.join("precopy"));
    assert!(copied >= 60 << 20, "the pre-copy holds the buffer ({copied} bytes):\n{}", out.describe());
    let own = files_bytes(&a);
    assert!(own < 32 << 20, "the image itself holds only what was written during the copy ({own} bytes): {v}");
    assert!(!has_userfaultfd(pid), "a pre-copy without --track takes its tracking away again");
    assert_running_untouched(pid, &log, 0, "after a pre-copy");
    let stray: Vec<_> = std::fs::read_dir(h.path("")).unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().contains("precopy")).collect();
    assert!(stray.is_empty(), "nothing of the pre-copy is left beside the image: {stray:?}");

    let out = h.cryo_run(&["restart", a.join("precopy").to_str().unwrap(), "--detach"]);
    out.assert_clean_failure();
    assert!(out.stderr.contains("while the tree ran") && out.stderr.contains(a.to_str().unwrap()), "says what to restart instead:\n{}", out.describe());

    let (_, v) = checkpoint_json(&h, pid, &b, &["--precopy", "--track"], &[]);
    assert!(has_userfaultfd(pid), "--precopy --track leaves the tracking: {v}");
    let (_, v) = checkpoint_json(&h, pid, &c, &["--parent", b.to_str().unwrap(), "--kill"], &[]);
    assert!(v["parent"].is_string(), "incremental against the pre-copied image: {v}");
    assert!(p.wait_timeout(SECS20).is_some(), "--kill left the target running");
    restart_finishes_as_reference(&h, &c, &log, &reference, pid, "dirty log after restarting a chain over a pre-copied image");
    restart_finishes_as_reference(&h, &a, &log, &reference, pid, "dirty log after restarting the pre-copied image");
}

/// A pre-copy that fails while the target runs between its passes, or in
/// its final pass, leaves the target running untracked, and no image or
/// copy behind.
#[test]
fn failed_pre_copy_leaves_the_target_as_it_was() {
    for stage in ["precopy", "image-write@2", "tracking@2"] {
        let h = Harness::with_cryo(&format!("pre-copy-fault-{}", stage.replace('@', "-")));
        let (mut p, log, reference) = busy_dirty_running(&h);
        let pid = p.pid();
        let pid_s = pid.to_string();
        let img = h.path("img");
        let out = h.cryo_run_env(&["checkpoint", &pid_s, "-o", img.to_str().unwrap(), "--precopy"], &[("CRYO_FAULT", stage)]);
        out.assert_clean_failure();
        assert!(!has_userfaultfd(pid), "{stage}: a userfaultfd was left in the target");
        assert_running_untouched(pid, &log, 0, stage);
        let left: Vec<_> = std::fs::read_dir(h.path("")).unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().contains("img")).collect();
        assert!(left.is_empty(), "{stage}: left behind: {left:?}");
        let st = p.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "{stage}: dirty exited with {}", describe_status(st));
        assert_text_eq(&log.text(), &heap_expected(&reference, pid), stage);
    }
}

/// `cryo launch --full-every 3 --precopy`: the full images are taken with a
/// pre-copy, the images between them are incremental against the one
/// before, pruning keeps every parent a kept image needs, and `cryo restart
/// DIR` after a crash goes through the chain.
#[test]
fn periodic_series_chains_incremental_images() {
    let h = Harness::with_cryo("periodic-incremental");
    let prog = h.compile("dirty");
    let prog = prog.to_str().unwrap();
    let reference = h.reference_log(prog, &["400", "0", DIRTY_MIB, "4"], SECS20);
    let dir = h.path("images");
    let log_path = h.path("dirty.log");
    let mut launch = h.cryo_spawn(
        &[
            "launch", "-o", dir.to_str().unwrap(), "--interval", "700ms", "--keep", "2", "--full-every", "3", "--precopy", "--", prog,
            log_path.to_str().unwrap(), "400", "25", DIRTY_MIB, "4",
        ],
        std::process::Stdio::null(),
    );
    let log = Log::new(log_path);
    let list = || -> Vec<serde_json::Value> {
        let out = h.cryo_run(&["list", dir.to_str().unwrap(), "--json"]);
        out.assert_ok();
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    };
    wait_until(
        Duration::from_secs(30),
        || dir.exists() && list().iter().any(|e| e["name"] == "img-0005" && e["complete"] == true),
        || format!("no fifth image:\n{}", launch.stderr_text()),
    );
    // The job crashes; with attach gone the directory holds still.
    let job = *children(launch.pid()).first().expect("the job runs");
    send_signal(job, libc::SIGKILL);
    launch.wait_exit(SECS20);
    let entries = list();
    let kept: Vec<&serde_json::Value> = entries.iter().filter(|e| e["complete"] == true).collect();
    // img-0001 full, 0002 and 0003 incremental, 0004 full, ...; the full
    // ones taken with a pre-copy, which they hold.
    let incremental = |e: &serde_json::Value| e["parent"].as_str().is_some_and(|p| p != "precopy");
    for e in &kept {
        let seq: u64 = e["name"].as_str().unwrap()["img-".len()..].parse().unwrap();
        assert_eq!(incremental(e), seq % 3 != 1, "--full-every 3: {e}");
        if incremental(e) {
            assert!(e["bytes"].as_u64().unwrap() < 4 << 20, "incremental images are small: {e}");
        } else {
            assert_eq!(e["parent"], "precopy", "--precopy: the full image holds its copy: {e}");
        }
    }
    assert!(kept.iter().any(|e| incremental(e)), "an incremental image is kept: {entries:?}");
    // Pruning (--keep 2) left every parent a kept image needs.
    for e in &kept {
        if let Some(p) = e["parent"].as_str() {
            let parent = std::path::Path::new(e["path"].as_str().unwrap()).join(p);
            assert!(parent.join("inventory.cryo").exists(), "{} needs {}, which pruning removed", e["name"], parent.display());
        }
    }
    restart_finishes_as_reference(&h, &dir, &log, &reference, job, "dirty log after restarting the series");
}

// ---------------------------------------------------------------------------------------
// Zero pages and compression
// ---------------------------------------------------------------------------------------

/// A python3 heap with 64 MiB of pages that were written but hold only
/// zeros, and 1 MiB of random bytes: the zero pages are not stored, and
/// after the restart the process still sees zeros and the same random bytes.
#[test]
fn zero_pages_are_not_stored() {
    let h = Harness::with_cryo("zero-pages");
    let script = "import os, time, zlib\n\
                  zero = bytearray(64 << 20)\n\
                  for i in range(0, len(zero), 4096):\n    zero[i] = 0\n\
                  tail = bytearray(os.urandom(1 << 20))\n\
                  crc = zlib.crc32(tail)\n\
                  for i in range(1, 41):\n    print(f'count {i} zero {any(zero)} crc {zlib.crc32(tail) == crc}', flush=True)\n    time.sleep(0.1)\n\
                  print('done', flush=True)\n";
    let script = h.write_file("zero.py", script, 0o644);
    let (mut p, log) = h.spawn(&["/usr/bin/python3", "-u", script.to_str().unwrap()], "count.log");
    log.wait_prefix("count 5 ", SECS20);
    let rss_kb: u64 = status_field(p.pid(), "VmRSS").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(rss_kb > 64 << 10, "the zero pages are resident: {rss_kb} kB");
    let img = h.path("img");
    let (_, v) = checkpoint_json(&h, p.pid(), &img, &["--kill"], &[]);
    assert!(p.wait_timeout(SECS20).is_some());
    let bytes = v["bytes"].as_u64().unwrap();
    assert!(bytes < 40 << 20, "64 MiB of zero pages are not stored ({bytes} bytes, RSS {rss_kb} kB): {v}");
    h.restart_detached(&img);
    log.wait_line("done");
    let lines = log.lines();
    assert_eq!(assert_consecutive(&lines, "count ", "zero pages"), 40);
    assert!(lines.iter().filter(|l| l.starts_with("count")).all(|l| l.ends_with("zero False crc True")), "{lines:?}");
}

/// `--compress lz4|zstd` images restart to the same state: a low-freeze one
/// (lz4) and an incremental chain over a compressed parent (zstd).
#[test]
fn compressed_images_restart() {
    let h = Harness::with_cryo("compress");
    let (mut p, log, reference) = heap_running(&h);
    let pid = p.pid();
    let img = h.path("lz4");
    let (_, v) = checkpoint_json(&h, pid, &img, &["--compress", "lz4"], &[]);
    assert_eq!(v["snapshots"], 1, "{v}");
    let out = h.cryo_run(&["inspect", img.to_str().unwrap()]);
    out.assert_ok();
    restart_matches_reference(&h, &mut p, &log, &reference, &img);

    let h = Harness::with_cryo("compress-incremental");
    let (mut p, log, reference) = dirty_running(&h, "150", "40");
    let pid = p.pid();
    let (z0, z1) = (h.path("z0"), h.path("z1"));
    checkpoint_json(&h, pid, &z0, &["--track", "--compress", "zstd"], &[]);
    let (_, v1) = checkpoint_json(&h, pid, &z1, &["--parent", z0.to_str().unwrap(), "--kill"], &[]);
    assert!(v1["parent"].is_string(), "{v1}");
    assert!(p.wait_timeout(SECS20).is_some());
    let core = h.path("core");
    h.cryo_run(&["core", z1.to_str().unwrap(), "-o", core.to_str().unwrap()]).assert_ok();
    restart_finishes_as_reference(&h, &z1, &log, &reference, pid, "dirty log after restarting a chain over a zstd image");
}

/// Compressible memory (python3, 64 MiB of a repeated pattern) makes a small
/// compressed image with either codec.
#[test]
fn compression_shrinks_compressible_memory() {
    for codec in ["lz4", "zstd"] {
        let h = Harness::with_cryo(&format!("compressible-{codec}"));
        let script = "import time, zlib\n\
                      data = bytearray(b'cryo-1234' * (7 << 20))\n\
                      crc = zlib.crc32(data)\n\
                      for i in range(1, 31):\n    print(f'count {i} same {zlib.crc32(data) == crc}', flush=True)\n    time.sleep(0.1)\n\
                      print('done', flush=True)\n";
        let script = h.write_file("pattern.py", script, 0o644);
        let (mut p, log) = h.spawn(&["/usr/bin/python3", "-u", script.to_str().unwrap()], "count.log");
        log.wait_prefix("count 3 ", SECS20);
        let img = h.path("img");
        let (_, v) = checkpoint_json(&h, p.pid(), &img, &["--kill", "--compress", codec], &[]);
        assert!(p.wait_timeout(SECS20).is_some());
        let bytes = v["bytes"].as_u64().unwrap();
        assert!(bytes < 16 << 20, "{codec}: 63 MiB of a pattern compress ({bytes} bytes): {v}");
        h.restart_detached(&img);
        log.wait_line("done");
        let lines = log.lines();
        assert_eq!(assert_consecutive(&lines, "count ", codec), 30);
        assert!(lines.iter().filter(|l| l.starts_with("count")).all(|l| l.ends_with("same True")), "{codec}: {lines:?}");
    }
}

/// Memory a fork would not see as it is (MADV_WIPEONFORK, MADV_DONTFORK)
/// makes the checkpoint write memory while stopped instead of from a
/// snapshot; the image holds it.
#[test]
fn memory_hidden_from_forks_is_dumped_directly() {
    let h = Harness::with_cryo("fork-advice");
    let prog = h.compile("forkadvice");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "60"], "ticks.log");
    let first = log.wait_prefix("tick 3 ", SECS20);
    let sum = first.split_whitespace().nth(3).unwrap().to_string();
    let img = h.path("img");
    let (_, v) = checkpoint_json(&h, p.pid(), &img, &[], &[]);
    assert_eq!(v["snapshots"], 0, "no snapshot of such memory: {v}");
    assert_running_untouched(p.pid(), &log, 0, "after the checkpoint");
    assert_eq!(advised_areas(p.pid()), ["dc", "wf"], "the program's own advice");
    p.kill();
    let before = log.lines().len();
    let restored = h.restart_detached(&img);
    assert_eq!(advised_areas(restored), ["dc", "wf"], "the restarted process has the advice its areas had");
    assert_ticks_kept_sum(&log, before, 60, &sum, "fork advice");
}

/// The fork advice (VmFlags "dc", "wf") of a forkadvice process's two 8 MiB
/// areas, sorted.
fn advised_areas(pid: i32) -> Vec<&'static str> {
    let mut out: Vec<&str> = vm_flags_of_size(pid, 8192, &["dc", "wf"]).concat();
    out.sort_unstable();
    out
}

/// An incremental checkpoint of a process that rewrote most of its memory
/// is written from a snapshot like a full one, and restarts exactly.
#[test]
fn incremental_of_much_written_memory_uses_a_snapshot() {
    let h = Harness::with_cryo("incremental-snapshot");
    let (mut p, log, reference) = heap_running(&h);
    let pid = p.pid();
    let (t0, t1) = (h.path("t0"), h.path("t1"));
    checkpoint_json(&h, pid, &t0, &["--track"], &[]);
    log.wait_growth(log.line_count(), 3, SECS20);
    let (_, v) = checkpoint_json(&h, pid, &t1, &["--parent", t0.to_str().unwrap()], &[]);
    assert!(v["parent"].is_string(), "{v}");
    assert_eq!(v["snapshots"], 1, "{v}");
    restart_matches_reference(&h, &mut p, &log, &reference, &t1);
}

/// An incremental checkpoint takes the memory flags of areas unchanged since
/// its parent image from the parent (/proc/PID/smaps is slow). A whole-area
/// MADV_WIPEONFORK or MADV_DONTFORK given since is not in them: before a
/// snapshot is relied on they are read again, so such memory is written
/// directly and comes back as it was written.
#[test]
fn incremental_after_new_fork_advice_is_dumped_directly() {
    let h = Harness::with_cryo("fork-advice-late");
    let prog = h.compile("forkadvice");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "200", "late"], "ticks.log");
    let pid = p.pid();
    log.wait_prefix("tick 3 ", SECS20);
    let (t0, t1) = (h.path("t0"), h.path("t1"));
    let (_, v0) = checkpoint_json(&h, pid, &t0, &["--track"], &[]);
    assert_eq!(v0["snapshots"], 1, "no advice yet: written from a snapshot: {v0}");
    send_signal(pid, libc::SIGUSR1);
    log.wait_line("advised");
    let base = log.line_count();
    log.wait_growth(base, 1, SECS20);
    let sum = log.lines()[base].split_whitespace().nth(3).unwrap().to_string();
    let (_, v1) = checkpoint_json(&h, pid, &t1, &["--parent", t0.to_str().unwrap()], &[]);
    assert!(v1["parent"].is_string(), "incremental: {v1}");
    assert_eq!(v1["snapshots"], 0, "memory a fork would not see is written while stopped: {v1}");
    assert!(v1["bytes"].as_u64().unwrap() >= 16 << 20, "both rewritten areas are in the image: {v1}");
    assert_running_untouched(pid, &log, 0, "after the incremental checkpoint");
    p.kill();
    let before = log.lines().len();
    h.restart_detached(&t1);
    log.wait_line("done");
    let lines = log.lines();
    assert!(lines.len() > before, "no progress after the restart");
    assert_eq!(assert_consecutive(&lines, "tick ", "fork advice"), 200);
    let after: Vec<&String> = lines.iter().skip(base).filter(|l| l.starts_with("tick ")).collect();
    for l in after {
        assert_eq!(l.split_whitespace().nth(3), Some(sum.as_str()), "the areas came back as they were written: {l}");
    }
}
