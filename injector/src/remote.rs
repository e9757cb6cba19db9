//! Remote syscalls: point a stopped thread's pc at a "syscall; trap" gadget,
//! let it run to the trap, read the result.

use crate::{InjectError, Result};
use cryo_image::Vma;
use cryo_tracer::arch::{nr, Arch, Native, Sysno};
use cryo_tracer::proc::MemFile;
use cryo_tracer::ptrace::{self, Stop};
use cryo_tracer::Seized;

/// Bytes saved at the bootstrap gadget spot: the gadget plus scratch room for
/// a short string argument (the memfd name) before the parasite exists.
const BOOT_SPOT_LEN: usize = 64;
const BOOT_SCRATCH_OFF: u64 = 16;

/// A stopped thread cryo runs syscalls in. Its original registers stay in the
/// `Seized` thread; `Seized` puts them back when it lets go.
pub struct Remote {
    pub pid: i32,
    pub tid: i32,
    pub mem: MemFile,
    gadget: u64,
    /// GP registers everything is derived from: the thread's own, so that
    /// segment registers and flags stay valid.
    base_gp: Vec<u8>,
    /// Original bytes under the bootstrap gadget, while it is in place.
    boot: Option<(u64, Vec<u8>)>,
    /// Host tids of threads and processes this thread created (ptrace clone
    /// and fork events), in order.
    pub cloned: Vec<i32>,
}

impl Remote {
    /// Start remote syscalls in thread `tid` of a seized process, writing a
    /// temporary gadget at the start of a private executable mapping.
    pub fn bootstrap(seized: &mut Seized, tid: i32, vmas: &[Vma]) -> Result<Remote> {
        let pid = seized.pid;
        let spot = vmas
            .iter()
            .find(|v| {
                v.prot & libc::PROT_EXEC as u32 != 0 && !v.shared && v.len() >= BOOT_SPOT_LEN as u64 && v.name != "[vdso]" && v.name != "[vsyscall]"
            })
            .map(|v| v.start)
            .ok_or(InjectError::NoGadgetSpot { pid })?;
        let mem = MemFile::open(pid)?;
        let mut saved = vec![0u8; BOOT_SPOT_LEN];
        mem.read(spot, &mut saved)?;
        seized.mark_modified(tid)?;
        mem.write(spot, Native::SYSCALL_GADGET)?;
        let base_gp = seized.thread(tid).gp().to_vec();
        Ok(Remote { pid, tid, mem, gadget: spot, base_gp, boot: Some((spot, saved)), cloned: Vec::new() })
    }

    /// Another thread of the same seized process, run through an existing
    /// gadget (the parasite's).
    pub fn for_thread(seized: &Seized, tid: i32, gadget: u64) -> Result<Remote> {
        let base_gp = seized.thread(tid).gp().to_vec();
        Self::with_regs(seized.pid, tid, gadget, base_gp)
    }

    /// A thread that is stopped under ptrace but not part of a `Seized` (a
    /// thread the restorer just created), with the registers it has now.
    pub fn with_regs(pid: i32, tid: i32, gadget: u64, base_gp: Vec<u8>) -> Result<Remote> {
        Ok(Remote { pid, tid, mem: MemFile::open(pid)?, gadget, base_gp, boot: None, cloned: Vec::new() })
    }

    /// Scratch bytes next to the bootstrap gadget for a small argument.
    pub fn boot_scratch(&self, bytes: &[u8]) -> Result<u64> {
        assert!(bytes.len() as u64 <= BOOT_SPOT_LEN as u64 - BOOT_SCRATCH_OFF);
        let (spot, _) = self.boot.as_ref().expect("bootstrap gadget in place");
        let addr = spot + BOOT_SCRATCH_OFF;
        self.mem.write(addr, bytes)?;
        Ok(addr)
    }

    /// Move to a gadget that lives in the parasite, and put the target's own
    /// code back the way it was.
    pub fn switch_gadget(&mut self, gadget: u64) -> Result<()> {
        self.gadget = gadget;
        self.drop_bootstrap()
    }

    /// Restore the bytes under the bootstrap gadget (idempotent).
    pub fn drop_bootstrap(&mut self) -> Result<()> {
        if let Some((spot, saved)) = self.boot.take() {
            self.mem.write(spot, &saved)?;
        }
        Ok(())
    }

    pub fn base_gp(&self) -> &[u8] {
        &self.base_gp
    }

    /// Run one syscall; returns the raw result (negative errno on failure).
    pub fn syscall_raw(&mut self, seized: &mut Seized, call: Sysno, args: [u64; 6]) -> Result<i64> {
        cryo_tracer::fault::check("syscall")?;
        self.syscall_unchecked(seized, call, args)
    }

