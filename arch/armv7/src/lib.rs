//! ARMv7 (EABI, 32-bit): `svc #0` ABI (r7 = number, r0-r5 = arguments),
//! `struct pt_regs` with orig_r0, VFP registers, mmap2.
#![no_std]

#[cfg(target_arch = "arm")]
pub mod raw;

use cryo_arch::{get_u32, put_u32, Arch, FarJump, RegSetAccess, RegSetSpec, RestartFixup, Sysno};

pub struct Armv7;

pub const NT_PRSTATUS: u32 = 1;
pub const NT_ARM_VFP: u32 = 0x400;
/// The note type an arm64 kernel uses for the TLS register; cryo stores the
/// ARMv7 thread pointer under it too (images and core notes).
pub const NT_ARM_TLS: u32 = 0x401;
/// PTRACE_GET_THREAD_AREA on 32-bit ARM (and in an arm64 kernel's compat mode):
/// the TLS register (TPIDRURO) as one word.
pub const PTRACE_GET_THREAD_AREA: u32 = 22;
/// ARM's private `set_tls` call (__ARM_NR_set_tls, 0x0f0000 + 5).
pub const ARM_NR_SET_TLS: u64 = 0x0f_0005;

/// Byte offsets in `struct pt_regs`: r0..r15, cpsr, orig_r0 (18 words).
const R0: usize = 0;
const R7: usize = 7 * 4;
const SP: usize = 13 * 4;
const PC: usize = 15 * 4;
const CPSR: usize = 16 * 4;
const ORIG_R0: usize = 17 * 4;
/// CPSR T bit: the thread runs Thumb code (2-byte `svc`).
const CPSR_T: u32 = 1 << 5;

