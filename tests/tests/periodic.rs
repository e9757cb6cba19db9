//! Periodic checkpoints (issue 10): `cryo launch` / `cryo attach` take images
//! on an interval into a series; restart picks the latest complete one; a
//! failed or interrupted checkpoint never replaces the latest.

use cryo_tests::*;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;

const SECS20: Duration = Duration::from_secs(20);

fn list(h: &Harness, dir: &std::path::Path) -> Vec<Value> {
    let out = h.cryo_run(&["list", dir.to_str().unwrap(), "--json"]);
    out.assert_ok();
    serde_json::from_str::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn complete(entries: &[Value]) -> Vec<String> {
    entries.iter().filter(|e| e["complete"] == true).map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

fn latest(entries: &[Value]) -> Option<String> {
    entries.iter().find(|e| e["latest"] == true).map(|e| e["name"].as_str().unwrap().to_string())
}

fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    wait_until(timeout, cond, || format!("timed out waiting for {what}"));
}

/// A job launched with a short interval leaves several images (only the last
/// two kept); it crashes; `cryo restart DIR` takes it on from the latest image
/// and it finishes with every tick once.
#[test]
fn launched_job_is_restarted_from_the_latest_image_after_a_crash() {
    let h = Harness::with_cryo("periodic-launch");
    let ticker = h.compile("ticker");
    let dir = h.path("images");
    let log = h.path("job.log");
    let job = format!("exec {} 50 120 0 > {}", ticker.display(), log.display());
    let mut launch = h.cryo_spawn(
        &["launch", "-o", dir.to_str().unwrap(), "--interval", "1s", "--keep", "2", "--full-every", "1", "--", "/bin/sh", "-c", &job],
        Stdio::null(),
    );
    let log = Log::new(log);
    wait_for("a third image", SECS20, || dir.exists() && complete(&list(&h, &dir)).iter().any(|n| n == "img-0003"));
    let entries = list(&h, &dir);
    assert_eq!(complete(&entries).len(), 2, "--keep 2: {entries:?}");
    assert_eq!(latest(&entries), complete(&entries).last().cloned(), "the newest complete image is the latest");

    // The job crashes between two checkpoints.
    let job_pid = *children(launch.pid()).first().expect("the job runs");
    send_signal(job_pid, libc::SIGKILL);
    let st = launch.wait_exit(SECS20);
    assert_eq!(st.code(), Some(128 + 9), "launch exits with the job's status\n{}", launch.stderr_text());
    assert!(launch.stderr_text().contains("the job ended"), "{}", launch.stderr_text());

    h.restart_detached(&dir);
    log.wait_line("exit 0");
    let lines = log.lines();
    assert_eq!(assert_consecutive(&lines, "tick ", "restarted job"), 120);
}

/// SIGTERM to `cryo attach` (what a batch system sends before the time limit)
/// takes a last image and leaves the job running.
#[test]
fn sigterm_to_attach_takes_a_final_image() {
    let h = Harness::with_cryo("periodic-sigterm");
    let ticker = h.compile("ticker");
    let (p, log) = h.spawn(&[ticker.to_str().unwrap(), "50", "0", "0"], "ticker.log");
    log.wait_prefix("tick 3 ", SECS20);
    let dir = h.path("images");
    let mut attach = h.cryo_spawn(&["attach", &p.pid().to_string(), "-o", dir.to_str().unwrap(), "--interval", "1h", "--jobs", "1"], Stdio::null());
    wait_for("attach.pid", SECS20, || dir.join("attach.pid").exists());
    assert!(complete(&list(&h, &dir)).is_empty(), "no image before the interval");
    send_signal(attach.pid(), libc::SIGTERM);
    let st = attach.wait_exit(SECS20);
    assert_eq!(st.code(), Some(0), "{}", attach.stderr_text());
    let entries = list(&h, &dir);
    assert_eq!(complete(&entries), vec!["img-0001".to_string()], "{entries:?}");
    assert_eq!(latest(&entries).as_deref(), Some("img-0001"));
    assert!(!dir.join("attach.pid").exists(), "attach removes its pidfile");
    assert_running_untouched(p.pid(), &log, 0, "after the final checkpoint");
}

/// `cryo checkpoint --now DIR` asks the attach for an image; a checkpoint
/// that fails half-way (an injected write failure) leaves the previous image
/// the latest, no partial image behind, and the job untouched.
#[test]
fn failed_periodic_checkpoint_keeps_the_previous_latest() {
    let h = Harness::with_cryo("periodic-fault");
    let ticker = h.compile("ticker");
    let (p, log) = h.spawn(&[ticker.to_str().unwrap(), "50", "0", "0"], "ticker.log");
    log.wait_prefix("tick 3 ", SECS20);
    let dir = h.path("images");
    let _attach = h.cryo_spawn_env(
        &["attach", &p.pid().to_string(), "-o", dir.to_str().unwrap(), "--interval", "1h"],
        &[("CRYO_FAULT", "image-write@2")],
        Stdio::null(),
    );
    wait_for("attach.pid", SECS20, || dir.join("attach.pid").exists());
    let d = dir.to_str().unwrap();
    h.cryo_run(&["checkpoint", "--now", d]).assert_ok();
    h.cryo_run(&["checkpoint", "--now", d]).assert_clean_failure().assert_stderr_mentions(&["failed", "image-write"]);
    let entries = list(&h, &dir);
    assert_eq!(entries.len(), 1, "the failed image was removed: {entries:?}");
    assert_eq!(latest(&entries).as_deref(), Some("img-0001"));
    assert_running_untouched(p.pid(), &log, 0, "after a failed periodic checkpoint");
    h.cryo_run(&["checkpoint", "--now", d]).assert_ok();
    assert_eq!(latest(&list(&h, &dir)).as_deref(), Some("img-0002"));
}
