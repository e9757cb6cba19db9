//! x86_64: `syscall` ABI, `user_regs_struct`, FXSAVE/XSAVE register sets.
#![no_std]

#[cfg(target_arch = "x86_64")]
pub mod raw;

use cryo_arch::{get_u64, put_u64, Arch, FarJump, FrameRecord, RegSetAccess, RegSetSpec, RestartFixup, Sysno};
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
    const EPOLL_EVENT_PACKED: bool = true;
    const REGSETS: &'static [RegSetSpec] = &[
        RegSetSpec { note_type: NT_PRSTATUS, name: "general", max_size: 27 * 8, core_note_owner: "CORE", access: RegSetAccess::Regset },
        RegSetSpec { note_type: NT_PRFPREG, name: "fxsave", max_size: 512, core_note_owner: "CORE", access: RegSetAccess::Regset },
        // AMX tile data makes XSAVE areas above 8 KiB; leave room.
        RegSetSpec { note_type: NT_X86_XSTATE, name: "xsave", max_size: 16384, core_note_owner: "LINUX", access: RegSetAccess::Regset },
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
            Clone => 56,
            Fork => 57,
            Vfork => 58,
            Execve => 59,
            Readv => 19,
            Preadv2 => 327,
            Recvfrom => 45,
            Recvmsg => 47,
            Recvmmsg => 299,
            Pwrite64 => 18,
            Getrandom => 318,
            Getdents64 => 217,
            Pread64 => 17,
            Mremap => 25,
            Madvise => 28,
            Mlock2 => 325,
            Mlockall => 151,
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
            Wait4 => 61,
            Userfaultfd => 323,
            Ioctl => 16,
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
            Sendfile => 40,
            Flock => 73,
            FcntlLock => 72,
            Eventfd2 => 290,
            TimerfdCreate => 283,
            TimerfdSettime => 286,
            Signalfd4 => 289,
            EpollCreate1 => 291,
            EpollCtl => 233,
            InotifyInit1 => 294,
            InotifyAddWatch => 254,
            TimerCreate => 222,
            TimerSettime => 223,
            TimerGettime => 224,
            TimerDelete => 226,
            Socket => 41,
            Socketpair => 53,
            Bind => 49,
            Listen => 50,
            Connect => 42,
            Sendto => 44,
            Shutdown => 48,
            Accept4 => 288,
            Getsockname => 51,
            Setsockopt => 54,
            SetTls => return None,
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

    const RESTART_SYSCALL: Option<u64> = Some(219);

    fn syscall_nr_in_code(code: &[u8]) -> Option<u64> {
        // b8 imm32 (mov eax, imm32) then 0f 05 (syscall), ending at pc.
        let n = code.len();
        if n < 7 || code[n - 2..] != [0x0f, 0x05] || code[n - 7] != 0xb8 {
            return None;
        }
        Some(u32::from_le_bytes(code[n - 6..n - 2].try_into().ok()?) as u64)
    }

    fn set_interrupted_syscall(gp: &mut [u8], nr: u64) {
        set_word(gp, reg::ORIG_RAX, nr);
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

    fn host_cpu_features() -> u64 {
        #[cfg(target_arch = "x86_64")]
        return raw::xcr0();
        #[cfg(not(target_arch = "x86_64"))]
        0
    }

    fn cpu_feature_name(bit: u32) -> Option<&'static str> {
        Some(match bit {
            0 => "x87",
            1 => "SSE",
            2 => "AVX",
            3 | 4 => "MPX",
            5..=7 => "AVX-512",
            9 => "PKRU",
            11 | 12 => "CET",
            17 | 18 => "AMX",
            19 => "APX",
            _ => return None,
        })
    }

    fn far_jump(entry: u64, to: u64) -> Option<FarJump> {
        // movabs rax, to; jmp rax (rax carries no argument; varargs callers set al, after the call)
        Some(FarJump::of(entry, &[&[0x48, 0xb8], &to.to_le_bytes(), &[0xff, 0xe0]]))
    }

    fn needs_icache_flush() -> bool {
        false
    }

    const GP_NAMES: &'static [&'static str] = &[
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
    ];
    const DWARF_SP: u16 = 7;
    const DWARF_REGS: u16 = 17;
    const FRAME_RECORD: Option<FrameRecord> = Some(FrameRecord { fp: 6, saved_fp: 0, return_address: 8 });
    const MAX_INSN_LEN: usize = 15;

    fn dwarf_reg(gp: &[u8], reg: u16) -> Option<u64> {
        // DWARF numbers rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp, r8-r15, return
        // address (rip), as user_regs_struct word indices.
        const WORDS: [usize; 17] = [10, 12, 11, 5, 13, 14, 4, 19, 9, 8, 7, 6, 3, 2, 1, 0, 16];
        WORDS.get(reg as usize).map(|&i| word(gp, i))
    }

    fn disassemble(code: &[u8], pc: u64, out: &mut dyn core::fmt::Write) -> Option<usize> {
        #[cfg(feature = "disasm")]
        {
            disasm::decode(code, pc, out)
        }
        #[cfg(not(feature = "disasm"))]
        {
            let _ = (code, pc, out);
            None
        }
    }

    fn follows_call(before: &[u8]) -> bool {
        let n = before.len();
        let at = |back: usize| if back <= n { Some(before[n - back]) } else { None };
        // call rel32
        if at(5) == Some(0xe8) {
            return true;
        }
        // call r/m64 (ff /2): modrm, optional SIB and displacement make it 2 to 7 bytes long.
        (2..=7).any(|len| at(len) == Some(0xff) && at(len - 1).is_some_and(|modrm| (modrm >> 3) & 7 == 2))
    }

    fn syscall_name(nr: u64) -> Option<&'static str> {
        Some(match nr {
            0 => "read",
            1 => "write",
            3 => "close",
            7 => "poll",
            17 => "pread64",
            18 => "pwrite64",
            19 => "readv",
            20 => "writev",
            23 => "select",
            24 => "sched_yield",
            34 => "pause",
            35 => "nanosleep",
            42 => "connect",
            43 => "accept",
            44 => "sendto",
            45 => "recvfrom",
            46 => "sendmsg",
            47 => "recvmsg",
            61 => "wait4",
            74 => "fsync",
            128 => "rt_sigtimedwait",
            130 => "rt_sigsuspend",
            202 => "futex",
            208 => "io_getevents",
            230 => "clock_nanosleep",
            231 => "exit_group",
            232 => "epoll_wait",
            247 => "waitid",
            257 => "openat",
            270 => "pselect6",
            271 => "ppoll",
            281 => "epoll_pwait",
            288 => "accept4",
            426 => "io_uring_enter",
            441 => "epoll_pwait2",
            449 => "futex_waitv",
            _ => return None,
        })
    }

    fn core_note(note_type: u32, data: &[u8], out: &mut [u8]) -> usize {
        if note_type == NT_X86_XSTATE {
            if let Some(n) = xstate::to_gdb_layout(data, out) {
                return n;
            }
        }
        out[..data.len()].copy_from_slice(data);
        data.len()
    }
}

