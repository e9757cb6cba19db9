//! The programs cryo checkpoints in the VM: `cryo-vmtest workload KIND LOG ...`.
//!
//! Each writes numbered lines to LOG with plain write(2) calls on a file opened
//! once (no O_APPEND: the restored process must continue at its saved offset), and
//! sleeps between lines, so a checkpoint usually catches it inside nanosleep. A
//! workload that notices something impossible (lost thread-local state, a sleep
//! failing with EINTR) logs a line starting with `ERR` and exits with status 3.
//!
//! * `counter LOG LIMIT EXIT`: lines `0`, `1`, ...; after LIMIT lines (0: never) it
//!   exits with status EXIT. It sleeps with nanosleep(2) itself (std's sleep would
//!   hide an EINTR by retrying): a restored sleep must be re-issued, not fail.
//! * `heap LOG KIB`: a KIB-sized heap array evolves step by step, and a
//!   floating-point value (kept in FP/SIMD registers across the sleep) with it;
//!   line `S SUM FP` is the state after step S. [`heap_lines`] recomputes them.
//! * `tree LOG N`: forks N children that share an anonymous MAP_SHARED page and
//!   each talk to the parent over their own pipe: child i stores k in its slot of
//!   the shared page, then writes `k PID SID PGID` to its pipe. The parent leads a
//!   new session; child 0 leads its own session, child 1 its own process group. The parent checks every line
//!   (pid as forked, session and group, k consecutive, the shared slot not behind)
//!   and logs `C<i> <k>`, and `M <k>` on its own. One more child exits at once
//!   with status 42 and stays a zombie until the file `reap` appears; then the
//!   parent reaps it and logs `Z <status>`. A child whose parent is gone exits.
//! * `files LOG DATA`: reads DATA 16 bytes at a time through one read-only fd
//!   (its offset must survive) and logs `<k> <hex of the bytes>`; also writes to
//!   /dev/null.
//! * `pac LOG` (aarch64 with pointer authentication): signs a fixed pointer with
//!   the APIA key and a fixed value with the APGA key once, then every step signs
//!   them again and logs `<k> <signatures>`; a change of keys (a restored process
//!   running with its restorer's keys) makes them differ: `ERR`.
//! * `signals LOG`: SIGUSR1 and SIGUSR2 have handlers (SIGUSR2's returns through
//!   the kernel's own trampoline on ARM: no SA_RESTORER), SIGUSR2 is blocked. It
//!   logs `<k>` per step, `usr1` when the SIGUSR1 handler ran, after which it
//!   unblocks SIGUSR2 and logs `usr2` when that handler ran (a SIGUSR2 sent
//!   before the checkpoint is pending and must be delivered then).
//! * `sve LOG` (aarch64 with SVE): keeps a pattern in z0 (all of its vector
//!   length, also the bits beyond the 128 the FPSIMD registers share) and spins
//!   in one asm loop comparing it with memory, no syscalls in between, so a
//!   freeze catches it with live SVE state; logs `<k>` per round, `ERR` when z0
//!   changed.
//! * `inhandler LOG`: logs `m <k>` per step; its SIGUSR1 handler logs `h <j>` for
//!   j in 0..12, sleeping between lines, then returns. A checkpoint taken while
//!   the handler runs restarts inside it: the signal frame on the stack must take
//!   it back to the main loop (sigreturn) after the restart.
//! * `echo LOG`: reads stdin (blocking in read(2) when checkpointed) and logs
//!   `<n> <bytes read>` per read; exits 0 at end of input.
//! * `threads LOG N`: N worker threads log `T<i> <k>` (k counted in a thread-local
//!   as well as on the stack, compared every step), the main thread logs `M <k>`,
//!   and two threads hand a token back and forth through a mutex and condvar,
//!   logging `P <v>` for every hand-over.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::sleep;
use std::time::Duration;

