//! `cryo restart` without --detach: stay as the tree's parent, pass signals
//! on to the restored root, leave with its exit status.

use crate::ns::Sandbox;

/// Signals a user sends to a foreground job, passed on to the restored root.
const FORWARDED: &[i32] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGALRM,
];

fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

pub fn wait(sandbox: &Sandbox, root: i32) -> u8 {
    let waited = sandbox.waited(root);
    let set = sigset(FORWARDED);
    // SAFETY: blocking signals in our own (single-threaded) process; they are
    // collected with sigtimedwait below instead of running handlers.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let timeout = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
    loop {
        // SAFETY: valid set and timeout; a null siginfo is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            // SAFETY: kill has no memory arguments.
            unsafe { libc::kill(root, sig) };
        }
        let mut st = 0;
        // SAFETY: valid out-pointer; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(waited, &mut st, libc::WNOHANG) };
        if r == waited {
            return if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st) as u8
            } else {
                (128 + libc::WTERMSIG(st)) as u8
            };
        }
        if r < 0 {
            return 1;
        }
    }
}
