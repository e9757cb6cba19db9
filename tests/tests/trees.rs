//! Process trees (issue 3): `cryo checkpoint PID` takes PID and every
//! descendant, and `cryo restart` rebuilds the same shape: parents, sessions,
//! groups, pipes with their bytes, shared memory, zombies, pending signals.

use cryo_tests::*;
use serde_json::Value;
use std::time::Duration;

const SECS20: Duration = Duration::from_secs(20);

fn inspect_json(h: &Harness, img: &std::path::Path) -> Value {
    let out = h.cryo_run(&["inspect", img.to_str().unwrap(), "--json"]);
    out.assert_ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("inspect --json: {e}\n{}", out.stdout))
}

/// A parent and three children talking over pipes, with a shared anonymous
/// counter: every message arrives once, in order, and the parent reaps its
/// children by their old pids.
#[test]
fn parent_with_three_children_over_pipes_and_shared_memory() {
    let h = Harness::with_cryo("tree-pipes");
    let prog = h.compile("tree_pipes");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "150", "10"], "tree.log");
    log.wait_prefix("msg 60 ", SECS20);
    let kids: Vec<String> = log.lines().iter().filter(|l| l.starts_with("child ")).cloned().collect();
    assert_eq!(kids.len(), 3, "{kids:?}");

    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let inv = inspect_json(&h, &img);
    let tree = inv["tree"].as_array().expect("inspect lists the tree");
    assert_eq!(tree.len(), 4, "parent + 3 children: {tree:?}");
    for k in &tree[1..] {
        assert_eq!(k["ppid"], tree[0]["pid"], "children of the root: {tree:?}");
    }
    let pipes = inv["pipes"].as_array().expect("pipes listed");
    assert_eq!(pipes.len(), 3, "one pipe per child: {pipes:?}");
    let queued: u64 = pipes.iter().map(|p| p["queued_bytes"].as_u64().unwrap()).sum();
    assert!(queued > 0, "the parent reads slower than the children write, so the pipes hold bytes: {pipes:?}");

    let host = h.restart_detached(&img);
    assert_eq!(children(host).len(), 3, "the children are children of the restored parent");
    log.wait_prefix("done ", SECS20);
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{}", lines.join("\n"));
    assert_eq!(assert_consecutive(&lines, "msg ", "messages over pipes"), 450);
    for (i, k) in kids.iter().enumerate() {
        let pid = k.split_whitespace().nth(3).unwrap();
        assert!(lines.contains(&format!("reaped {pid} status 0")), "child {i} (pid {pid}) reaped by its old pid:\n{}", lines.join("\n"));
    }
    assert_eq!(lines.last().map(String::as_str), Some("done 450 shared 450"));
}

/// `producer | consumer` checkpointed from its shell: bash, both sides of the
/// pipeline and the `sleep` running at that moment come back.
#[test]
fn shell_pipeline_checkpointed_from_its_shell() {
    let h = Harness::with_cryo("tree-pipeline");
    let script = h.write_file(
        "pipeline.sh",
        "for i in $(seq 1 120); do echo \"line $i\"; sleep 0.02; done | while read l; do echo \"got $l\"; done\necho finished\n",
        0o644,
    );
    let (mut p, log) = h.spawn(&["/bin/bash", script.to_str().unwrap()], "pipeline.log");
    log.wait_line("got line 20");
    assert!(children(p.pid()).len() >= 2, "both sides of the pipeline run");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let tree = inspect_json(&h, &img)["tree"].as_array().unwrap().len();
    assert!(tree >= 3, "shell + producer + consumer, got {tree}");
    h.restart_detached(&img);
    log.wait_line("finished");
    let lines = log.lines();
    assert_eq!(assert_consecutive(&lines, "got line ", "pipeline"), 120);
}