impl Arch for Armv7 {
    const NAME: &'static str = "armv7";
    const ELF_MACHINE: u16 = 40; // EM_ARM
    const IS_64BIT: bool = false;
    const F_SETLK64: u64 = 13;
    const REGSETS: &'static [RegSetSpec] = &[
        RegSetSpec { note_type: NT_PRSTATUS, name: "general", max_size: 18 * 4, core_note_owner: "CORE", access: RegSetAccess::Regset },
        // d0-d31 and fpscr.
        RegSetSpec { note_type: NT_ARM_VFP, name: "vfp", max_size: 32 * 8 + 4, core_note_owner: "LINUX", access: RegSetAccess::Regset },
        // An ARMv7 kernel has no register set for TPIDRURO: read with
        // PTRACE_GET_THREAD_AREA, set by the thread itself with set_tls.
        RegSetSpec {
            note_type: NT_ARM_TLS,
            name: "tls",
            max_size: 4,
            core_note_owner: "LINUX",
            access: RegSetAccess::GetOnly { get_request: PTRACE_GET_THREAD_AREA },
        },
    ];
    const SYSCALL_GADGET: &'static [u8] = &[
        0x00, 0x00, 0x00, 0xef, // svc #0 (ARM state)
        0xf0, 0x01, 0xf0, 0xe7, // udf #16: the kernel's ARM breakpoint
    ];
    const SYSCALL_INSN_LEN: u64 = 4;
    const RELATIVE_RELOC: u32 = 23; // R_ARM_RELATIVE
    const GP_SIZE: usize = 18 * 4;
    const PRPSINFO_UID_BYTES: usize = 2; // __kernel_uid_t is unsigned short on ARM

    fn sysno(call: Sysno) -> Option<u64> {
        use Sysno::*;
        Some(match call {
            Exit => 1,
            Read => 3,
            Write => 4,
            Close => 6,
            Chdir => 12,
            Lseek => 19,
            Getpid => 20,
            Kill => 37,
            Brk => 45,
            Fcntl => 55,
            Setpgid => 57,
            Umask => 60,
            Setsid => 66,
            Wait4 => 114,
            Userfaultfd => 388,
            Ioctl => 54,
            Munmap => 91,
            Setitimer => 104,
            Getitimer => 105,
            Mprotect => 125,
            Fchdir => 133,
            Personality => 136,
            Mremap => 163,
            Prctl => 172,
            RtSigaction => 174,
            RtSigprocmask => 175,
            Clone => 120,
            Fork => 2,
            Vfork => 190,
            Execve => 11,
            Readv => 145,
            Preadv2 => 392,
            Recvfrom => 292,
            Recvmsg => 297,
            Recvmmsg => 365,
            Pwrite64 => 181,
            Getrandom => 384,
            Getdents64 => 217,
            Pread64 => 180,
            Capset => 185,
            Sigaltstack => 186,
            Mmap => 192, // mmap2: offset in pages, see mmap_offset_arg
            Madvise => 220,
            Mlock2 => 390,
            Mlockall => 152,
            Gettid => 224,
            ExitGroup => 248,
            SetTidAddress => 256,
            Openat => 322,
            SetRobustList => 338,
            Vmsplice => 343,
            Dup3 => 358,
            Pipe2 => 359,
            Preadv => 361,
            Prlimit64 => 369,
            MemfdCreate => 385,
            Rseq => 398,
            Clone3 => 435,
            Ftruncate => 93,
            PidfdOpen => 434,
            PidfdGetfd => 438,
            RtSigtimedwait => 177,
            CloseRange => 436,
            Sendfile => 239,
            Flock => 143,
            FcntlLock => 221,
            Eventfd2 => 356,
            TimerfdCreate => 350,
            TimerfdSettime => 353,
            Signalfd4 => 355,
            EpollCreate1 => 357,
            EpollCtl => 251,
            InotifyInit1 => 360,
            InotifyAddWatch => 317,
            TimerCreate => 257,
            TimerSettime => 258,
            TimerGettime => 259,
            TimerDelete => 261,
            Socket => 281,
            Socketpair => 288,
            Bind => 282,
            Listen => 284,
            Connect => 283,
            Sendto => 290,
            Shutdown => 293,
            Accept4 => 366,
            Getsockname => 286,
            Setsockopt => 294,
            SetTls => ARM_NR_SET_TLS,
            ArchPrctl => return None,
        })
    }

    fn mmap_offset_arg(byte_offset: u64) -> u64 {
        byte_offset / 4096
    }

    fn pc(gp: &[u8]) -> u64 {
        get_u32(gp, PC) as u64
    }
    fn set_pc(gp: &mut [u8], pc: u64) {
        put_u32(gp, PC, pc as u32)
    }
    fn sp(gp: &[u8]) -> u64 {
        get_u32(gp, SP) as u64
    }
    fn set_sp(gp: &mut [u8], sp: u64) {
        put_u32(gp, SP, sp as u32)
    }

    fn prepare_syscall(gp: &mut [u8], gadget: u64, nr: u64, args: &[u64; 6]) {
        for (i, a) in args.iter().enumerate() {
            put_u32(gp, R0 + i * 4, *a as u32);
        }
        put_u32(gp, R7, nr as u32);
        put_u32(gp, PC, gadget as u32);
        // The gadget is ARM code.
        put_u32(gp, CPSR, get_u32(gp, CPSR) & !CPSR_T);
        Self::clear_syscall(gp);
    }

    /// Errors (-4095..=-1) keep their sign; anything else is unsigned, so an
    /// address at or above 2 GiB (mmap in a compat task) stays positive.
    fn syscall_return(gp: &[u8]) -> i64 {
        let r = get_u32(gp, R0);
        if r >= (-4095i32) as u32 {
            r as i32 as i64
        } else {
            r as i64
        }
    }

    fn prepare_call(gp: &mut [u8], entry: u64, arg: u64, stack_top: u64) {
        put_u32(gp, R0, arg as u32);
        put_u32(gp, PC, entry as u32);
        put_u32(gp, SP, (stack_top & !7) as u32);
        put_u32(gp, CPSR, get_u32(gp, CPSR) & !CPSR_T);
        Self::clear_syscall(gp);
    }

    /// A thread frozen inside a syscall is seen by the tracer with the kernel's
    /// restart already prepared: ARM's do_signal rewinds pc to the `svc` and puts
    /// orig_r0 back into r0 *before* the ptrace stop ("so that a debugger will
    /// see the already changed PC"). So a frozen thread never shows a restart code
    /// in r0, and nothing here can tell that it was in a syscall.
    fn interrupted_syscall(_gp: &[u8]) -> Option<(u64, i64)> {
        None
    }

    /// Nothing to do: the saved registers already re-issue the interrupted call
    /// (r7 still holds its number; a RESTARTBLOCK call such as nanosleep runs
    /// again in full instead of through restart_syscall).
    fn restart_fixup(_gp: &mut [u8]) -> RestartFixup {
        RestartFixup::None
    }

    /// Thumb code's `svc` is two bytes; the instruction set stays as it was.
    fn reissue_syscall(gp: &mut [u8], nr: u64, args: &[u64; 6]) {
        let len = if get_u32(gp, CPSR) & CPSR_T != 0 { 2 } else { 4 };
        for (i, a) in args.iter().enumerate() {
            put_u32(gp, R0 + i * 4, *a as u32);
        }
        put_u32(gp, R7, nr as u32);
        put_u32(gp, PC, get_u32(gp, PC) - len);
        Self::clear_syscall(gp);
    }

    fn clear_syscall(gp: &mut [u8]) {
        put_u32(gp, ORIG_R0, u32::MAX);
    }

    /// TPIDRURO, from the "tls" set (read with PTRACE_GET_THREAD_AREA).
    fn tls(regsets: &[(u32, &[u8])]) -> Option<u64> {
        regsets
            .iter()
            .find(|(t, d)| *t == NT_ARM_TLS && d.len() >= 4)
            .map(|(_, d)| get_u32(d, 0) as u64)
    }

    /// An arm64 kernel runs ARMv7 processes in compat mode and reports "aarch64"
    /// (or "armv8l" under the PER_LINUX32 personality).
    fn kernel_pointer_bytes(uname_machine: &str) -> usize {
        match uname_machine {
            "aarch64" | "arm64" | "armv8l" | "aarch64_be" => 8,
            _ => 4,
        }
    }

    fn far_jump(entry: u64, to: u64) -> Option<FarJump> {
        // A load into pc, which switches to the state bit 0 of `to` asks for.
        let to = u32::try_from(to).ok()?.to_le_bytes();
        if entry & 1 == 0 {
            // ARM: ldr pc, [pc, #-4]; .word to
            return Some(FarJump::of(entry, &[&0xe51f_f004u32.to_le_bytes(), &to]));
        }
        // Thumb: ldr.w pc, [pc, #imm]; the literal word-aligned after it. pc
        // reads as the instruction's address + 4, rounded down to a word.
        let at = entry & !1;
        let (imm, pad): (u16, &[u8]) = if at.is_multiple_of(4) { (0, &[]) } else { (4, &[0x00, 0xbf]) };
        Some(FarJump::of(at, &[&0xf8dfu16.to_le_bytes(), &(0xf000 | imm).to_le_bytes(), pad, &to]))
    }

    fn needs_icache_flush() -> bool {
        true
    }

    const GP_NAMES: &'static [&'static str] = &[
        "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "fp", "ip", "sp", "lr", "pc", "cpsr",
        "orig_r0",
    ];
    const DWARF_SP: u16 = 13;
    /// r0-r15 share their DWARF numbers with pt_regs word indices. No frame
    /// record: where fp points differs between GCC, clang, ARM and Thumb code.
    const DWARF_REGS: u16 = 16;
    const MAX_INSN_LEN: usize = 4;

    fn dwarf_reg(gp: &[u8], reg: u16) -> Option<u64> {
        (reg < Self::DWARF_REGS).then(|| get_u32(gp, reg as usize * 4) as u64)
    }

    fn syscall_name(nr: u64) -> Option<&'static str> {
        Some(match nr {
            3 => "read",
            4 => "write",
            6 => "close",
            29 => "pause",
            114 => "wait4",
            118 => "fsync",
            142 => "_newselect",
            145 => "readv",
            146 => "writev",
            158 => "sched_yield",
            162 => "nanosleep",
            168 => "poll",
            177 => "rt_sigtimedwait",
            179 => "rt_sigsuspend",
            180 => "pread64",
            181 => "pwrite64",
            240 => "futex",
            248 => "exit_group",
            252 => "epoll_wait",
            265 => "clock_nanosleep",
            280 => "waitid",
            283 => "connect",
            285 => "accept",
            290 => "sendto",
            292 => "recvfrom",
            296 => "sendmsg",
            297 => "recvmsg",
            322 => "openat",
            335 => "pselect6",
            336 => "ppoll",
            346 => "epoll_pwait",
            366 => "accept4",
            407 => "clock_nanosleep_time64",
            413 => "pselect6_time64",
            414 => "ppoll_time64",
            421 => "rt_sigtimedwait_time64",
            422 => "futex_time64",
            426 => "io_uring_enter",
            441 => "epoll_pwait2",
            449 => "futex_waitv",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> [u8; 18 * 4] {
        [0u8; 18 * 4]
    }

    #[test]
    fn frozen_registers_are_loaded_as_they_are() {
        // As the kernel leaves a thread frozen in nanosleep: pc on the svc,
        // r0 = orig_r0 again, r7 = the call.
        let mut gp = regs();
        put_u32(&mut gp, R0, 0x7eff_f000);
        put_u32(&mut gp, R7, 162);
        put_u32(&mut gp, PC, 0x1_0000);
        put_u32(&mut gp, ORIG_R0, 0x7eff_f000);
        let before = gp;
        assert_eq!(Armv7::restart_fixup(&mut gp), RestartFixup::None);
        assert_eq!(gp, before);
        Armv7::clear_syscall(&mut gp);
        assert_eq!(get_u32(&gp, ORIG_R0), u32::MAX);
        assert_eq!(get_u32(&gp, PC), 0x1_0000);
    }

    #[test]
    fn a_failed_syscall_in_thumb_code_runs_again_there() {
        let mut gp = regs();
        put_u32(&mut gp, CPSR, CPSR_T | 0x10);
        put_u32(&mut gp, PC, 0x1_0002);
        Armv7::reissue_syscall(&mut gp, 296, &[3, 0x9000, 0, 0, 0, 0]);
        assert_eq!((get_u32(&gp, PC), get_u32(&gp, R0), get_u32(&gp, R7)), (0x1_0000, 3, 296));
        assert_ne!(get_u32(&gp, CPSR) & CPSR_T, 0, "still Thumb");
    }

    #[test]
    fn syscalls_use_r7_and_arm_state() {
        let mut gp = regs();
        put_u32(&mut gp, CPSR, CPSR_T | 0x10);
        Armv7::prepare_syscall(&mut gp, 0x2000, Armv7::sysno(Sysno::SetTls).unwrap(), &[0xb6ff_0440, 0, 0, 0, 0, 0]);
        assert_eq!(get_u32(&gp, R7), 0x0f_0005);
        assert_eq!(get_u32(&gp, R0), 0xb6ff_0440);
        assert_eq!(get_u32(&gp, PC), 0x2000);
        assert_eq!(get_u32(&gp, CPSR) & CPSR_T, 0);
    }

    #[test]
    fn tls_comes_from_the_thread_area_word() {
        let word = 0xb6f8_1234u32.to_le_bytes();
        let gp = regs();
        let sets: [(u32, &[u8]); 2] = [(NT_PRSTATUS, &gp), (NT_ARM_TLS, &word)];
        assert_eq!(Armv7::tls(&sets), Some(0xb6f8_1234));
        assert_eq!(Armv7::tls(&sets[..1]), None);
    }

    #[test]
    fn high_addresses_stay_positive_and_errors_negative() {
        let mut gp = regs();
        put_u32(&mut gp, R0, 0xf7bc_1000);
        assert_eq!(Armv7::syscall_return(&gp), 0xf7bc_1000);
        put_u32(&mut gp, R0, (-22i32) as u32);
        assert_eq!(Armv7::syscall_return(&gp), -22);
        put_u32(&mut gp, R0, (-4095i32) as u32);
        assert_eq!(Armv7::syscall_return(&gp), -4095);
    }

    #[test]
    fn compat_kernels_have_8_byte_pointers() {
        assert_eq!(Armv7::kernel_pointer_bytes("armv7l"), 4);
        assert_eq!(Armv7::kernel_pointer_bytes("aarch64"), 8);
        assert_eq!(Armv7::kernel_pointer_bytes("armv8l"), 8);
    }

    #[test]
    fn mmap2_counts_4k_units() {
        assert_eq!(Armv7::mmap_offset_arg(0x3000), 3);
    }
}