pub fn run(args: &[String]) -> i32 {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or_else(|_| fail(&format!("workload: bad number {:?}", arg(i))));
    let log = File::create(arg(1)).unwrap_or_else(|e| fail(&format!("workload: cannot create {:?}: {e}", arg(1))));
    match arg(0) {
        "counter" => counter(log, num(2), num(3) as i32),
        "heap" => heap(log, num(2) as usize),
        "threads" => threads(log, num(2) as usize),
        "echo" => echo(log),
        "tree" => tree(log, num(2) as usize),
        "files" => files(log, arg(2)),
        "pac" => pac(log),
        "signals" => signals(log),
        "sve" => sve(log),
        "inhandler" => inhandler(log),
        "clocks" => clocks(log),
        other => fail(&format!("workload: unknown kind {other:?}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

fn line(mut log: &File, text: &str) {
    if let Err(e) = log.write_all(text.as_bytes()) {
        fail(&format!("workload: write: {e}"));
    }
}

/// Sleep `ms` with one nanosleep(2); EINTR (no handler is installed, so nothing
/// may interrupt it) is logged as an error.
fn nanosleep(log: &File, ms: u64) {
    let ts = libc::timespec { tv_sec: 0, tv_nsec: (ms * 1_000_000) as _ };
    // SAFETY: `ts` is a valid timespec for the call; no remainder is asked for.
    let r = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        line(log, &format!("ERR nanosleep failed: {e}\n"));
        std::process::exit(3);
    }
}

fn counter(log: File, limit: u64, exit: i32) -> i32 {
    let mut n = 0u64;
    loop {
        line(&log, &format!("{n}\n"));
        n += 1;
        if n == limit {
            return exit;
        }
        nanosleep(&log, 30);
    }
}

/// Like `counter`, forever, but each line only after the clocks answered
/// right: the monotonic clock never goes back, the wall clock is past 2020.
/// libc takes both from the vDSO.
fn clocks(log: File) -> i32 {
    let mut last = std::time::Instant::now();
    for n in 0u64.. {
        let now = std::time::Instant::now();
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now < last || wall < 1_577_836_800 {
            line(&log, &format!("BAD clocks at {n}: monotonic went back or wall clock at {wall}\n"));
        } else {
            line(&log, &format!("{n}\n"));
        }
        last = now;
        nanosleep(&log, 30);
    }
    0
}

fn echo(log: File) -> i32 {
    let mut buf = [0u8; 256];
    let mut n = 0u64;
    loop {
        // SAFETY: `buf` is writable for its whole length.
        let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        match r {
            0 => return 0,
            r if r < 0 => {
                line(&log, &format!("ERR read failed: {}\n", std::io::Error::last_os_error()));
                return 3;
            }
            r => line(&log, &format!("{n} {r}\n")),
        }
        n += 1;
    }
}

/// One step of the heap workload: every word changes, depending on its old value.
pub fn heap_step(v: &mut [u64], step: u64) -> u64 {
    let mut sum = 0u64;
    for (i, x) in v.iter_mut().enumerate() {
        *x = x.wrapping_mul(6364136223846793005).wrapping_add(step ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        sum = sum.rotate_left(5) ^ *x;
    }
    sum
}

/// The floating-point companion of a heap step.
fn fp_step(fp: f64, step: u64) -> f64 {
    (fp * 1.000_001 + step as f64).sqrt() + 0.5
}

/// The first `steps` lines of an uninterrupted heap workload.
pub fn heap_lines(kib: usize, steps: u64) -> Vec<String> {
    let mut v = vec![0u64; kib * 1024 / 8];
    let mut fp = 1.0f64;
    (0..steps)
        .map(|s| {
            fp = fp_step(fp, s);
            format!("{s} {:016x} {:016x}", heap_step(&mut v, s), fp.to_bits())
        })
        .collect()
}

fn heap(log: File, kib: usize) -> i32 {
    let mut v = vec![0u64; kib * 1024 / 8];
    let mut fp = 1.0f64;
    let mut step = 0u64;
    loop {
        fp = fp_step(fp, step);
        let sum = heap_step(&mut v, step);
        line(&log, &format!("{step} {sum:016x} {:016x}\n", fp.to_bits()));
        step += 1;
        nanosleep(&log, 20);
    }
}

thread_local! {
    static STEPS: Cell<u64> = const { Cell::new(0) };
}

fn threads(log: File, n: usize) -> i32 {
    let log = Arc::new(Mutex::new(log));
    let put = |log: &Mutex<File>, text: String| line(&log.lock().unwrap_or_else(|e| e.into_inner()), &text);
    for id in 0..n {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut k = 0u64;
            loop {
                let tls = STEPS.with(|c| c.replace(k + 1));
                if tls != k {
                    put(&log, format!("ERR thread {id}: thread-local count {tls}, expected {k}\n"));
                    std::process::exit(3);
                }
                put(&log, format!("T{id} {k}\n"));
                k += 1;
                sleep(Duration::from_millis(25 + 5 * id as u64));
            }
        });
    }
    // The token: even values belong to the first thread, odd to the second.
    let token = Arc::new((Mutex::new(0u64), Condvar::new()));
    for parity in 0..2u64 {
        let (token, log) = (Arc::clone(&token), Arc::clone(&log));
        std::thread::spawn(move || loop {
            let (m, cv) = &*token;
            let mut v = m.lock().unwrap_or_else(|e| e.into_inner());
            while *v % 2 != parity {
                v = cv.wait(v).unwrap_or_else(|e| e.into_inner());
            }
            put(&log, format!("P {}\n", *v));
            *v += 1;
            cv.notify_all();
            drop(v);
            sleep(Duration::from_millis(15));
        });
    }
    let mut k = 0u64;
    loop {
        put(&log, format!("M {k}\n"));
        k += 1;
        sleep(Duration::from_millis(40));
    }
}

/// The bytes the `files` workload reads: byte i of the data file.
pub fn data_byte(i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 8)) as u8
}

