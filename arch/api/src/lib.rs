//! What differs per CPU, behind one trait. Implementations are zero-sized
//! types in `arch/x86_64`, `arch/aarch64` and `arch/armv7`; the rest of cryo
//! only ever talks to [`Arch`].
//!
//! Registers travel as the raw bytes of ptrace register sets (the same bytes
//! an ELF core note holds), so the image format and the core writer never need
//! to know a CPU's register layout.
#![no_std]

/// A ptrace register set the architecture saves per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegSetSpec {
    /// `NT_*` note type passed to PTRACE_GETREGSET / SETREGSET and used in ELF cores.
    pub note_type: u32,
    /// Human name for messages and `cryo inspect`.
    pub name: &'static str,
    /// Largest size the kernel may return; the buffer handed to GETREGSET.
    pub max_size: usize,
    /// Name of the ELF core note owner ("CORE" or "LINUX").
    pub core_note_owner: &'static str,
    /// How ptrace reads and writes it.
    pub access: RegSetAccess,
}

/// How the tracer gets at a register set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegSetAccess {
    /// PTRACE_GETREGSET / PTRACE_SETREGSET with the set's `note_type`.
    Regset,
    /// One word the kernel only hands out through the ptrace request
    /// `get_request` (32-bit ARM's TLS register: an ARMv7 kernel has no register
    /// set for it). ptrace cannot write it: the thread sets it itself with
    /// [`Sysno::SetTls`], and the tracer only checks that it holds the saved value.
    GetOnly { get_request: u32 },
}

/// Syscalls cryo issues inside a target, or watches a lazily restored one make,
/// by meaning; each arch maps them to its numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sysno {
    Read,
    Write,
    Openat,
    Close,
    CloseRange,
    Lseek,
    Mmap,
    Munmap,
    Mprotect,
    Mremap,
    Madvise,
    Mlock2,
    Mlockall,
    Brk,
    RtSigaction,
    RtSigprocmask,
    Sigaltstack,
    Getitimer,
    Setitimer,
    Umask,
    Prctl,
    Fcntl,
    Dup3,
    Pipe2,
    Vmsplice,
    Preadv,
    Pread64,
    MemfdCreate,
    Chdir,
    Fchdir,
    Rseq,
    SetRobustList,
    SetTidAddress,
    Capset,
    Getpid,
    Gettid,
    Kill,
    Exit,
    ExitGroup,
    Clone3,
    Setsid,
    Wait4,
    Userfaultfd,
    Ioctl,
    Setpgid,
    ArchPrctl,
    Personality,
    Prlimit64,
    Ftruncate,
    PidfdOpen,
    PidfdGetfd,
    RtSigtimedwait,
    /// sendfile with a NULL offset (sendfile64 where the plain one takes a 32-bit offset).
    Sendfile,
    Flock,
    /// fcntl for the record-lock commands, taking `struct flock64` (its layout,
    /// [`flock64`], is the same on every supported CPU): fcntl64 on 32-bit ARM.
    FcntlLock,
    Eventfd2,
    TimerfdCreate,
    TimerfdSettime,
    Signalfd4,
    EpollCreate1,
    EpollCtl,
    InotifyInit1,
    InotifyAddWatch,
    TimerCreate,
    TimerSettime,
    TimerGettime,
    TimerDelete,
    Socket,
    Socketpair,
    Bind,
    Listen,
    Connect,
    Sendto,
    Shutdown,
    Accept4,
    Getsockname,
    Setsockopt,
    /// Set the calling thread's TLS register where no register set can
    /// (32-bit ARM's private `set_tls`); `None` elsewhere.
    SetTls,
    Clone,
    /// `None` on aarch64, which has only clone.
    Fork,
    /// `None` on aarch64.
    Vfork,
    Execve,
    Readv,
    Preadv2,
    Recvfrom,
    Recvmsg,
    Recvmmsg,
    Pwrite64,
    Getrandom,
    Getdents64,
}

/// What a syscall interrupted by the freeze needs so that the thread carries
/// on correctly when it is resumed with no kernel restart logic (after a
/// restore, where it leaves through a register load, not a syscall return).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartFixup {
    /// Not inside a syscall, or the syscall completed: nothing to change.
    None,
    /// The registers were rewound to re-issue the syscall.
    Reissued,
    /// The syscall cannot be re-issued; it returns `-EINTR` to the program.
    Interrupted,
}

pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;
pub const EINTR: i64 = 4;

/// Everything that differs per CPU. All functions are associated (no `self`):
/// an implementation is a marker type.
/// Code of [`Arch::far_jump`]: the first `len` bytes of `code`, to be
/// written at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FarJump {
    pub code: [u8; 16],
    pub len: usize,
    pub at: u64,
}

impl FarJump {
    pub fn bytes(&self) -> &[u8] {
        &self.code[..self.len]
    }