/// XSAVE areas in ELF cores.
///
/// PTRACE_GETREGSET hands out the standard (non-compacted) XSAVE format, in
/// which each state component sits at an offset the CPU defines (CPUID leaf
/// 0xD). gdb (13 and older) assumes Intel's offsets and size for every x86
/// core: on a CPU with another layout (AMD Zen 4: 2432 bytes, AVX-512 state
/// right after AVX because there is no MPX) it warns ".reg-xstate section too
/// small" and reads the wrong bytes. gcore writes Intel's layout; so does cryo.
mod xstate {
    use cryo_arch::get_u64;

    const XCR0_OFFSET: usize = 464;
    const XSTATE_BV_OFFSET: usize = 512;
    /// Legacy FXSAVE area plus the XSAVE header: the same on every CPU.
    const FIXED: usize = 576;

    /// Components gdb knows, as (XCR0 bit, size).
    const COMPONENTS: [(u32, usize); 7] = [(2, 256), (3, 64), (4, 64), (5, 64), (6, 512), (7, 1024), (9, 8)];
    /// x87, SSE and COMPONENTS, as XCR0 bits.
    const KNOWN: u64 = 0b10_1111_1111;
    /// Intel's offsets for COMPONENTS: what gdb expects.
    const INTEL: [usize; 7] = [576, 960, 1024, 1088, 1152, 1664, 2688];
    /// AMD Zen without MPX (0: component absent).
    const AMD_ZEN: [usize; 7] = [576, 0, 0, 832, 896, 1408, 2432];

    /// The size gdb requires for a given XCR0 (gdb's X86_XSTATE_SIZE).
    fn gdb_size(xcr0: u64) -> usize {
        if xcr0 & (1 << 9) != 0 {
            2696
        } else if xcr0 & (0b111 << 5) != 0 {
            2688
        } else if xcr0 & (0b11 << 3) != 0 {
            1088
        } else if xcr0 & (1 << 2) != 0 {
            832
        } else {
            FIXED
        }
    }

