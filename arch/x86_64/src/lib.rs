//! x86_64: `syscall` ABI, `user_regs_struct`, FXSAVE/XSAVE register sets.
#![no_std]

#[cfg(target_arch = "x86_64")]
pub mod raw;

use cryo_arch::{get_u64, put_u64, Arch, RegSetSpec, RestartFixup, Sysno};
use cryo_arch::{ERESTARTNOHAND, ERESTARTNOINTR, ERESTARTSYS, ERESTART_RESTARTBLOCK};

pub struct X86_64;

/// Indices (in u64 words) into `struct user_regs_struct`.
mod reg {
    pub const R10: usize = 7;
    pub const R9: usize = 8;
    pub const R8: usize = 9;
    pub const RAX: usize = 10;
    pub const RDX: usize = 12;
    pub const RSI: usize = 13;
    pub const RDI: usize = 14;
    pub const ORIG_RAX: usize = 15;
    pub const RIP: usize = 16;
    pub const RSP: usize = 19;
    pub const FS_BASE: usize = 21;
}

pub const NT_PRSTATUS: u32 = 1;
pub const NT_PRFPREG: u32 = 2;
pub const NT_X86_XSTATE: u32 = 0x202;

fn word(gp: &[u8], idx: usize) -> u64 {
    get_u64(gp, idx * 8)
}

fn set_word(gp: &mut [u8], idx: usize, v: u64) {
    put_u64(gp, idx * 8, v)
}

