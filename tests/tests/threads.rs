//! Multi-threaded processes (issue 3, threads): every thread comes back with
//! its own tid, registers, TLS and futex waits, and the program's own
//! invariants hold across the restart.

use cryo_tests::*;
use std::time::Duration;

const SECS20: Duration = Duration::from_secs(20);

/// Four threads take turns under a mutex and a condition variable and check the
/// shared state themselves; the steps must run on without gap or repeat.
#[test]
fn c_threads_with_mutex_and_condvar_continue() {
    let h = Harness::with_cryo("threads");
    let prog = h.compile_with("threads", &["-pthread"]);
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "300", "15"], "threads.log");
    let pid = p.pid();
    log.wait_prefix("step 30 ", SECS20);
    let tids_before: Vec<i32> = task_ids(pid);
    assert_eq!(tids_before.len(), 5, "main + 4 workers before the checkpoint");

    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let host = h.restart_detached(&img);
    let tids_after = task_ids(host);
    assert_eq!(tids_after.len(), 5, "all threads must come back: {tids_after:?}");
    // Each thread sees its old tid in the namespace.
    let mut inner: Vec<i32> = tids_after.iter().map(|t| *nspids(*t).last().unwrap()).collect();
    inner.sort();
    assert_eq!(inner, tids_before, "thread ids inside the namespace");

    log.wait_prefix("done ", SECS20);
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "invariant broken: {lines:?}");
    assert_eq!(assert_consecutive(&lines, "step ", "threads"), 300);
    assert_eq!(lines.last().map(String::as_str), Some("done 300"));
}

/// python3 with a worker thread that counts under a lock while the main
/// thread waits for it with join(timeout): both continue after restart.
#[test]
fn python_worker_thread_continues() {
    let h = Harness::with_cryo("pythreads");
    let script = "\
import threading, time
lock = threading.Lock()
count = 0
def work():
    global count
    for _ in range(40):
        with lock:
            count += 1
            print(f'count {count}', flush=True)
        time.sleep(0.1)
t = threading.Thread(target=work)
t.start()
while t.is_alive():
    t.join(0.05)
print('done', flush=True)
";
    let file = h.write_file("threads.py", script, 0o644);
    let (mut p, log) = h.spawn(&["/usr/bin/python3", "-u", file.to_str().unwrap()], "py.log");
    log.wait_line("count 8");
    assert_eq!(task_ids(p.pid()).len(), 2, "main + worker");
    h.checkpoint_kill(&mut p, &h.path("img"));
    let host = h.restart_detached(&h.path("img"));
    assert_eq!(task_ids(host).len(), 2, "worker thread must come back");
    log.wait_line("done");
    let lines = log.lines();
    assert_eq!(assert_consecutive(&lines, "count ", "python threads"), 40, "{lines:?}");
}

fn task_ids(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A process that creates and joins threads all the time: the freeze must catch
/// threads born while it seizes, and the restarted program must carry on.
#[test]
fn threads_created_during_the_freeze() {
    let h = Harness::with_cryo("spawner");
    let prog = h.compile_with("spawner", &["-pthread"]);
    let prog = prog.to_str().unwrap();
    // Checkpoints that leave it running, each racing with thread creation.
    let (mut p, log) = h.spawn(&[prog, "400"], "spawner.log");
    log.wait_line("round 5");
    for i in 0..5 {
        let img = h.path(&format!("img{i}"));
        h.cryo_run(&["checkpoint", &p.pid().to_string(), "-o", img.to_str().unwrap()]).assert_ok();
        assert!(p.running(), "checkpoint {i} must leave it running");
    }
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    h.restart_detached(&img);
    log.wait_line("done");
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{lines:?}");
    assert_eq!(assert_consecutive(&lines, "round ", "spawner"), 400);
}