    /// Instructions and literals, laid one after another from `at`.
    pub fn of(at: u64, parts: &[&[u8]]) -> FarJump {
        let mut j = FarJump { code: [0; 16], len: 0, at };
        for p in parts {
            j.code[j.len..j.len + p.len()].copy_from_slice(p);
            j.len += p.len();
        }
        j
    }
}

pub trait Arch {
    /// Name as stored in images and matched on restore ("x86_64", "aarch64", "armv7").
    const NAME: &'static str;
    /// `e_machine` of ELF files and cores for this CPU.
    const ELF_MACHINE: u16;
    /// Does a process of this arch use 64-bit pointers (ELF64 cores, 64-bit auxv)?
    const IS_64BIT: bool;
    /// Register sets saved per thread. The first is always the general-purpose set
    /// (`NT_PRSTATUS`), which every other function here takes as `gp`.
    const REGSETS: &'static [RegSetSpec];
    /// Machine code for "syscall; trap": the injector's remote-syscall gadget.
    const SYSCALL_GADGET: &'static [u8];
    /// Length of the syscall instruction (the pc rewind for a re-issued syscall).
    const SYSCALL_INSN_LEN: u64;
    /// ELF relocation type the parasite's static-pie uses for base-relative fixups.
    const RELATIVE_RELOC: u32;
    /// Size in bytes of the `NT_PRSTATUS` register set.
    const GP_SIZE: usize;
    /// Width of uid/gid fields in an ELF core's `struct elf_prpsinfo`.
    const PRPSINFO_UID_BYTES: usize = 4;

    /// Syscall number, or `None` where this arch does not have that call.
    /// The fcntl command taking a `struct flock64` ([`flock64`]) with
    /// [`Sysno::FcntlLock`]: F_SETLK on 64-bit CPUs, F_SETLK64 on 32-bit ARM.
    const F_SETLK64: u64 = 6;
    /// `struct epoll_event` is packed (12 bytes) on x86_64 and padded to 16
    /// elsewhere.
    const EPOLL_EVENT_PACKED: bool = false;

