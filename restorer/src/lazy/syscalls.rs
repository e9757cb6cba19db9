//! Which pages a syscall of a lazily restored process needs before it runs.
//!
//! The userfaultfd an unprivileged process may have only handles faults from
//! user mode: when the kernel itself touches a page that is not there yet
//! (read() into a buffer, write() from one, a futex word) the syscall fails
//! with EFAULT instead of waiting. So the tree is traced at its syscalls while
//! pages are missing: at entry, the pages its arguments point into are brought
//! in; a syscall that fails with EFAULT all the same (a pointer inside a
//! structure) gets every page of its process and runs again. Syscalls that
//! would lose data on EFAULT (a datagram is dropped when recvmsg cannot copy
//! it out), or that copy or move memory the userfaultfd would not follow
//! (fork, mremap), get every page before they run.

use cryo_tracer::arch::{Arch, Native, Sysno};

/// Bytes brought in after a pointer argument whose length is not known.
const WINDOW: u64 = 16 << 10;

/// What a syscall needs in place before it runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Needs {
    /// These address ranges (end exclusive), where they are registered.
    Ranges(Vec<(u64, u64)>),
    /// Every page of the process.
    All,
    /// clone3: its `struct clone_args` at this address decides.
    CloneArgs(u64),
    /// brk: the heap from this address up.
    HeapFrom(u64),
}

fn is(nr: u64, call: Sysno) -> bool {
    Native::sysno(call) == Some(nr)
}

fn any(nr: u64, calls: &[Sysno]) -> bool {
    calls.iter().any(|&c| is(nr, c))
}

/// `args` as pointers to `WINDOW` bytes each.
fn windows(args: &[u64; 6]) -> Vec<(u64, u64)> {
    args.iter().filter(|&&a| a >= 4096).map(|&a| (a, a.saturating_add(WINDOW))).collect()
}

pub fn at_entry(nr: u64, args: &[u64; 6]) -> Needs {
    use Sysno::*;
    let span = |p: usize, l: usize| Needs::Ranges(vec![(args[p], args[p].saturating_add(args[l]))]);
    if any(nr, &[Read, Write, Pread64, Pwrite64, Recvfrom, Sendto, Getdents64]) {
        let mut r = vec![(args[1], args[1].saturating_add(args[2]))];
        if any(nr, &[Recvfrom, Sendto]) {
            // The peer's address (and its length).
            r.extend(windows(&[args[4], args[5], 0, 0, 0, 0]));
        }
        return Needs::Ranges(r);
    }
    if is(nr, Getrandom) {
        return span(0, 1);
    }
    if any(nr, &[Munmap, Madvise, Mremap]) {
        return span(0, 1);
    }
    if is(nr, Mmap) && args[3] & libc::MAP_FIXED as u64 != 0 {
        return span(0, 1);
    }
    if is(nr, Brk) {
        return if args[0] == 0 { Needs::Ranges(Vec::new()) } else { Needs::HeapFrom(args[0]) };
    }
    if any(nr, &[Fork, Vfork, Readv, Preadv, Preadv2, Recvmsg, Recvmmsg]) {
        return Needs::All;
    }
    if is(nr, Clone) {
        return if args[0] & libc::CLONE_VM as u64 == 0 { Needs::All } else { Needs::Ranges(windows(args)) };
    }
    if is(nr, Clone3) {
        return Needs::CloneArgs(args[0]);
    }
    Needs::Ranges(windows(args))
}

/// What clone3 needs, from the first words of its `struct clone_args`
/// (flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls).
pub fn clone3(words: &[u64; 8]) -> Needs {
    if words[0] & libc::CLONE_VM as u64 == 0 {
        return Needs::All;
    }
    let stack_top = words[5].saturating_add(words[6]);
    let mut r = windows(&[words[1], words[2], words[3], words[7], 0, 0]);
    if stack_top >= WINDOW {
        r.push((stack_top - WINDOW, stack_top));
    }
    Needs::Ranges(r)
}

pub const EFAULT: i64 = -(libc::EFAULT as i64);

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(c: Sysno) -> u64 {
        Native::sysno(c).unwrap()
    }

    #[test]
    fn buffers_with_their_length() {
        let args = [3, 0x10_0000, 0x5000, 0, 0, 0];
        assert_eq!(at_entry(nr(Sysno::Read), &args), Needs::Ranges(vec![(0x10_0000, 0x10_5000)]));
        assert_eq!(at_entry(nr(Sysno::Munmap), &[0x20_0000, 0x1000, 0, 0, 0, 0]), Needs::Ranges(vec![(0x20_0000, 0x20_1000)]));
    }

    #[test]
    fn unknown_calls_get_a_window_per_pointer() {
        let args = [0x7000_0000, 1, 0, 0, 0, 0];
        assert_eq!(at_entry(nr(Sysno::Wait4), &args), Needs::Ranges(vec![(0x7000_0000, 0x7000_0000 + WINDOW)]));
    }

    #[test]
    fn copies_and_indirect_buffers_take_everything() {
        assert_eq!(at_entry(nr(Sysno::Recvmsg), &[3, 0x1000_0000, 0, 0, 0, 0]), Needs::All);
        assert_eq!(at_entry(nr(Sysno::Clone), &[libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), Needs::All);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD) as u64;
        assert!(matches!(clone3(&[thread, 0, 0x5000_0000, 0, 0, 0x6000_0000, 0x10_0000, 0x6010_0000]), Needs::Ranges(_)));
        assert_eq!(clone3(&[libc::SIGCHLD as u64, 0, 0, 0, 0, 0, 0, 0]), Needs::All);
    }

    #[test]
    fn fixed_mappings_and_brk() {
        let fixed = libc::MAP_FIXED as u64 | libc::MAP_PRIVATE as u64;
        assert_eq!(at_entry(nr(Sysno::Mmap), &[0x4000_0000, 0x2000, 3, fixed, 0, 0]), Needs::Ranges(vec![(0x4000_0000, 0x4000_2000)]));
        assert_eq!(at_entry(nr(Sysno::Brk), &[0x55_0000, 0, 0, 0, 0, 0]), Needs::HeapFrom(0x55_0000));
    }
}
