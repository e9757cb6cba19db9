//! Thin, checked wrappers over the ptrace requests cryo uses. Each unsafe call
//! is confined to one small function.

use crate::arch::{Arch, Native};
use crate::{Result, TracerError};
use cryo_arch::RegSetAccess;
use cryo_image::Rseq;
use nix::errno::Errno;

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// sizeof(siginfo_t) on every Linux architecture.
pub const SIGINFO_SIZE: usize = 128;
pub const PTRACE_EVENT_STOP: i32 = 128;
pub const PTRACE_EVENT_CLONE: i32 = libc::PTRACE_EVENT_CLONE;

/// Options every seized thread gets. TRACESYSGOOD marks syscall stops, so they
/// are never confused with a real SIGTRAP.
pub const SEIZE_OPTIONS: libc::c_int = libc::PTRACE_O_TRACESYSGOOD;

/// `req` is generic because libc types the request as c_uint on glibc and c_int on musl.
/// On a helper thread of [`crate::relay`] the tracer thread makes the request.
fn request(req: impl Into<i64>, tid: i32, addr: usize, data: usize) -> std::result::Result<libc::c_long, Errno> {
    let req = req.into();
    crate::relay::forward(req, tid, addr, data).unwrap_or_else(|| direct(req, tid, addr, data))
}

pub(crate) fn direct(req: i64, tid: i32, addr: usize, data: usize) -> std::result::Result<libc::c_long, Errno> {
    Errno::clear();
    // SAFETY: every request passed here either takes no pointer or one to a
    // buffer the caller keeps alive and sized for the request, as each wrapper
    // below documents (a relayed caller waits for the answer, so its buffer
    // lives until then).
    let r = unsafe { libc::ptrace(req as _, tid, addr as *mut libc::c_void, data as *mut libc::c_void) };
    if r == -1 && Errno::last_raw() != 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

pub fn seize(tid: i32) -> std::result::Result<(), Errno> {
    request(libc::PTRACE_SEIZE, tid, 0, SEIZE_OPTIONS as usize).map(drop)
}

/// Replace the ptrace options of a seized thread.
pub fn set_options(tid: i32, options: libc::c_int) -> Result<()> {
    request(libc::PTRACE_SETOPTIONS, tid, 0, options as usize)
        .map(drop)
        .map_err(|e| TracerError::ptrace("PTRACE_SETOPTIONS", tid, e))
}

/// The message of the last ptrace event (for a clone: the new thread's tid).
pub fn event_msg(tid: i32) -> Result<u64> {
    let mut msg: libc::c_ulong = 0;
    request(libc::PTRACE_GETEVENTMSG, tid, 0, &mut msg as *mut libc::c_ulong as usize)
        .map_err(|e| TracerError::ptrace("PTRACE_GETEVENTMSG", tid, e))?;
    Ok(msg as u64)
}

pub fn interrupt(tid: i32) -> Result<()> {
    request(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop).map_err(|e| TracerError::ptrace("PTRACE_INTERRUPT", tid, e))
}

pub fn cont(tid: i32, sig: i32) -> Result<()> {
    request(libc::PTRACE_CONT, tid, 0, sig as usize).map(drop).map_err(|e| TracerError::ptrace("PTRACE_CONT", tid, e))
}

/// Continue to the next syscall entry or exit.
pub fn cont_syscall(tid: i32, sig: i32) -> Result<()> {
    request(libc::PTRACE_SYSCALL, tid, 0, sig as usize)
        .map(drop)
        .map_err(|e| TracerError::ptrace("PTRACE_SYSCALL", tid, e))
}

/// Leave a thread in its group stop while still reporting to the tracer
/// (PTRACE_SEIZE only): it runs again on SIGCONT.
pub fn listen(tid: i32) -> Result<()> {
    request(libc::PTRACE_LISTEN, tid, 0, 0).map(drop).map_err(|e| TracerError::ptrace("PTRACE_LISTEN", tid, e))
}

const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;

/// Where a stopped thread is, from PTRACE_GET_SYSCALL_INFO (Linux 5.3), whose
/// layout is the same on every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallInfo {
    /// Not at a syscall stop.
    None { sp: u64 },
    Entry { sp: u64, nr: u64, args: [u64; 6] },
    Exit { sp: u64, rval: i64, is_error: bool },
}

impl SyscallInfo {
    pub fn sp(&self) -> u64 {
        match *self {
            SyscallInfo::None { sp } | SyscallInfo::Entry { sp, .. } | SyscallInfo::Exit { sp, .. } => sp,
        }
    }
}