fn files(log: File, data: &str) -> i32 {
    use std::io::Read;
    let mut data = File::open(data).unwrap_or_else(|e| fail(&format!("workload: cannot open {data}: {e}")));
    let mut null = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap_or_else(|e| fail(&format!("workload: /dev/null: {e}")));
    let mut k = 0u64;
    loop {
        let mut chunk = [0u8; 16];
        if let Err(e) = data.read_exact(&mut chunk) {
            line(&log, &format!("ERR reading the data file: {e}\n"));
            return 3;
        }
        let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
        line(&log, &format!("{k} {hex}\n"));
        let _ = null.write_all(&chunk);
        k += 1;
        nanosleep(&log, 25);
    }
}

/// One anonymous MAP_SHARED page of u64 slots, shared with forked children.
fn shared_slots() -> &'static [std::sync::atomic::AtomicU64] {
    // SAFETY: a fresh anonymous mapping; no address hint, no fd.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
    };
    if p == libc::MAP_FAILED {
        fail("workload: mmap of the shared page failed");
    }
    // SAFETY: the page is zeroed, 4096 bytes, aligned, lives (never unmapped) for
    // the rest of the process, and AtomicU64 has the layout of u64.
    unsafe { std::slice::from_raw_parts(p.cast::<std::sync::atomic::AtomicU64>(), 4096 / 8) }
}

fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::getpid() }
}

fn getppid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::getppid() }
}

/// fork(2); the caller is single-threaded, so the child may run on freely.
fn fork() -> i32 {
    // SAFETY: the workload is single-threaded when it forks (no locks can be
    // held by another thread), and the child only uses its own memory and fds.
    unsafe { libc::fork() }
}

