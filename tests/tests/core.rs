//! `cryo core` against gdb's own `gcore` on the same hung, multi-threaded
//! process: gdb must see the same threads, frames, registers and globals.

use cryo_tests::*;

/// Run gdb in batch mode on PROGRAM + CORE as the test user; keep only the
/// lines that describe program state (thread list, frames, values).
fn gdb_view(h: &Harness, program: &str, core: &str) -> String {
    let out = h
        .command(Who::Test, "gdb")
        .args(["-nx", "-batch", "-ex", "set print thread-events off", "-ex", "thread apply all bt"])
        .args(["-ex", "print answer", "-ex", "info registers rip rsp rbp rbx fs_base"])
        .args([program, core])
        .output()
        .expect("run gdb (apt-get install gdb)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.starts_with("Thread ") || l.starts_with('#') || l.starts_with('$') || l.contains("0x"))
        .filter(|l| !l.starts_with("Core was generated"))
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn core_matches_gcore_for_deadlocked_threads() {
    let h = Harness::with_cryo("core");
    let prog = h.compile("deadlock");
    let prog = prog.to_str().unwrap();
    let (mut p, log) = h.spawn(&[prog], "deadlock.log");
    log.wait_line("deadlocked");
    let pid = p.pid().to_string();

    let img = h.path("img");
    h.cryo_run(&["checkpoint", &pid, "-o", img.to_str().unwrap()]).assert_ok();
    assert!(p.running(), "checkpoint without --kill must leave the process running");
    assert_eq!(tracer_pid(p.pid()), Some(0), "process still traced after the checkpoint");
    let core = h.path("cryo.core");
    h.cryo_run(&["core", img.to_str().unwrap(), "-o", core.to_str().unwrap()]).assert_ok();

    let gcore_prefix = h.path("gcore");
    let g = h
        .command(Who::Test, "gcore")
        .arg("-o")
        .arg(&gcore_prefix)
        .arg(&pid)
        .output()
        .expect("run gcore (apt-get install gdb)");
    assert!(g.status.success(), "gcore failed: {}", String::from_utf8_lossy(&g.stderr));
    let gcore = format!("{}.{pid}", gcore_prefix.display());

    let ours = gdb_view(&h, prog, core.to_str().unwrap());
    let theirs = gdb_view(&h, prog, &gcore);
    assert!(ours.contains("take_first_then_second") && ours.contains("take_second_then_first"), "cryo core:\n{ours}");
    assert!(ours.contains("$1 = 424242"), "global variable not readable from cryo's core:\n{ours}");
    assert_eq!(ours.matches("\nThread ").count() + ours.starts_with("Thread ") as usize, 3, "three threads expected:\n{ours}");
    assert_text_eq(&ours, &theirs, "gdb on cryo's core vs gdb on gcore's");

    let mode = std::fs::metadata(&core).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777).unwrap();
    assert_eq!(mode, 0o600, "core files hold memory: 0600");
    assert!(p.running(), "the program must keep running after the snapshot");
}
