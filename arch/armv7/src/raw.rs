//! Raw syscall and trap primitives for the `no_std` parasite blob on 32-bit ARM
//! (EABI).
//!
//! Compiled only under `target_arch = "arm"`; these are the only places the
//! blob talks to the kernel or to the tracer.

use core::arch::asm;

/// `vmsplice(2)` on ARM EABI.
pub const SYS_VMSPLICE: usize = 343;
pub const SYS_PPOLL: usize = 336;

/// Issue syscall `nr` with six arguments per the ARM EABI kernel ABI
/// (r7 = nr; r0..r5 = args; result in r0; `svc #0`).
/// Returns the raw result: a negative errno (-4095..=-1) on failure.
///
/// r7 is the frame pointer in Thumb code, which Rust inline asm does not let
/// us name as an operand, so the number travels in another register and r7 is
/// saved and restored around the `svc` by hand (in ARM mode, where r7 is an
/// ordinary register, the same sequence is still correct).
///
/// # Safety
/// The syscall runs with whatever effect its number and arguments imply;
/// pointer arguments must be valid for the kernel to access as that syscall
/// requires, and the syscall must not break invariants of the calling code
/// (e.g. unmapping its own stack).
#[inline(always)]
pub unsafe fn syscall6(nr: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the asm executes `svc #0` with the registers the kernel ABI
    // defines; the kernel preserves every register but r0 (declared output).
    // r7 is copied to `tmp` (an early-clobber output, so distinct from `nr` and
    // r0..r5) and restored after the call, so it is unchanged on exit whatever
    // register the allocator picked. No stack use (`nostack`); memory effects of
    // the syscall are the caller's contract, and the block is not `nomem`.
    unsafe {
        asm!(
            "mov {tmp}, r7",
            "mov r7, {nr}",
            "svc #0",
            "mov r7, {tmp}",
            nr = in(reg) nr,
            tmp = out(reg) _,
            inlateout("r0") a[0] as isize => ret,
            in("r1") a[1],
            in("r2") a[2],
            in("r3") a[3],
            in("r4") a[4],
            in("r5") a[5],
            options(nostack),
        );
    }
    ret
}

/// Stop the thread with the undefined instruction Linux treats as the ptrace
/// breakpoint (SIGTRAP to the tracer), forever: ARM `udf #16` (0xe7f001f0),
/// Thumb `udf #1` (0xde01). The blob target (armv7a-none-eabi) is A32; if
/// code were Thumb without `cfg(target_feature = "thumb-mode")` being set, the
/// A32 `.inst` fails to assemble rather than emitting the wrong trap.
#[inline(always)]
pub fn trap() -> ! {
    loop {
        // SAFETY: the breakpoint instruction changes no register or memory the
        // compiler knows of; the kernel turns it into SIGTRAP, which stops the
        // traced thread. Not `nomem`, so earlier stores are emitted first.
        #[cfg(not(target_feature = "thumb-mode"))]
        unsafe {
            asm!(".inst 0xe7f001f0", options(nostack, preserves_flags))
        }
        // SAFETY: as above, with the Thumb encoding of the breakpoint.
        #[cfg(target_feature = "thumb-mode")]
        unsafe {
            asm!(".inst.n 0xde01", options(nostack, preserves_flags))
        }
    }
}