pub fn syscall_info(tid: i32) -> Result<SyscallInfo> {
    // op u8, pad, arch u32, instruction_pointer u64, stack_pointer u64, then
    // entry {nr, args[6]} or exit {rval s64, is_error u8}.
    let mut buf = [0u64; 11];
    request(PTRACE_GET_SYSCALL_INFO, tid, std::mem::size_of_val(&buf), buf.as_mut_ptr() as usize)
        .map_err(|e| TracerError::ptrace("PTRACE_GET_SYSCALL_INFO", tid, e))?;
    let (op, sp) = (buf[0] as u8, buf[2]);
    Ok(match op {
        1 => SyscallInfo::Entry { sp, nr: buf[3], args: [buf[4], buf[5], buf[6], buf[7], buf[8], buf[9]] },
        2 => SyscallInfo::Exit { sp, rval: buf[3] as i64, is_error: buf[4] as u8 != 0 },
        _ => SyscallInfo::None { sp },
    })
}

pub fn detach(tid: i32, sig: i32) -> Result<()> {
    request(libc::PTRACE_DETACH, tid, 0, sig as usize).map(drop).map_err(|e| TracerError::ptrace("PTRACE_DETACH", tid, e))
}

/// How the register set with this note type is read and written (see `RegSetAccess`).
fn access(note_type: u32) -> RegSetAccess {
    Native::REGSETS.iter().find(|s| s.note_type == note_type).map_or(RegSetAccess::Regset, |s| s.access)
}