    /// Where this CPU puts each component, per CPUID (0: not reported).
    #[cfg(target_arch = "x86_64")]
    fn host_offsets() -> [usize; 7] {
        let mut off = [0; 7];
        for (o, (bit, _)) in off.iter_mut().zip(COMPONENTS) {
            // SAFETY: CPUID exists on every x86_64 CPU; leaf 0xD is defined
            // wherever XSAVE is, and an undefined leaf just reads zeros.
            // (Safe to call since Rust 1.87; unsafe for the 1.85 this builds with.)
            #[allow(unused_unsafe)]
            let r = unsafe { core::arch::x86_64::__cpuid_count(0xd, bit) };
            *o = r.ebx as usize;
        }
        off
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn host_offsets() -> [usize; 7] {
        [0; 7]
    }

    /// Does `offsets` place every component enabled in `xcr0` so that the
    /// area ends exactly at `len`?
    fn fits(offsets: &[usize; 7], xcr0: u64, len: usize) -> bool {
        let mut end = FIXED;
        for ((bit, size), off) in COMPONENTS.iter().zip(offsets) {
            if xcr0 & (1 << bit) != 0 {
                if *off < FIXED {
                    return false;
                }
                end = end.max(off + size);
            }
        }
        // Components gdb does not know (AMX, ...) come after the ones it does.
        if xcr0 & !KNOWN != 0 {
            end <= len
        } else {
            end == len
        }
    }

    /// Rewrite `data` in Intel's layout into `out`; `None` if the source layout is unknown.
    pub fn to_gdb_layout(data: &[u8], out: &mut [u8]) -> Option<usize> {
        if data.len() < FIXED {
            return None;
        }
        let xcr0 = get_u64(data, XCR0_OFFSET);
        let host = host_offsets();
        // This machine's own layout first: images are mostly read where they were taken.
        let src = if fits(&host, xcr0, data.len()) {
            host
        } else if fits(&INTEL, xcr0, data.len()) {
            INTEL
        } else if fits(&AMD_ZEN, xcr0, data.len()) {
            AMD_ZEN
        } else {
            return None;
        };
        let size = gdb_size(xcr0);
        if out.len() < size {
            return None;
        }
        out[..size].fill(0);
        out[..FIXED].copy_from_slice(&data[..FIXED]);
        for (((bit, len), from), to) in COMPONENTS.iter().zip(src).zip(INTEL) {
            if xcr0 & (1 << bit) != 0 && from + len <= data.len() && to + len <= size {
                out[to..to + len].copy_from_slice(&data[from..from + len]);
            }
        }
        // State of components not carried over must not be marked present.
        let bv = get_u64(data, XSTATE_BV_OFFSET) & KNOWN;
        out[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&bv.to_le_bytes());
        Some(size)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn amd_zen_avx512_area_moves_to_intel_offsets() {
            let mut data = [0u8; 2432];
            data[XCR0_OFFSET..XCR0_OFFSET + 8].copy_from_slice(&0xe7u64.to_le_bytes());
            data[XSTATE_BV_OFFSET] = 0xe7;
            data[576] = 1; // ymm0 high half
            data[832] = 2; // k0
            data[896] = 3; // zmm0 high 256 bits
            data[1408] = 4; // zmm16
            let mut out = [0u8; 4096];
            // Whatever this host's CPUID says, a 2432-byte area with AVX-512 is Zen's.
            let n = to_gdb_layout(&data, &mut out).expect("a known layout");
            assert_eq!(n, 2688);
            assert_eq!((out[576], out[1088], out[1152], out[1664]), (1, 2, 3, 4));
            assert_eq!(out[XCR0_OFFSET], 0xe7);
        }

        #[test]
        fn intel_layout_is_kept() {
            let mut data = [0u8; 2696];
            data[XCR0_OFFSET..XCR0_OFFSET + 8].copy_from_slice(&0x2e7u64.to_le_bytes());
            data[1088] = 7;
            data[2688] = 9;
            let mut out = [0u8; 4096];
            let n = to_gdb_layout(&data, &mut out).expect("a known layout");
            assert_eq!(n, 2696);
            assert_eq!((out[1088], out[2688]), (7, 9));
        }
    }
}

#[cfg(feature = "disasm")]
mod disasm {
    use iced_x86::{Decoder, DecoderOptions, Formatter, FormatterOutput, FormatterTextKind, IntelFormatter};

    struct Out<'a> {
        w: &'a mut dyn core::fmt::Write,
        ok: bool,
    }

    impl FormatterOutput for Out<'_> {
        fn write(&mut self, text: &str, _kind: FormatterTextKind) {
            self.ok &= self.w.write_str(text).is_ok();
        }
    }

    pub fn decode(code: &[u8], pc: u64, out: &mut dyn core::fmt::Write) -> Option<usize> {
        let mut d = Decoder::with_ip(64, code, pc, DecoderOptions::NONE);
        let insn = d.decode();
        if insn.is_invalid() {
            return None;
        }
        let mut o = Out { w: out, ok: true };
        IntelFormatter::new().format(&insn, &mut o);
        o.ok.then_some(insn.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> [u8; 27 * 8] {
        [0u8; 27 * 8]
    }

    #[test]
    fn a_syscall_that_failed_runs_again() {
        let mut gp = regs();
        set_word(&mut gp, reg::RIP, 0x1002);
        set_word(&mut gp, reg::RAX, (-14i64) as u64);
        set_word(&mut gp, reg::ORIG_RAX, 46);
        X86_64::reissue_syscall(&mut gp, 46, &[3, 0x7000, 0, 0, 0, 0]);
        assert_eq!((word(&gp, reg::RIP), word(&gp, reg::RAX), word(&gp, reg::RSI)), (0x1000, 46, 0x7000));
        assert_eq!(X86_64::interrupted_syscall(&gp), None, "no restart logic on the way out");
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
