//! Fault injection: `CRYO_FAULT=<stage> cryo checkpoint` must fail at that stage and leave
//! the target running exactly as before, with no complete image behind.

use cryo_tests::*;
use std::time::Duration;

const SECS20: Duration = Duration::from_secs(20);
const STEPS: &str = "50";
const MIB: &str = "16";

fn fault_case(stage: &str) {
    let h = Harness::with_cryo(&format!("fault-{stage}"));
    let heap = h.compile("heap");
    let heap = heap.to_str().unwrap();
    h.run_to_completion(&[heap, "ref.log", STEPS, "0", MIB], "ref.out", SECS20);
    let reference = Log::new(h.path("ref.log")).text();

    let (mut p, _out) = h.spawn(&[heap, "heap.log", STEPS, "100", MIB], "heap.out");
    let pid = p.pid();
    let log = Log::new(h.path("heap.log"));
    log.wait_prefix("step 3 ", SECS20);

    // --kill too: a failed checkpoint must never kill.
    let img = h.path("img");
    let out = h.cryo_run_env(
        &[
            "checkpoint",
            &pid.to_string(),
            "-o",
            img.to_str().unwrap(),
            "--kill",
        ],
        &[("CRYO_FAULT", stage)],
    );
    out.assert_clean_failure();
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
    fault_pages => "pages",
    fault_image_write => "image-write",
    fault_cure => "cure",
}
