//! Raw syscall and trap primitives for the `no_std` parasite blob on aarch64.
//!
//! Compiled only under `target_arch = "aarch64"`; these are the only places the
//! blob talks to the kernel or to the tracer.

use core::arch::asm;

/// `vmsplice(2)` on aarch64 (asm-generic numbering).
pub const SYS_VMSPLICE: usize = 75;
pub const SYS_PPOLL: usize = 73;

/// Issue syscall `nr` with six arguments per the aarch64 kernel ABI
/// (x8 = nr; x0..x5 = args; result in x0; `svc #0`).
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
    // SAFETY: the asm only executes `svc #0` with the registers the kernel ABI
    // defines; the kernel preserves every register but x0, which is declared as
    // the output. It does not touch the stack (`nostack`). Memory effects of the
    // syscall are the caller's contract, and the block is not `nomem`.
    unsafe {
        asm!(
            "svc #0",
            in("x8") nr,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            in("x5") a[5],
            options(nostack),
        );
    }
    ret
}

/// Stop the thread with `brk #0` (SIGTRAP to the tracer), forever: the pc stays
/// on the `brk`, so a thread continued without moving its pc traps again.
#[inline(always)]
pub fn trap() -> ! {
    loop {
        // SAFETY: `brk #0` changes no register or memory the compiler knows of;
        // it only raises SIGTRAP, which stops the traced thread. The asm is not
        // `nomem`, so all earlier stores are emitted before the tracer looks.
        unsafe { asm!("brk #0", options(nostack, preserves_flags)) }
    }
}