/// PTRACE_GETREGSET: returns the bytes the kernel filled in (it shrinks iov_len).
/// A one-word set the arch reads with another request comes back as that word.
pub fn get_regset(tid: i32, note_type: u32, max_size: usize) -> std::result::Result<Vec<u8>, Errno> {
    if let RegSetAccess::GetOnly { get_request } = access(note_type) {
        let mut word: libc::c_ulong = 0;
        request(get_request, tid, 0, &mut word as *mut libc::c_ulong as usize)?;
        let bytes = word.to_le_bytes();
        return Ok(bytes[..max_size.min(bytes.len())].to_vec());
    }
    let mut buf = vec![0u8; max_size];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    request(libc::PTRACE_GETREGSET, tid, note_type as usize, &mut iov as *mut libc::iovec as usize)?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// PTRACE_SETREGSET. A set ptrace cannot write (`RegSetAccess::GetOnly`) must
/// already hold `data` (the thread set it itself); otherwise this fails.
pub fn set_regset(tid: i32, note_type: u32, data: &[u8]) -> Result<()> {
    if let RegSetAccess::GetOnly { .. } = access(note_type) {
        let now = get_regset(tid, note_type, data.len()).map_err(|e| TracerError::ptrace(format!("reading register set {note_type:#x}"), tid, e))?;
        if now != data {
            return Err(TracerError::RegisterNotSet { tid, note_type, now: format!("{now:02x?}"), saved: format!("{data:02x?}") });
        }
        return Ok(());
    }
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    request(libc::PTRACE_SETREGSET, tid, note_type as usize, &mut iov as *mut libc::iovec as usize)
        .map(drop)
        .map_err(|e| TracerError::ptrace(format!("PTRACE_SETREGSET {note_type:#x}"), tid, e))
}

pub fn get_sigmask(tid: i32) -> Result<u64> {
    let mut mask = 0u64;
    request(PTRACE_GETSIGMASK, tid, 8, &mut mask as *mut u64 as usize)
        .map_err(|e| TracerError::ptrace("PTRACE_GETSIGMASK", tid, e))?;
    Ok(mask)
}

pub fn set_sigmask(tid: i32, mask: u64) -> Result<()> {
    let mut m = mask;
    request(PTRACE_SETSIGMASK, tid, 8, &mut m as *mut u64 as usize)
        .map(drop)
        .map_err(|e| TracerError::ptrace("PTRACE_SETSIGMASK", tid, e))
}

/// struct ptrace_rseq_configuration
#[repr(C)]
#[derive(Default)]
struct RseqConfig {
    rseq_abi_pointer: u64,
    rseq_abi_size: u32,
    signature: u32,
    flags: u32,
    pad: u32,
}

/// The thread's registered rseq area, `None` if it has none (or the kernel
/// predates PTRACE_GET_RSEQ_CONFIGURATION, where glibc's rseq cannot be seen).
pub fn get_rseq(tid: i32) -> Result<Option<Rseq>> {
    let mut c = RseqConfig::default();
    match request(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<RseqConfig>(),
        &mut c as *mut RseqConfig as usize,
    ) {
        Ok(_) => Ok((c.rseq_abi_pointer != 0).then_some(Rseq {
            addr: c.rseq_abi_pointer,
            len: c.rseq_abi_size,
            sig: c.signature,
        })),
        Err(Errno::EIO) | Err(Errno::EINVAL) => Ok(None),
        Err(e) => Err(TracerError::ptrace("PTRACE_GET_RSEQ_CONFIGURATION", tid, e)),
    }
}

/// struct ptrace_peeksiginfo_args.
#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// The siginfo of every signal queued for a stopped tracee, oldest first:
/// its own queue, or with `shared` its process's. Each is a raw siginfo_t,
/// as the kernel keeps it (pids as the receiver's namespace sees them).
pub fn peek_siginfo(tid: i32, shared: bool) -> Result<Vec<Vec<u8>>> {
    const BATCH: usize = 32;
    // u64s: siginfo_t is 8-aligned.
    let mut buf = vec![0u64; BATCH * SIGINFO_SIZE / 8];
    let mut out = Vec::new();
    loop {
        let args = PeekSiginfoArgs { off: out.len() as u64, flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 }, nr: BATCH as i32 };
        // `args` lives across the call; `buf` holds BATCH siginfos.
        let n = request(PTRACE_PEEKSIGINFO, tid, &args as *const PeekSiginfoArgs as usize, buf.as_mut_ptr() as usize)
            .map_err(|e| TracerError::ptrace("PTRACE_PEEKSIGINFO", tid, e))? as usize;
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        out.extend(bytes.chunks_exact(SIGINFO_SIZE).take(n.min(BATCH)).map(<[u8]>::to_vec));
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// The robust futex list of another thread (get_robust_list works on any
/// thread we may ptrace).
pub fn get_robust_list(tid: i32) -> Result<(u64, u64)> {
    let mut head: usize = 0;
    let mut len: usize = 0;
    // SAFETY: both out-pointers are valid locals of the sizes the syscall writes.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, tid, &mut head as *mut usize, &mut len as *mut usize) };
    if r < 0 {
        return Err(TracerError::ptrace("get_robust_list", tid, Errno::last()));
    }
    Ok((head as u64, len as u64))
}

/// What a waited-for thread reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// PTRACE_EVENT_STOP: the interrupt (sig SIGTRAP) or a group stop (SIGSTOP etc.).
    Event { sig: i32 },
    /// A signal is about to be delivered; it is the tracer's to pass on or hold.
    Signal(i32),
    /// Syscall entry or exit (with TRACESYSGOOD).
    Syscall,
    /// Another ptrace event (clone, exec, exit): its number.
    OtherEvent(i32),
    Exited(i32),
    Killed(i32),
}

pub fn wait(tid: i32) -> Result<Stop> {
    wait_flags(tid, 0).map(|s| s.expect("blocking wait returns a status"))
}

/// waitpid(tid, __WALL | extra); `None` if WNOHANG found nothing.
pub fn wait_flags(tid: i32, extra: libc::c_int) -> Result<Option<Stop>> {
    let mut status = 0;
    let r = loop {
        // SAFETY: status is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | extra) };
        if r == -1 && Errno::last() == Errno::EINTR {
            continue;
        }
        break r;
    };
    if r == -1 {
        return Err(TracerError::ptrace("waitpid", tid, Errno::last()));
    }
    if r == 0 {
        return Ok(None);
    }
    Ok(Some(decode_status(status)))
}

/// Reap what the killed traced threads `tids` report, dropping those that
/// have exited (or are not ours to wait for). A traced thread stays a
/// zombie until its tracer does this, and its process is not gone (its
/// pidfd does not poll readable) before all of them are.
pub fn reap_exited(tids: &mut Vec<i32>) {
    tids.retain(|&tid| loop {
        match wait_flags(tid, libc::WNOHANG) {
            Ok(Some(Stop::Exited(_) | Stop::Killed(_))) | Err(_) => break false,
            // A stop reported before the exit: the exit may follow.
            Ok(Some(_)) => continue,
            Ok(None) => break true,
        }
    });
}

pub fn decode_status(status: i32) -> Stop {
    if libc::WIFEXITED(status) {
        return Stop::Exited(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        return Stop::Killed(libc::WTERMSIG(status));
    }
    let sig = libc::WSTOPSIG(status);
    let event = status >> 16;
    if event == PTRACE_EVENT_STOP {
        Stop::Event { sig }
    } else if event != 0 {
        Stop::OtherEvent(event)
    } else if sig == libc::SIGTRAP | 0x80 {
        Stop::Syscall
    } else {
        Stop::Signal(sig)
    }
}
