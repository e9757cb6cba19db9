//! aarch64: `svc #0` ABI (x8 = number, x0-x5 = arguments), `user_pt_regs`,
//! FPSIMD, TLS in `tpidr_el0` (NT_ARM_TLS).
#![no_std]

#[cfg(target_arch = "aarch64")]
pub mod raw;

use cryo_arch::{get_u32, get_u64, put_u64, Arch, FrameRecord, RegSetSpec, RestartFixup, Sysno};
use cryo_arch::{EINTR, ERESTARTNOHAND, ERESTARTNOINTR, ERESTARTSYS, ERESTART_RESTARTBLOCK};

pub struct Aarch64;

pub const NT_PRSTATUS: u32 = 1;
pub const NT_PRFPREG: u32 = 2;
pub const NT_ARM_TLS: u32 = 0x401;
pub const NT_ARM_SYSTEM_CALL: u32 = 0x404;

/// Byte offsets in `struct user_pt_regs`: x0..x30, sp, pc, pstate.
const X0: usize = 0;
const X8: usize = 8 * 8;
const SP: usize = 31 * 8;
const PC: usize = 32 * 8;

impl Arch for Aarch64 {
    const NAME: &'static str = "aarch64";
    const ELF_MACHINE: u16 = 183; // EM_AARCH64
    const IS_64BIT: bool = true;
    const REGSETS: &'static [RegSetSpec] = &[
        RegSetSpec { note_type: NT_PRSTATUS, name: "general", max_size: 34 * 8, core_note_owner: "CORE" },
        // 32 x 128-bit vector registers, fpsr, fpcr, padding.
        RegSetSpec { note_type: NT_PRFPREG, name: "fpsimd", max_size: 32 * 16 + 16, core_note_owner: "CORE" },
        RegSetSpec { note_type: NT_ARM_TLS, name: "tls", max_size: 8, core_note_owner: "LINUX" },
    ];
    const SYSCALL_GADGET: &'static [u8] = &[
        0x01, 0x00, 0x00, 0xd4, // svc #0
        0x00, 0x00, 0x20, 0xd4, // brk #0
    ];
    const SYSCALL_INSN_LEN: u64 = 4;
    const RELATIVE_RELOC: u32 = 1027; // R_AARCH64_RELATIVE
    const GP_SIZE: usize = 34 * 8;

    fn sysno(call: Sysno) -> Option<u64> {
        use Sysno::*;
        // The generic (asm-generic/unistd.h) table.
        Some(match call {
            Dup3 => 24,
            Fcntl => 25,
            Chdir => 49,
            Fchdir => 50,
            Openat => 56,
            Close => 57,
            Pipe2 => 59,
            Lseek => 62,
            Read => 63,
            Write => 64,
            Pread64 => 67,
            Preadv => 69,
            Vmsplice => 75,
            Capset => 91,
            Personality => 92,
            Exit => 93,
            ExitGroup => 94,
            SetTidAddress => 96,
            SetRobustList => 99,
            Getitimer => 102,
            Setitimer => 103,
            Kill => 129,
            Sigaltstack => 132,
            RtSigaction => 134,
            RtSigprocmask => 135,
            Setpgid => 154,
            Setsid => 157,
            Umask => 166,
            Prctl => 167,
            Getpid => 172,
            Gettid => 178,
            Brk => 214,
            Munmap => 215,
            Mremap => 216,
            Mmap => 222,
            Mprotect => 226,
            Madvise => 233,
            Prlimit64 => 261,
            MemfdCreate => 279,
            Rseq => 293,
            Clone3 => 435,
            Ftruncate => 46,
            PidfdOpen => 434,
            PidfdGetfd => 438,
            RtSigtimedwait => 137,
            CloseRange => 436,
            ArchPrctl => return None,
        })
    }

    fn pc(gp: &[u8]) -> u64 {
        get_u64(gp, PC)
    }
    fn set_pc(gp: &mut [u8], pc: u64) {
        put_u64(gp, PC, pc)
    }
    fn sp(gp: &[u8]) -> u64 {
        get_u64(gp, SP)
    }
    fn set_sp(gp: &mut [u8], sp: u64) {
        put_u64(gp, SP, sp)
    }

    fn prepare_syscall(gp: &mut [u8], gadget: u64, nr: u64, args: &[u64; 6]) {
        for (i, a) in args.iter().enumerate() {
            put_u64(gp, X0 + i * 8, *a);
        }
        put_u64(gp, X8, nr);
        put_u64(gp, PC, gadget);
    }

    fn syscall_return(gp: &[u8]) -> i64 {
        get_u64(gp, X0) as i64
    }

    fn prepare_call(gp: &mut [u8], entry: u64, arg: u64, stack_top: u64) {
        put_u64(gp, X0, arg);
        put_u64(gp, PC, entry);
        put_u64(gp, SP, stack_top & !15);
    }

    /// The general registers do not say whether the thread is in a syscall
    /// (that is NT_ARM_SYSTEM_CALL); a return register holding a restart code
    /// can only come from an interrupted syscall, so that is what is checked.
    fn interrupted_syscall(gp: &[u8]) -> Option<(u64, i64)> {
        let ret = get_u64(gp, X0) as i64;
        matches!(-ret, ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK)
            .then(|| (get_u64(gp, X8), ret))
    }

    /// x0 held the first argument and was overwritten by the return value; the
    /// kernel keeps the original (orig_x0) where ptrace cannot read it, so the
    /// call cannot be re-issued: it returns EINTR, as after a handled signal.
    fn restart_fixup(gp: &mut [u8]) -> RestartFixup {
        if Self::interrupted_syscall(gp).is_none() {
            return RestartFixup::None;
        }
        put_u64(gp, X0, (-EINTR) as u64);
        RestartFixup::Interrupted
    }

    /// Done through NT_ARM_SYSTEM_CALL (-1) by the caller; nothing in the GP set.
    fn clear_syscall(_gp: &mut [u8]) {}

    fn tls(regsets: &[(u32, &[u8])]) -> Option<u64> {
        regsets
            .iter()
            .find(|(t, d)| *t == NT_ARM_TLS && d.len() >= 8)
            .map(|(_, d)| get_u64(d, 0))
    }

    fn needs_icache_flush() -> bool {
        true
    }

    const GP_NAMES: &'static [&'static str] = &[
        "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16",
        "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x29", "x30", "sp", "pc",
        "pstate",
    ];
    const DWARF_SP: u16 = 31;
    /// x0-x30 and sp share their DWARF numbers with user_pt_regs word indices.
    const DWARF_REGS: u16 = 32;
    const FRAME_RECORD: Option<FrameRecord> = Some(FrameRecord { fp: 29, saved_fp: 0, return_address: 8 });
    const MAX_INSN_LEN: usize = 4;

    fn dwarf_reg(gp: &[u8], reg: u16) -> Option<u64> {
        (reg < Self::DWARF_REGS).then(|| get_u64(gp, reg as usize * 8))
    }

    fn follows_call(before: &[u8]) -> bool {
        let Some(last) = before.len().checked_sub(4) else {
            return false;
        };
        let insn = get_u32(before, last);
        // BL imm26, or BLR xN.
        insn & 0xfc00_0000 == 0x9400_0000 || insn & 0xffff_fc1f == 0xd63f_0000
    }

    fn syscall_name(nr: u64) -> Option<&'static str> {
        Some(match nr {
            4 => "io_getevents",
            22 => "epoll_pwait",
            56 => "openat",
            57 => "close",
            63 => "read",
            64 => "write",
            65 => "readv",
            66 => "writev",
            67 => "pread64",
            68 => "pwrite64",
            72 => "pselect6",
            73 => "ppoll",
            82 => "fsync",
            94 => "exit_group",
            95 => "waitid",
            98 => "futex",
            101 => "nanosleep",
            115 => "clock_nanosleep",
            124 => "sched_yield",
            133 => "rt_sigsuspend",
            137 => "rt_sigtimedwait",
            202 => "accept",
            203 => "connect",
            206 => "sendto",
            207 => "recvfrom",
            211 => "sendmsg",
            212 => "recvmsg",
            242 => "accept4",
            260 => "wait4",
            426 => "io_uring_enter",
            441 => "epoll_pwait2",
            449 => "futex_waitv",
            _ => return None,
        })
    }
}
