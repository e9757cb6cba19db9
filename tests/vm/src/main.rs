//! `cryo-vmtest`: end-to-end tests of cryo on another CPU, inside a qemu-system VM.
//!
//! One static binary is the VM's whole userland besides `/cryo` (`tests/vm/run.sh`
//! packs both into an initramfs):
//!
//! * as PID 1 (`/init`) it mounts /proc, /dev, /tmp, runs the scenarios, prints
//!   `@@CRYO-VM-EXIT <failures>@@` and powers the VM off;
//! * `cryo-vmtest workload KIND ...` is one of the test programs cryo checkpoints
//!   (the binary re-executes itself, so the VM needs no compiler or shell);
//! * run by hand on any machine (not as PID 1), it runs the scenarios against
//!   `$CRYO_BIN` (default `/cryo`), which is how the rig itself is debugged on x86_64.
//!
//! Every workload and every cryo command runs as an unprivileged uid/gid
//! ([`TEST_UID`]) when the rig runs as root: cryo's promise is to work without
//! privileges. Scenarios are picked with `CRYO_VM_FILTER=substring` (in the VM, a
//! kernel command-line word `CRYO_VM_FILTER=...`, which the kernel hands to init
//! as an environment variable).

mod scenarios;
mod sys;
mod workload;

use std::time::Instant;

/// uid and gid the scenarios run as when the rig is root.
pub const TEST_UID: u32 = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("workload") {
        std::process::exit(workload::run(&args[2..]));
    }
    let pid1 = std::process::id() == 1;
    if pid1 {
        sys::init_mounts();
    }
    let start = Instant::now();
    let failures = scenarios::run_all();
    println!(
        "cryo-vmtest: {} in {:.1} s",
        if failures == 0 { "all scenarios passed".to_string() } else { format!("{failures} scenario(s) FAILED") },
        start.elapsed().as_secs_f64()
    );
    if pid1 {
        println!("@@CRYO-VM-EXIT {failures}@@");
        sys::power_off();
    }
    std::process::exit(failures.min(100) as i32);
}