/// Children that exited (one with a status, one by a signal) and were not yet
/// reaped are zombies again after restart; the parent's waitpid gets them.
#[test]
fn zombie_children_are_reaped_after_restart() {
    let h = Harness::with_cryo("tree-zombie");
    let prog = h.compile("zombie");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "40", "50"], "zombie.log");
    let first = log.wait_prefix("children ", SECS20);
    let pids: Vec<&str> = first.split_whitespace().skip(1).collect();
    log.wait_line("tick 5");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let inv = inspect_json(&h, &img);
    let zombies = inv["tree"].as_array().unwrap().iter().filter(|e| e["state"].as_str().unwrap().starts_with("zombie")).count();
    assert_eq!(zombies, 2, "{}", inv["tree"]);

    let host = h.restart_detached(&img);
    let kids = children(host);
    assert_eq!(kids.len(), 2, "two zombie children");
    for k in kids {
        assert_eq!(proc_state(k), Some('Z'), "child {k} is a zombie again");
    }
    log.wait_line("done");
    let lines = log.lines();
    assert!(lines.contains(&format!("reaped {} exit 7", pids[0])), "{}", lines.join("\n"));
    assert!(lines.contains(&format!("reaped {} signal 15", pids[1])), "{}", lines.join("\n"));
    assert_eq!(assert_consecutive(&lines, "tick ", "zombie parent"), 40);
}

/// Signals pending (blocked) at the checkpoint are delivered after the program
/// unblocks them in the restored process: a SIGUSR1 from kill() once, and each
/// of two SIGRTMIN+2 queued with sigqueue() with its own value and si_code.
/// The sender's pid reads 0: the kernel clears it for a signal queued from
/// outside the receiver's pid namespace, where cryo is.
#[test]
fn pending_signal_is_delivered_after_restart() {
    let h = Harness::with_cryo("tree-pending");
    let prog = h.compile("pending");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "40", "25", "50"], "pending.log");
    log.wait_line("ready");
    let rt = libc::SIGRTMIN() + 2;
    send_signal(p.pid(), libc::SIGUSR1);
    queue_signal(p.pid(), rt, 5);
    queue_signal(p.pid(), rt, 9);
    log.wait_prefix("tick 3 ", SECS20);
    let pending = u64::from_str_radix(&status_field(p.pid(), "ShdPnd").unwrap(), 16).unwrap();
    for sig in [libc::SIGUSR1, rt] {
        assert_ne!(pending & (1 << (sig - 1)), 0, "signal {sig} pending before the checkpoint ({pending:x})");
    }
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    h.restart_detached(&img);
    log.wait_prefix("done ", SECS20);
    let lines = log.lines();
    assert!(lines.contains(&"tick 24 got 0 rt 0 sum 0 code 0 pid 0".to_string()), "not before the unblock:\n{}", lines.join("\n"));
    let delivered = format!("got 1 rt 2 sum 14 code {} pid 0", libc::SI_QUEUE);
    assert!(lines.contains(&format!("tick 25 {delivered}")), "delivered at the unblock, each queued signal with its siginfo:\n{}", lines.join("\n"));
    assert_eq!(lines.last(), Some(&format!("done {delivered}")));
}

/// sigqueue(pid, sig, value).
fn queue_signal(pid: i32, sig: i32, value: usize) {
    // sival_int is the low half of sival_ptr on this little-endian target.
    let v = libc::sigval { sival_ptr: value as *mut libc::c_void };
    // SAFETY: sigqueue takes its value by copy.
    let r = unsafe { libc::sigqueue(pid, sig, v) };
    assert_eq!(r, 0, "sigqueue({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// A program that forks every few milliseconds: checkpoints taken while it
/// forks hold live children, zombies and children being born; it never
/// notices them, and after a restart it reaps every child with its status.
#[test]
fn tree_forking_during_the_seize() {
    let h = Harness::with_cryo("tree-forker");
    let prog = h.compile("forker");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "4000"], "forker.log");
    log.wait_prefix("reap 20", SECS20);
    let mut biggest = 0;
    for i in 0..5 {
        let img = h.path(&format!("snap{i}"));
        h.cryo_run(&["checkpoint", &p.pid().to_string(), "-o", img.to_str().unwrap(), "--leave-running"]).assert_ok();
        biggest = biggest.max(inspect_json(&h, &img)["tree"].as_array().unwrap().len());
    }
    assert!(biggest > 2, "the tree had children at some checkpoint (largest: {biggest})");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    h.restart_detached(&img);
    log.wait_prefix("done ", Duration::from_secs(60));
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{}", lines.join("\n"));
    assert_eq!(assert_consecutive(&lines, "spawn ", "forker spawns"), 4000);
    assert_eq!(assert_consecutive(&lines, "reap ", "forker reaps"), 4000);
}