fn pipe() -> (File, File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        fail("workload: pipe2 failed");
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

fn tree(log: File, n: usize) -> i32 {
    use std::os::fd::AsRawFd;
    let slots = shared_slots();
    let parent = getpid();
    // The tree is a session of its own (as a daemon or a batch job would be): a
    // session led from outside the tree has no leader inside a restored tree.
    // SAFETY: setsid/getsid/getpgid take no pointers.
    let (psid, ppgid) = unsafe {
        if libc::setsid() < 0 {
            fail("workload: setsid failed (start the tree workload outside any process group it leads)");
        }
        (libc::getsid(0), libc::getpgid(0))
    };
    // A child that exits at once and stays a zombie until the file `reap` appears.
    let zombie = match fork() {
        0 => std::process::exit(42),
        pid if pid < 0 => fail("workload: fork failed"),
        pid => pid,
    };
    let mut reaped = false;
    let mut kids = Vec::new();
    for (i, slot) in slots[..n].iter().enumerate() {
        let (r, w) = pipe();
        match fork() {
            0 => {
                drop(r);
                drop(kids);
                // Child 0 leads a session of its own, child 1 a process group.
                // SAFETY: setsid/setpgid take no pointers.
                match i {
                    0 => unsafe { libc::setsid() },
                    1 => unsafe { libc::setpgid(0, 0) },
                    _ => 0,
                };
                let mut k = 0u64;
                while getppid() == parent {
                    slot.store(k, std::sync::atomic::Ordering::SeqCst);
                    // SAFETY: getsid/getpgid take no pointers.
                    let (sid, pgid) = unsafe { (libc::getsid(0), libc::getpgid(0)) };
                    line(&w, &format!("{k} {} {sid} {pgid}\n", getpid()));
                    k += 1;
                    nanosleep(&log, 30 + 7 * i as u64);
                }
                std::process::exit(0);
            }
            pid if pid < 0 => fail("workload: fork failed"),
            pid => {
                drop(w);
                kids.push((pid, r, Vec::<u8>::new(), 0u64));
            }
        }
    }
    let mut k = 0u64;
    let mut last = std::time::Instant::now();
    loop {
        let mut pfds: Vec<libc::pollfd> = kids.iter().map(|(_, r, _, _)| libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: `pfds` holds exactly `pfds.len()` initialised pollfd structs.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as _, 40) };
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            fail("workload: poll failed");
        }
        for (i, (pfd, (pid, pipe, buf, next))) in pfds.iter().zip(kids.iter_mut()).enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let mut chunk = [0u8; 256];
            let got = match std::io::Read::read(pipe, &mut chunk) {
                Ok(0) | Err(_) => {
                    line(&log, &format!("ERR child {i}'s pipe closed or failed\n"));
                    std::process::exit(3);
                }
                Ok(g) => g,
            };
            buf.extend_from_slice(&chunk[..got]);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..=end);
                let mut words = text.split(' ').map(|w| w.parse::<i64>().unwrap_or(-1));
                let mut word = || words.next().unwrap_or(-1);
                let (ck, cpid, sid, pgid) = (word(), word(), word(), word());
                let want = match i {
                    0 => (*pid, *pid),
                    1 => (psid, *pid),
                    _ => (psid, ppgid),
                };
                let slot = slots[i].load(std::sync::atomic::Ordering::SeqCst);
                if ck != *next as i64 || cpid != *pid as i64 || (sid, pgid) != (want.0 as i64, want.1 as i64) || slot < *next {
                    line(&log, &format!("ERR child {i} (pid {pid}) sent {text:?} (k pid sid pgid), expected {next} {pid} {} {}; its shared slot holds {slot}\n", want.0, want.1));
                    std::process::exit(3);
                }
                line(&log, &format!("C{i} {next}\n"));
                *next += 1;
            }
        }
        if !reaped && std::path::Path::new("reap").exists() {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(zombie, &mut status, libc::WNOHANG) };
            let code = if r == zombie && libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
            line(&log, &format!("Z {code}\n"));
            reaped = true;
        }
        if last.elapsed() >= Duration::from_millis(40) {
            line(&log, &format!("M {k}\n"));
            k += 1;
            last = std::time::Instant::now();
        }
    }
}

/// Does this CPU (and kernel) give processes pointer authentication (address
/// and generic keys)? Only aarch64 can.
pub fn has_pac() -> bool {
    const HWCAP_PACA: u64 = 1 << 30;
    const HWCAP_PACG: u64 = 1 << 31;
    // SAFETY: getauxval only reads the process's auxiliary vector.
    let hwcap = unsafe { libc::getauxval(libc::AT_HWCAP) } as u64;
    cfg!(target_arch = "aarch64") && hwcap & (HWCAP_PACA | HWCAP_PACG) == HWCAP_PACA | HWCAP_PACG
}

/// (pacia(ptr, modifier), pacga(value, modifier)) with this process's keys.
#[cfg(target_arch = "aarch64")]
fn pac_signatures() -> (u64, u64) {
    let (mut a, g): (u64, u64);
    a = 0x0000_7fff_1234_5670;
    // SAFETY: pacia/pacga only compute values in registers (FEAT_PAuth, checked
    // by the caller through HWCAP); no memory is touched.
    unsafe {
        core::arch::asm!(
            ".arch_extension pauth",
            "pacia {a}, {m}",
            "pacga {g}, {v}, {m}",
            a = inout(reg) a,
            g = out(reg) g,
            v = in(reg) 0x1234_5678_9abc_def0u64,
            m = in(reg) 0x42u64,
            options(nomem, nostack, preserves_flags),
        );
    }
    (a, g)
}

#[cfg(not(target_arch = "aarch64"))]
fn pac_signatures() -> (u64, u64) {
    fail("workload: pointer authentication exists on aarch64 only")
}