    /// [`Self::syscall_raw`] for the steps that put the target back: they run even
    /// when cryo was asked to stop.
    pub fn syscall_unchecked(&mut self, seized: &mut Seized, call: Sysno, args: [u64; 6]) -> Result<i64> {
        let mut gp = self.base_gp.clone();
        Native::prepare_syscall(&mut gp, self.gadget, nr(call), &args);
        ptrace::set_regset(self.tid, cryo_arch_gp_note(), &gp)?;
        let after = self.run_to_trap(seized)?;
        Ok(Native::syscall_return(&after))
    }

    /// Run one syscall; a failure is an error naming it.
    pub fn syscall(&mut self, seized: &mut Seized, call: Sysno, args: [u64; 6]) -> Result<u64> {
        let r = self.syscall_raw(seized, call, args)?;
        if cryo_parasite::abi::is_error(r) {
            return Err(InjectError::Syscall { pid: self.pid, call, errno: nix::errno::Errno::from_raw(-r as i32) });
        }
        Ok(r as u64)
    }

    /// Run a syscall stepping with PTRACE_SYSCALL, so the thread stops at the
    /// syscall's exit before returning to user code: for a call that unmaps the
    /// gadget itself.
    pub fn syscall_to_exit(&mut self, seized: &mut Seized, call: Sysno, args: [u64; 6]) -> Result<i64> {
        let mut gp = self.base_gp.clone();
        Native::prepare_syscall(&mut gp, self.gadget, nr(call), &args);
        ptrace::set_regset(self.tid, cryo_arch_gp_note(), &gp)?;
        let mut stops = 0;
        ptrace::cont_syscall(self.tid, 0)?;
        loop {
            match ptrace::wait(self.tid)? {
                Stop::Syscall => {
                    stops += 1;
                    if stops == 2 {
                        let after = ptrace::get_regset(self.tid, cryo_arch_gp_note(), Native::GP_SIZE)
                            .map_err(|e| cryo_tracer::TracerError::ptrace("PTRACE_GETREGSET", self.tid, e))?;
                        return Ok(Native::syscall_return(&after));
                    }
                    ptrace::cont_syscall(self.tid, 0)?;
                }
                other => self.unexpected(seized, other, true)?,
            }
        }
    }

    /// Continue the thread until it executes the trap instruction.
    pub fn run_to_trap(&mut self, seized: &mut Seized) -> Result<Vec<u8>> {
        ptrace::cont(self.tid, 0)?;
        self.wait_trap(seized)
    }

    /// Wait for the trap after the thread was continued.
    pub fn wait_trap(&mut self, seized: &mut Seized) -> Result<Vec<u8>> {
        loop {
            let stop = ptrace::wait(self.tid)?;
            if let Some(gp) = self.on_stop(seized, stop)? {
                return Ok(gp);
            }
        }
    }

    /// Handle one stop while the thread runs injected code: `Some(regs)` when
    /// it reached the trap, `None` when it was continued and must be waited for.
    pub fn on_stop(&mut self, seized: &mut Seized, stop: Stop) -> Result<Option<Vec<u8>>> {
        match stop {
            Stop::Signal(libc::SIGTRAP) => {
                let gp = ptrace::get_regset(self.tid, cryo_arch_gp_note(), Native::GP_SIZE)
                    .map_err(|e| cryo_tracer::TracerError::ptrace("PTRACE_GETREGSET", self.tid, e))?;
                Ok(Some(gp))
            }
            other => {
                self.unexpected(seized, other, false)?;
                Ok(None)
            }
        }
    }

    fn unexpected(&mut self, seized: &mut Seized, stop: Stop, syscall_stepping: bool) -> Result<()> {
        let cont = |tid| if syscall_stepping { ptrace::cont_syscall(tid, 0) } else { ptrace::cont(tid, 0) };
        match stop {
            Stop::Signal(sig @ (libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE)) => {
                let gp = ptrace::get_regset(self.tid, cryo_arch_gp_note(), Native::GP_SIZE).unwrap_or_default();
                let pc = if gp.is_empty() { 0 } else { Native::pc(&gp) };
                Err(InjectError::Fault { pid: self.pid, sig, pc })
            }
            Stop::Signal(libc::SIGSYS) => Err(InjectError::Seccomp { pid: self.pid, call: Sysno::Getpid }),
            Stop::Signal(sig) => {
                // Someone signalled the target meanwhile: keep it for later.
                seized.hold_signal(self.tid, sig);
                cont(self.tid)?;
                Ok(())
            }
            Stop::OtherEvent(libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK) => {
                self.cloned.push(ptrace::event_msg(self.tid)? as i32);
                cont(self.tid)?;
                Ok(())
            }
            Stop::Event { .. } | Stop::OtherEvent(_) | Stop::Syscall => {
                cont(self.tid)?;
                Ok(())
            }
            Stop::Exited(_) | Stop::Killed(_) => Err(cryo_tracer::TracerError::Exited { pid: self.pid }.into()),
        }
    }
}

/// NT_PRSTATUS: the general-purpose set is always the first of `REGSETS`.
pub fn cryo_arch_gp_note() -> u32 {
    Native::REGSETS[0].note_type
}