/// A checkpoint that fails at the last process of a tree leaves every process
/// running untraced, as before.
#[test]
fn failed_tree_checkpoint_leaves_every_process_running() {
    let h = Harness::with_cryo("tree-fault");
    let prog = h.compile("tree_pipes");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "400", "10"], "tree.log");
    log.wait_prefix("msg 30 ", SECS20);
    let kids = children(p.pid());
    assert_eq!(kids.len(), 3);
    let img = h.path("img");
    let out = h.cryo_run_env(&["checkpoint", &p.pid().to_string(), "-o", img.to_str().unwrap(), "--kill"], &[("CRYO_FAULT", "parasite-load@4")]);
    out.assert_clean_failure();
    assert!(p.running(), "the root survived");
    assert_running_untouched(p.pid(), &log, 0, "root after a failure at its last child");
    for k in kids {
        assert_eq!(tracer_pid(k), Some(0), "child {k} was let go");
        assert!(!read_maps(k).contains("memfd:cryo"), "child {k} still maps the parasite");
    }
    log.wait_prefix("done ", Duration::from_secs(30));
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{}", lines.join("\n"));
    assert_eq!(assert_consecutive(&lines, "msg ", "messages"), 1200);
}

/// An orphan reparented to a child subreaper is part of the subreaper's tree:
/// it comes back as its child, and the subreaper reaps it with its status.
#[test]
fn orphan_of_a_subreaper_comes_back_as_its_child() {
    let h = Harness::with_cryo("tree-subreaper");
    let prog = h.compile("subreaper");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "40", "50"], "subreaper.log");
    let g = log.wait_prefix("grandchild ", SECS20);
    let orphan = g.split_whitespace().nth(1).unwrap().to_string();
    log.wait_prefix("orphan tick 5 ", SECS20);
    assert_eq!(children(p.pid()).len(), 1, "the orphan was reparented to the subreaper");
    // Left running, neither has a snapshot: the subreaper would reap its own
    // and the orphan's (the processes are dumped in waves, the subreaper first).
    let running = h.path("running");
    let out = h.cryo_run(&["checkpoint", &p.pid().to_string(), "-o", running.to_str().unwrap(), "--json"]);
    out.assert_ok();
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{}", out.describe()));
    assert_eq!((v["processes"].as_u64(), v["snapshots"].as_u64()), (Some(2), Some(0)), "{v}");
    assert_eq!(children(p.pid()), vec![orphan.parse::<i32>().unwrap()], "the subreaper's only child is the orphan");
    let img = h.path("img");
    h.checkpoint_kill(&mut p, &img);
    let host = h.restart_detached(&img);
    assert_eq!(children(host).len(), 1, "the orphan is the restored subreaper's child");
    log.wait_line("done");
    let lines = log.lines();
    let root = p.pid();
    assert_eq!(assert_consecutive(&lines, "orphan tick ", "orphan"), 40);
    assert!(lines.iter().filter(|l| l.starts_with("orphan tick")).skip(1).all(|l| l.ends_with(&format!("ppid {root}"))), "{}", lines.join("\n"));
    assert!(lines.contains(&format!("reaped orphan {orphan} exit 5")), "{}", lines.join("\n"));
}