fn pac(log: File) -> i32 {
    if !has_pac() {
        fail("workload: this CPU has no pointer authentication");
    }
    let first = pac_signatures();
    let mut k = 0u64;
    loop {
        let now = pac_signatures();
        if now != first {
            line(&log, &format!("ERR step {k}: signatures {now:x?}, at the start {first:x?}: the keys changed\n"));
            return 3;
        }
        line(&log, &format!("{k} {:x} {:x}\n", now.0, now.1));
        k += 1;
        nanosleep(&log, 25);
    }
}

static USR1: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static USR2: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    let counter = if sig == libc::SIGUSR1 { &USR1 } else { &USR2 };
    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Install `on_signal` for `sig` (SA_RESTART; the libc supplies the restorer).
fn handle(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid; the handler only touches atomics
    // (async-signal-safe); the pointers passed are valid for the call.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            fail("workload: sigaction failed");
        }
    }
}

/// Block (`true`) or unblock SIGUSR2.
fn block_usr2(block: bool) {
    // SAFETY: the sigset is initialised by sigemptyset before use; no old mask is asked for.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        libc::sigprocmask(how, &set, std::ptr::null_mut());
    }
}

/// The kernel's `struct sigaction` for rt_sigaction(2) on the generic layout
/// (handler, flags, restorer, mask of 64 bits in words).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: usize,
    restorer: usize,
    mask: [usize; 8 / std::mem::size_of::<usize>()],
}

/// Install `on_signal` for `sig` without SA_RESTORER, where the kernel then
/// returns from the handler through its own trampoline (ARM's [sigpage], the
/// arm64 vDSO): that trampoline must be where the kernel thinks it is after a
/// restart. x86_64 requires a restorer, so there the libc installs it.
fn handle_with_kernel_trampoline(sig: libc::c_int) {
    if cfg!(target_arch = "x86_64") {
        return handle(sig);
    }
    let sa = KernelSigaction {
        handler: on_signal as extern "C" fn(libc::c_int) as usize,
        flags: libc::SA_RESTART as usize,
        restorer: 0,
        mask: [0; 8 / std::mem::size_of::<usize>()],
    };
    // SAFETY: `sa` is a valid kernel sigaction for this CPU, alive for the call;
    // the handler only touches atomics.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &sa as *const KernelSigaction, std::ptr::null_mut::<KernelSigaction>(), 8) };
    if r != 0 {
        fail("workload: rt_sigaction failed");
    }
}

fn signals(log: File) -> i32 {
    handle(libc::SIGUSR1);
    handle_with_kernel_trampoline(libc::SIGUSR2);
    block_usr2(true);
    let (mut seen1, mut seen2) = (0, 0);
    let mut k = 0u64;
    loop {
        line(&log, &format!("{k}\n"));
        k += 1;
        // A handled signal ends the sleep early (EINTR): that is expected here.
        let ts = libc::timespec { tv_sec: 0, tv_nsec: 25_000_000 };
        // SAFETY: `ts` is a valid timespec; no remainder is asked for.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        let (u1, u2) = (USR1.load(std::sync::atomic::Ordering::SeqCst), USR2.load(std::sync::atomic::Ordering::SeqCst));
        if u2 != seen2 {
            if seen1 == 0 {
                line(&log, "ERR SIGUSR2 was delivered while blocked\n");
                return 3;
            }
            seen2 = u2;
            line(&log, "usr2\n");
        }
        if u1 != seen1 {
            seen1 = u1;
            line(&log, "usr1\n");
            block_usr2(false);
        }
    }
}

/// Does this CPU (and kernel) give processes SVE? Only aarch64 can.
pub fn has_sve() -> bool {
    const HWCAP_SVE: u64 = 1 << 22;
    // SAFETY: getauxval only reads the process's auxiliary vector.
    let hwcap = unsafe { libc::getauxval(libc::AT_HWCAP) } as u64;
    cfg!(target_arch = "aarch64") && hwcap & HWCAP_SVE != 0
}