    /// A `struct epoll_event` and its size.
    fn epoll_event(events: u32, data: u64) -> ([u8; 16], usize) {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&events.to_le_bytes());
        let at = if Self::EPOLL_EVENT_PACKED { 4 } else { 8 };
        b[at..at + 8].copy_from_slice(&data.to_le_bytes());
        (b, at + 8)
    }

    fn sysno(call: Sysno) -> Option<u64>;

    fn pc(gp: &[u8]) -> u64;
    fn set_pc(gp: &mut [u8], pc: u64);
    fn sp(gp: &[u8]) -> u64;
    fn set_sp(gp: &mut [u8], sp: u64);

    /// Set registers so that continuing at `gadget` runs syscall `nr` with `args`,
    /// and no kernel restart logic applies to whatever syscall was interrupted.
    fn prepare_syscall(gp: &mut [u8], gadget: u64, nr: u64, args: &[u64; 6]);
    /// The syscall's return value after the gadget trapped.
    fn syscall_return(gp: &[u8]) -> i64;

    /// Set registers to call a function at `entry` with `arg` as its first
    /// argument on a stack whose (exclusive) top is `stack_top`. The function
    /// does not return: it ends with a trap.
    fn prepare_call(gp: &mut [u8], entry: u64, arg: u64, stack_top: u64);

    /// If the thread stopped inside a syscall: (syscall number, current return register).
    fn interrupted_syscall(gp: &[u8]) -> Option<(u64, i64)>;
    /// Rewrite registers of a thread frozen inside a syscall so it behaves as the
    /// kernel's own restart would, for a resume that bypasses that logic.
    fn restart_fixup(gp: &mut [u8]) -> RestartFixup;

    /// Number of restart_syscall, which the kernel issues to resume a sleep
    /// (nanosleep, futex wait, poll) that a stop interrupted; its state lives
    /// in the kernel and is lost across a restore (None: not on this CPU).
    const RESTART_SYSCALL: Option<u64> = None;
    /// The syscall number the code just before pc loaded for its syscall
    /// instruction (x86_64: `mov eax, imm32; syscall`), if it is that plain.
    fn syscall_nr_in_code(_code_before_pc: &[u8]) -> Option<u64> {
        None
    }
    /// Make saved registers say the thread was interrupted in syscall `nr`.
    fn set_interrupted_syscall(_gp: &mut [u8], _nr: u64) {}
    /// At a syscall-exit stop: set registers so that the thread, once let go,
    /// runs the syscall instruction it just left again, as call `nr` with `args`.
    fn reissue_syscall(gp: &mut [u8], nr: u64, args: &[u64; 6]) {
        let at = Self::pc(gp) - Self::SYSCALL_INSN_LEN;
        Self::prepare_syscall(gp, at, nr, args);
    }
    /// Mark the registers as "not in a syscall" so a register load does not
    /// trigger the kernel's restart logic again.
    fn clear_syscall(gp: &mut [u8]);

    /// Thread pointer (fs_base, tpidr_el0, TPIDRURO), from the saved register sets.
    fn tls(regsets: &[(u32, &[u8])]) -> Option<u64>;

    /// The `mmap` offset argument for a byte offset (ARMv7's mmap2 counts pages).
    fn mmap_offset_arg(byte_offset: u64) -> u64 {
        byte_offset
    }

    /// CPU features the saved register state depends on (x86: XCR0 as the
    /// kernel reports it in the XSAVE area), checked before a restore.
    fn cpu_features(_regsets: &[(u32, &[u8])]) -> u64 {
        0
    }

    /// The same features of the CPU this runs on (call only for the native arch).
    fn host_cpu_features() -> u64 {
        0
    }

    /// Names of feature bits, for a refusal a person can act on.
    fn cpu_feature_name(_bit: u32) -> Option<&'static str> {
        None
    }

    /// Bytes of a pointer inside structures the kernel reads without a compat
    /// translation (prctl_mm_map's auxv pointer), given the kernel's machine name
    /// (uname -m): a 32-bit process on a 64-bit kernel must lay them out with
    /// 8-byte pointers.
    fn kernel_pointer_bytes(_uname_machine: &str) -> usize {
        if Self::IS_64BIT {
            8
        } else {
            4
        }
    }

    /// Must the instruction cache be flushed after code was written into a
    /// process from outside? (x86 keeps it coherent; ARM does not.)
    fn needs_icache_flush() -> bool;

    /// Machine code for the entry of the function at `entry` (as a symbol
    /// gives it: bit 0 marks Thumb code on ARMv7) that jumps to `to`
    /// anywhere in the address space with the arguments untouched (it may
    /// clobber a scratch register the calling convention gives up at a call).
    fn far_jump(entry: u64, to: u64) -> Option<FarJump>;

    // Reading a snapshot offline (`cryo inspect`, `cryo core`). Defaults are
    // what an arch without these capabilities gets: raw bytes instead of
    // instructions, stack scans instead of unwinding, register sets as saved.

    /// Names of the words of the general-purpose register set, in order
    /// (word size: 8 bytes on 64-bit arches, 4 on 32-bit ones).
    const GP_NAMES: &'static [&'static str] = &[];
    /// DWARF register number of the stack pointer.
    const DWARF_SP: u16 = 0;
    /// Registers `dwarf_reg` can read are numbered 0..DWARF_REGS.
    const DWARF_REGS: u16 = 0;
    /// Frame records made by frame-pointer-keeping code, if the ABI has them.
    const FRAME_RECORD: Option<FrameRecord> = None;
    /// Longest instruction in bytes (what to read at a pc to decode one).
    const MAX_INSN_LEN: usize = 4;

    /// Value of DWARF register `reg` in the general-purpose set (the numbering
    /// of `.eh_frame` unwind tables).
    fn dwarf_reg(_gp: &[u8], _reg: u16) -> Option<u64> {
        None
    }

    /// Decode the instruction at the start of `code`, which sits at address
    /// `pc`, and write its text to `out`. Returns its length, or `None` when
    /// the bytes are no valid instruction or this build has no decoder.
    fn disassemble(_code: &[u8], _pc: u64, _out: &mut dyn core::fmt::Write) -> Option<usize> {
        None
    }

    /// Do the bytes just before a candidate return address end with a call
    /// instruction? Guards the heuristic stack scan against stray code pointers.
    fn follows_call(_before: &[u8]) -> bool {
        true
    }

    /// Name of a syscall number, for the ones a stuck thread is usually in.
    fn syscall_name(_nr: u64) -> Option<&'static str> {
        None
    }

    /// A saved register set as debuggers expect it in an ELF core note,
    /// written to `out` (at least as long as the set's `max_size`); returns
    /// the length written. Default: unchanged.
    fn core_note(_note_type: u32, data: &[u8], out: &mut [u8]) -> usize {
        out[..data.len()].copy_from_slice(data);
        data.len()
    }
}

/// Where the frame-pointer register points in a frame record: the caller's
/// frame pointer and the return address, at these byte offsets from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    /// DWARF number of the frame-pointer register.
    pub fp: u16,
    pub saved_fp: i64,
    pub return_address: i64,
}

/// Read a little-endian u64 at byte offset `off` of a register set.
pub fn get_u64(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(b)
}

/// Write a little-endian u64 at byte offset `off` of a register set.
pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Read a little-endian u32 at byte offset `off` of a register set.
pub fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_le_bytes(b)
}

/// Write a little-endian u32 at byte offset `off` of a register set.
pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// `struct flock64` for [`Sysno::FcntlLock`]: l_type and l_whence (i16), then
/// l_start and l_len (i64, 8-aligned), then l_pid. x86_64's and arm64's
/// `struct flock` and 32-bit ARM EABI's `struct flock64` all lay it out this way.
pub fn flock64(l_type: i16, start: u64, len: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..2].copy_from_slice(&l_type.to_le_bytes());
    // l_whence = SEEK_SET (0)
    put_u64(&mut b, 8, start);
    put_u64(&mut b, 16, len);
    b
}