/// A daemon whose session leader exited (fork, setsid, fork, exit) keeps its
/// session and process group: a helper with the leader's pid recreates the
/// session and goes away again.
#[test]
fn daemon_keeps_a_session_whose_leader_is_gone() {
    let h = Harness::with_cryo("tree-daemon");
    let prog = h.compile("daemon");
    let (mut launcher, log) = h.spawn(&[prog.to_str().unwrap(), "40", "50"], "daemon.log");
    launcher.wait_exit(SECS20);
    let first = log.wait_prefix("daemon ", SECS20);
    let f: Vec<&str> = first.split_whitespace().collect();
    let (daemon, sid, pgid): (i32, &str, &str) = (f[1].parse().unwrap(), f[3], f[5]);
    assert_ne!(daemon.to_string(), sid, "the daemon is not its session's leader");
    log.wait_prefix("tick 3 ", SECS20);
    let img = h.path("img");
    h.cryo_run(&["checkpoint", &daemon.to_string(), "-o", img.to_str().unwrap(), "--kill"]).assert_ok();
    h.restart_detached(&img);
    log.wait_line("done");
    let lines = log.lines();
    assert_eq!(assert_consecutive(&lines, "tick ", "daemon"), 40);
    let expect = format!("sid {sid} pgid {pgid}");
    assert!(lines.iter().filter(|l| l.starts_with("tick ")).all(|l| l.ends_with(&expect)), "{}", lines.join("\n"));
}

/// A restored tree can be checkpointed again (it runs in cryo's pid
/// namespace, where its pids are the old ones): three generations of
/// checkpoint and restart, and the programs never notice.
#[test]
fn restart_of_a_restart_keeps_the_tree() {
    let h = Harness::with_cryo("tree-generations");
    let prog = h.compile("tree_pipes");
    let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "200", "10"], "tree.log");
    log.wait_prefix("msg 30 ", SECS20);
    h.checkpoint_kill(&mut p, &h.path("img0"));
    let mut host = h.restart_detached(&h.path("img0"));
    for gen in 1..=2 {
        let seen = log.line_count();
        log.wait_growth(seen, 10, SECS20);
        let img = h.path(&format!("img{gen}"));
        h.cryo_run(&["checkpoint", &host.to_string(), "-o", img.to_str().unwrap(), "--kill"]).assert_ok();
        let inv = inspect_json(&h, &img);
        assert_eq!(inv["root_pid"].as_i64(), Some(p.pid() as i64), "generation {gen} records the tree's own pids");
        host = h.restart_detached(&img);
    }
    log.wait_prefix("done ", SECS20);
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{}", lines.join("\n"));
    assert_eq!(assert_consecutive(&lines, "msg ", "three generations"), 600);
}