/// Load z0 from `pattern`, then `rounds` times compare it with `pattern` again;
/// true when z0 stayed equal throughout. `pattern` holds at least one vector
/// (the architectural maximum is 256 bytes).
#[cfg(target_arch = "aarch64")]
fn sve_hold(pattern: &[u64; 32], rounds: u64) -> bool {
    let changed: u64;
    // SAFETY: SVE is present (the caller checked HWCAP_SVE); the loads read at
    // most one vector (<= 256 bytes) from `pattern`, which is 256 bytes; z0/z1
    // (v0/v1) and p0/p1 are declared clobbered, nothing else is written.
    unsafe {
        core::arch::asm!(
            ".arch_extension sve",
            "ptrue p0.d",
            "ld1d {{z0.d}}, p0/z, [{pat}]",
            "mov {n}, #0",
            "2:",
            // The predicate is set afresh every time: only z0 is held.
            "ptrue p0.d",
            "ld1d {{z1.d}}, p0/z, [{pat}]",
            "cmpne p1.d, p0/z, z0.d, z1.d",
            "b.any 3f",
            "add {n}, {n}, #1",
            "cmp {n}, {rounds}",
            "b.lo 2b",
            "mov {changed}, #0",
            "b 4f",
            "3:",
            "mov {changed}, #1",
            "4:",
            pat = in(reg) pattern.as_ptr(),
            rounds = in(reg) rounds,
            n = out(reg) _,
            changed = out(reg) changed,
            out("v0") _,
            out("v1") _,
            out("p0") _,
            out("p1") _,
            options(nostack, readonly),
        );
    }
    changed == 0
}

#[cfg(not(target_arch = "aarch64"))]
fn sve_hold(_pattern: &[u64; 32], _rounds: u64) -> bool {
    fail("workload: SVE exists on aarch64 only")
}

/// This thread's SVE vector length in bytes.
#[cfg(target_arch = "aarch64")]
pub fn sve_vl() -> u64 {
    let vl: u64;
    // SAFETY: rdvl only reads the vector length (SVE present: checked by the caller).
    unsafe { core::arch::asm!(".arch_extension sve", "rdvl {vl}, #1", vl = out(reg) vl, options(nomem, nostack, preserves_flags)) };
    vl
}

#[cfg(not(target_arch = "aarch64"))]
pub fn sve_vl() -> u64 {
    fail("workload: SVE exists on aarch64 only")
}

fn sve(log: File) -> i32 {
    if !has_sve() {
        fail("workload: this CPU has no SVE");
    }

    let mut pattern = [0u64; 32];
    for (i, w) in pattern.iter_mut().enumerate() {
        *w = 0x0101_0101_0101_0101u64.wrapping_mul(i as u64 + 1) ^ 0x5a5a_0000_0000_a5a5;
    }
    let mut k = 0u64;
    loop {
        if !sve_hold(&pattern, 200_000) {
            line(&log, &format!("ERR round {k}: z0 changed while the loop held it\n"));
            return 3;
        }
        line(&log, &format!("{k}\n"));
        k += 1;
    }
}

/// The log of the `inhandler` workload, for its signal handler.
static HANDLER_LOG: std::sync::OnceLock<File> = std::sync::OnceLock::new();

extern "C" fn long_handler(_sig: libc::c_int) {
    let Some(log) = HANDLER_LOG.get() else { return };
    for j in 0..12 {
        line(log, &format!("h {j}\n"));
        nanosleep(log, 30);
    }
}

fn inhandler(log: File) -> i32 {
    let log = HANDLER_LOG.get_or_init(|| log);
    // SAFETY: a zeroed sigaction is valid. The handler formats (allocates) and
    // writes: it may, because SIGUSR1 is blocked except inside the main loop's
    // ppoll, so it never interrupts the allocator.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = long_handler as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            fail("workload: sigaction failed");
        }
    }
    // SAFETY: the sigsets are initialised by sigemptyset before use.
    let open = unsafe {
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut blocked);
        libc::sigaddset(&mut blocked, libc::SIGUSR1);
        libc::sigprocmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
        let mut open: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut open);
        open
    };
    let mut k = 0u64;
    loop {
        line(log, &format!("m {k}\n"));
        k += 1;
        // SIGUSR1 only gets in here; the handler ends the wait early (EINTR).
        let ts = libc::timespec { tv_sec: 0, tv_nsec: 40_000_000 };
        // SAFETY: no fds to poll; `ts` and `open` are valid for the call.
        unsafe { libc::ppoll(std::ptr::null_mut(), 0, &ts, &open) };
    }
}
