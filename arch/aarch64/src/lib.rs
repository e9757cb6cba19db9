//! aarch64: `svc #0` ABI (x8 = number, x0-x5 = arguments), `user_pt_regs`,
//! FPSIMD, TLS in `tpidr_el0` (NT_ARM_TLS).
#![no_std]

#[cfg(target_arch = "aarch64")]
pub mod raw;

use cryo_arch::{get_u32, get_u64, put_u64, Arch, FarJump, FrameRecord, RegSetAccess, RegSetSpec, RestartFixup, Sysno};

pub struct Aarch64;

pub const NT_PRSTATUS: u32 = 1;
pub const NT_PRFPREG: u32 = 2;
pub const NT_ARM_TLS: u32 = 0x401;
pub const NT_ARM_SYSTEM_CALL: u32 = 0x404;
/// Pointer-authentication keys (`struct user_pac_address_keys`: four 128-bit keys).
pub const NT_ARM_PACA_KEYS: u32 = 0x407;
/// The generic pointer-authentication key (one 128-bit key).
pub const NT_ARM_PACG_KEYS: u32 = 0x408;
/// prctl(PR_SET_TAGGED_ADDR_CTRL) state (u64).
pub const NT_ARM_TAGGED_ADDR_CTRL: u32 = 0x409;
/// prctl(PR_PAC_SET_ENABLED_KEYS) state (u64).
pub const NT_ARM_PAC_ENABLED_KEYS: u32 = 0x40a;
/// SVE state (`struct user_sve_header` + Z, P, FFR, FPSR, FPCR) and vector length.
pub const NT_ARM_SVE: u32 = 0x405;
/// Largest NT_ARM_SVE set: 2048-bit vectors (16 quadwords), the architectural
/// maximum: header, 32 Z of 256 bytes, 16 P and FFR of 32, FPSR+FPCR padded to 16.
const SVE_MAX_SIZE: usize = 16 + 32 * 256 + 17 * 32 + 16;

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
        RegSetSpec { note_type: NT_PRSTATUS, name: "general", max_size: 34 * 8, core_note_owner: "CORE", access: RegSetAccess::Regset },
        // 32 x 128-bit vector registers, fpsr, fpcr, padding.
        RegSetSpec { note_type: NT_PRFPREG, name: "fpsimd", max_size: 32 * 16 + 16, core_note_owner: "CORE", access: RegSetAccess::Regset },
        RegSetSpec { note_type: NT_ARM_TLS, name: "tls", max_size: 8, core_note_owner: "LINUX", access: RegSetAccess::Regset },
        // After fpsimd, so that it is loaded last: live SVE registers are wider
        // than the FPSIMD view, and writing that view zeroes the rest. Also holds
        // the thread's vector length. Absent (EINVAL) without SVE.
        RegSetSpec { note_type: NT_ARM_SVE, name: "sve", max_size: SVE_MAX_SIZE, core_note_owner: "LINUX", access: RegSetAccess::Regset },
        // The syscall number the kernel's restart logic looks at; -1 ("not in a
        // syscall") at a freeze stop, and loading it back keeps that logic away
        // from the restored registers.
        RegSetSpec { note_type: NT_ARM_SYSTEM_CALL, name: "syscall", max_size: 4, core_note_owner: "LINUX", access: RegSetAccess::Regset },
        // Where the CPU has pointer authentication: return addresses on the
        // stack are signed with these per-process keys, so a restored process
        // needs its own back (a fork of cryo has cryo's). Absent (EINVAL) on CPUs
        // without it; the kernel needs CONFIG_CHECKPOINT_RESTORE for the keys.
        RegSetSpec { note_type: NT_ARM_PACA_KEYS, name: "pac-address-keys", max_size: 4 * 16, core_note_owner: "LINUX", access: RegSetAccess::Regset },
        RegSetSpec { note_type: NT_ARM_PACG_KEYS, name: "pac-generic-key", max_size: 16, core_note_owner: "LINUX", access: RegSetAccess::Regset },
        RegSetSpec { note_type: NT_ARM_PAC_ENABLED_KEYS, name: "pac-enabled-keys", max_size: 8, core_note_owner: "LINUX", access: RegSetAccess::Regset },
        RegSetSpec { note_type: NT_ARM_TAGGED_ADDR_CTRL, name: "tagged-addr-ctrl", max_size: 8, core_note_owner: "LINUX", access: RegSetAccess::Regset },
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
            Clone => 220,
            Execve => 221,
            Readv => 65,
            Preadv2 => 286,
            Recvfrom => 207,
            Recvmsg => 212,
            Recvmmsg => 243,
            Pwrite64 => 68,
            Getrandom => 278,
            Getdents64 => 61,
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
            Wait4 => 260,
            Userfaultfd => 282,
            Ioctl => 29,
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
            Mlock2 => 284,
            Mlockall => 230,
            Prlimit64 => 261,
            MemfdCreate => 279,
            Rseq => 293,
            Clone3 => 435,
            Ftruncate => 46,
            PidfdOpen => 434,
            PidfdGetfd => 438,
            RtSigtimedwait => 137,
            CloseRange => 436,
            Sendfile => 71,
            Flock => 32,
            FcntlLock => 25,
            Eventfd2 => 19,
            TimerfdCreate => 85,
            TimerfdSettime => 86,
            Signalfd4 => 74,
            EpollCreate1 => 20,
            EpollCtl => 21,
            InotifyInit1 => 26,
            InotifyAddWatch => 27,
            TimerCreate => 107,
            TimerSettime => 110,
            TimerGettime => 108,
            TimerDelete => 111,
            Socket => 198,
            Socketpair => 199,
            Bind => 200,
            Listen => 201,
            Connect => 203,
            Sendto => 206,
            Shutdown => 210,
            Accept4 => 242,
            Getsockname => 204,
            Setsockopt => 208,
            ArchPrctl | SetTls | Fork | Vfork => return None,
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

    /// A thread frozen inside a syscall is seen by the tracer with the kernel's
    /// restart already prepared: arm64's do_signal puts orig_x0 back into x0 and
    /// rewinds pc to the `svc` *before* the ptrace stop, and forgets the syscall
    /// (NT_ARM_SYSTEM_CALL reads -1). No register tells that it was in a syscall.
    fn interrupted_syscall(_gp: &[u8]) -> Option<(u64, i64)> {
        None
    }

    /// Nothing to do: loading the saved registers re-issues the interrupted call
    /// (x8 still holds its number; a RESTARTBLOCK call such as nanosleep runs
    /// again in full instead of through restart_syscall).
    fn restart_fixup(_gp: &mut [u8]) -> RestartFixup {
        RestartFixup::None
    }

    /// Nothing in the GP set: "not in a syscall" is the saved NT_ARM_SYSTEM_CALL
    /// value (-1), which is loaded with the other sets.
    fn clear_syscall(_gp: &mut [u8]) {}

    fn tls(regsets: &[(u32, &[u8])]) -> Option<u64> {
        regsets
            .iter()
            .find(|(t, d)| *t == NT_ARM_TLS && d.len() >= 8)
            .map(|(_, d)| get_u64(d, 0))
    }

    fn far_jump(entry: u64, to: u64) -> Option<FarJump> {
        // ldr x16, 8; br x16; .quad to (x16 is IP0, the linker's veneer register)
        Some(FarJump::of(entry, &[&0x5800_0050u32.to_le_bytes(), &0xd61f_0200u32.to_le_bytes(), &to.to_le_bytes()]))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> [u8; 34 * 8] {
        [0u8; 34 * 8]
    }

    #[test]
    fn frozen_registers_are_loaded_as_they_are() {
        // As the kernel leaves a thread frozen in clock_nanosleep: pc on the svc,
        // x0 = orig_x0 again, x8 = the call.
        let mut gp = regs();
        put_u64(&mut gp, X0, 1);
        put_u64(&mut gp, X8, 115);
        put_u64(&mut gp, PC, 0x40_1000);
        let before = gp;
        assert_eq!(Aarch64::restart_fixup(&mut gp), RestartFixup::None);
        Aarch64::clear_syscall(&mut gp);
        assert_eq!(gp, before);
    }

    #[test]
    fn a_syscall_that_failed_runs_again_with_its_first_argument() {
        let mut gp = regs();
        Aarch64::set_pc(&mut gp, 0x7004);
        put_u64(&mut gp, X0, (-14i64) as u64);
        Aarch64::reissue_syscall(&mut gp, 211, &[3, 0x9000, 0, 0, 0, 0]);
        assert_eq!((Aarch64::pc(&gp), get_u64(&gp, X0), get_u64(&gp, X8)), (0x7000, 3, 211));
    }

    #[test]
    fn syscalls_use_x8_and_x0_to_x5() {
        let mut gp = regs();
        Aarch64::prepare_syscall(&mut gp, 0x7000, 222, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(get_u64(&gp, X8), 222);
        for i in 0..6 {
            assert_eq!(get_u64(&gp, X0 + 8 * i), i as u64 + 1);
        }
        assert_eq!(Aarch64::pc(&gp), 0x7000);
        put_u64(&mut gp, X0, (-22i64) as u64);
        assert_eq!(Aarch64::syscall_return(&gp), -22);
    }

    #[test]
    fn call_stack_is_16_aligned() {
        let mut gp = regs();
        Aarch64::prepare_call(&mut gp, 0x5000, 0x9000, 0x1_0008);
        assert_eq!(Aarch64::sp(&gp) % 16, 0);
        assert_eq!(get_u64(&gp, X0), 0x9000);
    }

    #[test]
    fn tls_comes_from_nt_arm_tls() {
        let tls = 0x7f_1234_5670u64.to_le_bytes();
        let gp = regs();
        let sets: [(u32, &[u8]); 2] = [(NT_PRSTATUS, &gp), (NT_ARM_TLS, &tls)];
        assert_eq!(Aarch64::tls(&sets), Some(0x7f_1234_5670));
        assert_eq!(Aarch64::sysno(Sysno::SetTls), None);
    }
}
