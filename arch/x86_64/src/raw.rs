//! Raw syscall and trap primitives for the `no_std` parasite blob on x86_64.
//!
//! Compiled only under `target_arch = "x86_64"`; these are the only places the
//! blob talks to the kernel or to the tracer.

use core::arch::asm;

/// `vmsplice(2)` on x86_64.
pub const SYS_VMSPLICE: usize = 278;
pub const SYS_PPOLL: usize = 271;

/// Issue syscall `nr` with six arguments per the x86_64 kernel ABI
/// (rax = nr; rdi, rsi, rdx, r10, r8, r9 = args; rcx and r11 clobbered).
/// Returns the raw result: a negative errno (-4095..=-1) on failure.
///
/// # Safety
/// The syscall runs with whatever effect its number and arguments imply;
/// pointer arguments must be valid for the kernel to access as that syscall
/// requires, and the syscall must not break invariants of the calling code
/// (e.g. unmapping its own stack).
#[inline(always)]
pub unsafe fn syscall6(nr: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the asm only executes `syscall` with the registers the kernel ABI
    // defines and declares every register the kernel changes (rax, rcx, r11);
    // it does not touch the stack (no red zone use, `nostack`). Memory effects
    // of the syscall itself are the caller's contract (see `# Safety`), and the
    // block is not `nomem`, so the compiler assumes memory may change.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Stop the thread with `int3` (SIGTRAP to the tracer), forever: if the tracer
/// continues the thread without moving its pc, it traps again.
#[inline(always)]
pub fn trap() -> ! {
    loop {
        // SAFETY: `int3` changes no register or memory the compiler knows of;
        // it only raises SIGTRAP, which stops the traced thread. The asm is not
        // `nomem`, so all earlier stores are emitted before the tracer looks.
        unsafe { asm!("int3", options(nostack, preserves_flags)) }
    }
}

/// XCR0 of this CPU: the XSAVE state components the kernel enabled (0 where
/// the OS has not enabled XSAVE).
pub fn xcr0() -> u64 {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 27) == 0 {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: CPUID.1:ECX.OSXSAVE is set, so xgetbv is enabled; it only reads
    // XCR0 (ecx = 0) into edx:eax and touches neither memory nor flags.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    ((hi as u64) << 32) | lo as u64
}