/// A parent, two children and a grandchild sharing most of their memory since
/// the forks (as a forked server's workers do): a child's image stores only
/// the pages it no longer shares with its parent, and after a restart every
/// process holds exactly what it wrote, sharing the rest again (leaves are
/// forked from their restored parent). Checked with the tree read frozen
/// (--kill, --direct) and from copy-on-write snapshots (low-freeze), where
/// the children's pages are compared with their parents' snapshots. A tree
/// left running still shares its memory: reading it to compare, or to
/// store it, copied none.
#[test]
fn pages_shared_since_a_fork_are_stored_once() {
    let h = Harness::with_cryo("tree-forked");
    let prog = h.compile("forked_heap");
    const NAMES: [&str; 4] = ["parent", "child1", "child2", "grandchild"];
    let heap_pages = 16 * 256;
    for mode in ["--kill", "low-freeze", "--direct", "--precopy"] {
        let (mut p, log) = h.spawn(&[prog.to_str().unwrap(), "16", "150", "20"], &format!("forked{mode}.log"));
        for name in NAMES {
            log.wait_for(&format!("{name} step 2"), SECS20, |t| t.contains(&format!("{name} step 2 ok")));
        }
        let img = h.path(&format!("img{mode}"));
        if mode == "--kill" {
            h.checkpoint_kill(&mut p, &img);
        } else {
            let mut args = vec!["checkpoint".to_string(), p.pid().to_string(), "-o".into(), img.to_str().unwrap().into()];
            args.extend((mode != "low-freeze").then(|| mode.to_string()));
            let out = h.cryo_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
            out.assert_ok();
            let snapshots = out.stderr.contains("copy-on-write snapshot");
            assert_eq!(snapshots, mode == "low-freeze", "{mode}: written from snapshots or not:\n{}", out.describe());
            for pid in tree_of(p.pid()) {
                let shared_kib = smaps_rollup_kib(pid, "Shared_Dirty");
                assert!(shared_kib >= 15 * 1024, "{mode}: process {pid} shares {shared_kib} KiB with the others after the checkpoint");
            }
            p.kill();
        }
        let inv = inspect_json(&h, &img);
        let procs = inv["processes"].as_array().expect("inspect lists the processes");
        assert_eq!(procs.len(), 4, "{mode}: {procs:?}");
        if mode == "--precopy" {
            // Each process's memory is in the copy (read while the tree
            // ran, where pages are not compared): the final image leaves
            // nearly all of it there, and no process shares it after the
            // restart. What must hold is that every process gets its memory.
            assert!(img.join("precopy").is_dir(), "{mode}: the copy is inside the image");
            h.restart_detached(&img);
            for name in NAMES {
                log.wait_for(&format!("{name} done"), SECS20, |t| t.contains(&format!("{name} done")));
            }
            let lines = log.lines();
            assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{mode}: memory changed across the restart:\n{}", lines.join("\n"));
            continue;
        }
        let count = |p: &Value, k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k} in {p:?}"));
        assert!(count(&procs[0], "pages_stored") >= heap_pages && count(&procs[0], "pages_inherited") == 0, "{mode}: the parent stores its heap");
        for p in &procs[1..] {
            // The 8 pages the parent rewrote and 4 a child rewrote are each
            // child's own; so is what the C library wrote since the fork.
            let (own, shared) = (count(p, "pages_stored"), count(p, "pages_inherited"));
            assert!(shared >= heap_pages - 12 && own < heap_pages / 8, "{mode}: process {} stores {own} pages and leaves {shared} to its parent", p["pid"]);
        }
        let host = h.restart_detached(&img);
        // The leaves (the second child, the grandchild) were forked from
        // their restored parents: the four share the heap again.
        for pid in tree_of(host) {
            let shared_kib = smaps_rollup_kib(pid, "Shared_Dirty");
            assert!(shared_kib >= 15 * 1024, "{mode}: restored process {pid} shares {shared_kib} KiB with the others");
        }
        for name in NAMES {
            log.wait_for(&format!("{name} done"), SECS20, |t| t.contains(&format!("{name} done")));
        }
        let lines = log.lines();
        assert!(!lines.iter().any(|l| l.starts_with("BAD")), "{mode}: memory changed across the restart:\n{}", lines.join("\n"));
        for name in NAMES {
            let steps: Vec<u32> = lines.iter().filter_map(|l| l.strip_prefix(&format!("{name} step "))?.split(' ').next()?.parse().ok()).collect();
            if mode == "--kill" {
                assert_eq!(steps, (1..=150).collect::<Vec<_>>(), "{mode}: {name} checked its memory at every step:\n{}", lines.join("\n"));
            } else {
                // The tree ran on until it was killed; the restarted one
                // wrote over what it logged since (at its old file offset).
                assert_eq!(steps.last(), Some(&150), "{mode}: {name} checked its memory to the end:\n{}", lines.join("\n"));
            }
        }
    }
}

/// A field of /proc/PID/smaps_rollup, in KiB.
fn smaps_rollup_kib(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/smaps_rollup:\n{text}"))
}