impl Arch for X86_64 {
    const NAME: &'static str = "x86_64";
    const ELF_MACHINE: u16 = 62; // EM_X86_64
    const IS_64BIT: bool = true;
    const REGSETS: &'static [RegSetSpec] = &[
        RegSetSpec { note_type: NT_PRSTATUS, name: "general", max_size: 27 * 8, core_note_owner: "CORE" },
        RegSetSpec { note_type: NT_PRFPREG, name: "fxsave", max_size: 512, core_note_owner: "CORE" },
        // AMX tile data makes XSAVE areas above 8 KiB; leave room.
        RegSetSpec { note_type: NT_X86_XSTATE, name: "xsave", max_size: 16384, core_note_owner: "LINUX" },
    ];
    const SYSCALL_GADGET: &'static [u8] = &[0x0f, 0x05, 0xcc]; // syscall; int3
    const SYSCALL_INSN_LEN: u64 = 2;
    const RELATIVE_RELOC: u32 = 8; // R_X86_64_RELATIVE
    const GP_SIZE: usize = 27 * 8;

    fn sysno(call: Sysno) -> Option<u64> {
        use Sysno::*;
        Some(match call {
            Read => 0,
            Write => 1,
            Close => 3,
            Lseek => 8,
            Mmap => 9,
            Mprotect => 10,
            Munmap => 11,
            Brk => 12,
            RtSigaction => 13,
            RtSigprocmask => 14,
            Pread64 => 17,
            Mremap => 25,
            Madvise => 28,
            Getitimer => 36,
            Setitimer => 38,
            Getpid => 39,
            Exit => 60,
            Kill => 62,
            Fcntl => 72,
            Chdir => 80,
            Fchdir => 81,
            Umask => 95,
            Setpgid => 109,
            Setsid => 112,
            Capset => 126,
            Sigaltstack => 131,
            Personality => 135,
            Prctl => 157,
            ArchPrctl => 158,
            Gettid => 186,
            SetTidAddress => 218,
            ExitGroup => 231,
            Openat => 257,
            SetRobustList => 273,
            Vmsplice => 278,
            Dup3 => 292,
            Pipe2 => 293,
            Preadv => 295,
            Prlimit64 => 302,
            MemfdCreate => 319,
            Rseq => 334,
            Clone3 => 435,
            Ftruncate => 77,
            PidfdOpen => 434,
            PidfdGetfd => 438,
            RtSigtimedwait => 128,
            CloseRange => 436,
        })
    }

    fn pc(gp: &[u8]) -> u64 {
        word(gp, reg::RIP)
    }
    fn set_pc(gp: &mut [u8], pc: u64) {
        set_word(gp, reg::RIP, pc)
    }
    fn sp(gp: &[u8]) -> u64 {
        word(gp, reg::RSP)
    }
    fn set_sp(gp: &mut [u8], sp: u64) {
        set_word(gp, reg::RSP, sp)
    }

    fn prepare_syscall(gp: &mut [u8], gadget: u64, nr: u64, args: &[u64; 6]) {
        set_word(gp, reg::RAX, nr);
        set_word(gp, reg::RDI, args[0]);
        set_word(gp, reg::RSI, args[1]);
        set_word(gp, reg::RDX, args[2]);
        set_word(gp, reg::R10, args[3]);
        set_word(gp, reg::R8, args[4]);
        set_word(gp, reg::R9, args[5]);
        set_word(gp, reg::RIP, gadget);
        Self::clear_syscall(gp);
    }

    fn syscall_return(gp: &[u8]) -> i64 {
        word(gp, reg::RAX) as i64
    }

    fn prepare_call(gp: &mut [u8], entry: u64, arg: u64, stack_top: u64) {
        set_word(gp, reg::RIP, entry);
        set_word(gp, reg::RDI, arg);
        // As if reached by `call`: rsp + 8 is 16-byte aligned at function entry.
        set_word(gp, reg::RSP, (stack_top & !15) - 8);
        Self::clear_syscall(gp);
    }

    fn interrupted_syscall(gp: &[u8]) -> Option<(u64, i64)> {
        let orig = word(gp, reg::ORIG_RAX) as i64;
        (orig >= 0).then(|| (orig as u64, word(gp, reg::RAX) as i64))
    }

    fn restart_fixup(gp: &mut [u8]) -> RestartFixup {
        let Some((nr, ret)) = Self::interrupted_syscall(gp) else {
            return RestartFixup::None;
        };
        let fix = match -ret {
            // RESTARTBLOCK would call restart_syscall, whose saved state does not
            // survive a restore; re-issuing the original call (its arguments are
            // still in registers) gives a correct, if possibly longer, wait.
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK => {
                set_word(gp, reg::RAX, nr);
                set_word(gp, reg::RIP, word(gp, reg::RIP) - Self::SYSCALL_INSN_LEN);
                RestartFixup::Reissued
            }
            _ => RestartFixup::None,
        };
        Self::clear_syscall(gp);
        fix
    }

    fn clear_syscall(gp: &mut [u8]) {
        set_word(gp, reg::ORIG_RAX, u64::MAX);
    }

    fn tls(regsets: &[(u32, &[u8])]) -> Option<u64> {
        regsets
            .iter()
            .find(|(t, _)| *t == NT_PRSTATUS)
            .map(|(_, gp)| word(gp, reg::FS_BASE))
    }

    fn cpu_features(regsets: &[(u32, &[u8])]) -> u64 {
        // xfeatures of `struct _fpx_sw_bytes`, in the FXSAVE area's software-reserved bytes.
        regsets
            .iter()
            .find(|(t, d)| *t == NT_X86_XSTATE && d.len() >= 480)
            .map(|(_, d)| get_u64(d, 472))
            .unwrap_or(0)
    }

    fn needs_icache_flush() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> [u8; 27 * 8] {
        [0u8; 27 * 8]
    }

    #[test]
    fn interrupted_nanosleep_is_reissued() {
        let mut gp = regs();
        set_word(&mut gp, reg::ORIG_RAX, 230); // clock_nanosleep
        set_word(&mut gp, reg::RAX, (-ERESTART_RESTARTBLOCK) as u64);
        set_word(&mut gp, reg::RIP, 0x1002);
        assert_eq!(X86_64::restart_fixup(&mut gp), RestartFixup::Reissued);
        assert_eq!(word(&gp, reg::RAX), 230);
        assert_eq!(word(&gp, reg::RIP), 0x1000);
        assert_eq!(X86_64::interrupted_syscall(&gp), None);
    }

    #[test]
    fn completed_syscall_is_left_alone() {
        let mut gp = regs();
        set_word(&mut gp, reg::ORIG_RAX, 0);
        set_word(&mut gp, reg::RAX, 5);
        set_word(&mut gp, reg::RIP, 0x1002);
        assert_eq!(X86_64::restart_fixup(&mut gp), RestartFixup::None);
        assert_eq!(word(&gp, reg::RIP), 0x1002);
        assert_eq!(word(&gp, reg::RAX), 5);
    }

    #[test]
    fn call_stack_is_abi_aligned() {
        let mut gp = regs();
        X86_64::prepare_call(&mut gp, 0x5000, 0x7000, 0x9000);
        assert_eq!((X86_64::sp(&gp) + 8) % 16, 0);
        assert_eq!(word(&gp, reg::RDI), 0x7000);
    }
}
