//! The parasite blob: a position-independent static ELF that the injector
//! copies into a stopped target and runs in "trap mode" (see `cryo_parasite`).
//!
//! Built only as
//! `cargo build -p cryo-parasite --bin parasite --features blob --release --target <arch>-unknown-none`
//! (injector/build.rs does that). Its entry point is [`_start`]: the tracer
//! points the pc at it with the command area's address in the first argument
//! register and a stack whose top is aligned as after a call. The blob runs the
//! command, writes `status` and `done`, and traps; it never returns.
//!
//! No allocation, no floating point, no panics reachable (the handler traps).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

/// Built for a hosted target (e.g. `cargo build --workspace --all-features`):
/// the blob only makes sense for `<arch>-unknown-none`, so this is a stub.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the parasite blob must be built for <arch>-unknown-none (see injector/build.rs)");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod blob {
    use core::mem::MaybeUninit;
    use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

    use cryo_parasite::abi::{
        is_error, widen_return, CmdHeader, IoVec, SyscallEntry, CMD_MAGIC, CMD_SYSCALLS, CMD_VMSPLICE, CMD_ZERO_PAGES,
        CMD_AREA_SIZE, MAX_IOVECS, MAX_SYSCALLS, PIPE_SLICE, STATUS_BAD_COMMAND, SYSCALL_IGNORE_ERROR, VMSPLICE_TWO,
    };

    /// The raw syscall/trap primitives of the CPU this blob is built for.
    mod sys {
        #[cfg(target_arch = "aarch64")]
        pub use cryo_arch_aarch64::raw::{syscall6, trap, SYS_PPOLL, SYS_VMSPLICE};
        #[cfg(target_arch = "arm")]
        pub use cryo_arch_armv7::raw::{syscall6, trap, SYS_PPOLL, SYS_VMSPLICE};
        #[cfg(target_arch = "x86_64")]
        pub use cryo_arch_x86_64::raw::{syscall6, trap, SYS_PPOLL, SYS_VMSPLICE};
    }

    const EINTR: i64 = 4;
    const EIO: i64 = 5;
    const EINVAL: i64 = 22;

    /// iovecs per vmsplice call; at most IOV_MAX (1024).
    const CHUNK: usize = 1024;
    /// Largest segment length handed to the kernel (it rejects lengths that are
    /// negative as `ssize_t`, and moves at most MAX_RW_COUNT per call anyway).
    const MAX_SEG: u64 = isize::MAX as u64;

    /// `struct pollfd`.
    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }
    const POLLOUT: i16 = 4;

    /// `struct iovec` as the kernel of this CPU sees it (2×u32 on 32-bit ARM).
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct KIovec {
        base: usize,
        len: usize,
    }

    /// The ELF entry point.
    ///
    /// # Safety
    /// `cmd` must point to a writable command area of `abi::CMD_AREA_SIZE`
    /// bytes holding a [`CmdHeader`] and its records, and every pointer in the
    /// command must be valid for the syscalls it is passed to.
    #[no_mangle]
    pub unsafe extern "C" fn _start(cmd: *mut CmdHeader) -> ! {
        if !cmd.is_null() {
            // SAFETY: `cmd` is the non-null command area the tracer set up
            // (function contract); `dispatch` only accesses the header and the
            // records it bounds by MAX_SYSCALLS / MAX_IOVECS, all inside it.
            let (status, done) = unsafe { dispatch(cmd) };
            // SAFETY: `cmd` points to a writable `CmdHeader` (contract above).
            unsafe {
                write_volatile(addr_of_mut!((*cmd).done), done);
                write_volatile(addr_of_mut!((*cmd).status), status);
            }
        }
        sys::trap()
    }

    /// Validate the header and run its command: (status, done).
    ///
    /// # Safety
    /// As for [`_start`], with `h` non-null.
    unsafe fn dispatch(h: *mut CmdHeader) -> (i64, u64) {
        // SAFETY: `h` points to a readable header (caller's contract).
        let (magic, cmd, count) = unsafe {
            (
                read_volatile(addr_of!((*h).magic)),
                read_volatile(addr_of!((*h).cmd)),
                read_volatile(addr_of!((*h).count)),
            )
        };
        if magic != CMD_MAGIC {
            return (STATUS_BAD_COMMAND, 0);
        }
        match cmd {
            // SAFETY: the header is valid (caller's contract); the callees bound
            // `count` so every record they touch lies inside the command area.
            CMD_SYSCALLS => unsafe { run_syscalls(h, count) },
            // SAFETY: as above.
            CMD_VMSPLICE => unsafe { run_vmsplice(h, count) },
            // SAFETY: as above.
            CMD_ZERO_PAGES => unsafe { run_zero_pages(h, count) },
            _ => (STATUS_BAD_COMMAND, 0),
        }
    }

    /// CMD_SYSCALLS: run `count` [`SyscallEntry`] records in order.
    ///
    /// # Safety
    /// `h` heads a writable command area of `CMD_AREA_SIZE` bytes, and the
    /// syscalls it describes are ones the tracer wants this thread to make.
    unsafe fn run_syscalls(h: *mut CmdHeader, count: u64) -> (i64, u64) {
        if count > MAX_SYSCALLS as u64 {
            return (-EINVAL, 0);
        }
        let n = count as usize;
        // SAFETY: the records follow the header; `n <= MAX_SYSCALLS` keeps
        // `recs.add(i)` for every `i < n` inside the command area.
        let recs = unsafe { h.add(1).cast::<SyscallEntry>() };
        let mut i = 0usize;
        while i < n {
            // SAFETY: `i < n <= MAX_SYSCALLS`: the record is inside the area.
            let e = unsafe { recs.add(i) };
            // SAFETY: `e` is a valid, aligned record (the area is page-aligned
            // and the records are `repr(C)` right after the 8-aligned header).
            let (nr, from, flags) = unsafe {
                (
                    read_volatile(addr_of!((*e).nr)),
                    read_volatile(addr_of!((*e).from_result)),
                    read_volatile(addr_of!((*e).flags)),
                )
            };
            // SAFETY: `args` is a `[u64; 6]` inside the valid record `e`.
            let args = unsafe { addr_of!((*e).args).cast::<u64>() };
            let mut a = [0usize; 6];
            let mut j = 0usize;
            while j < 6 {
                // SAFETY: `j < 6`: inside `args`.
                let v = unsafe { read_volatile(args.add(j)) };
                a[j] = if (from >> j) & 1 != 0 {
                    if v >= i as u64 {
                        return (-EINVAL, i as u64);
                    }
                    // SAFETY: `v < i < n`: an earlier record of this batch.
                    (unsafe { read_volatile(addr_of!((*recs.add(v as usize)).result)) }) as usize
                } else {
                    // Narrowing on 32-bit ARM is intended: pointers and ints
                    // travel as u64 in the ABI.
                    v as usize
                };
                j += 1;
            }
            // SAFETY: running the requested syscall is the command's purpose;
            // the tracer vouches for its arguments (function contract).
            let ret = widen_return(unsafe { sys::syscall6(nr as usize, a) });
            // SAFETY: `e` and `h` are valid and writable (see above).
            unsafe {
                write_volatile(addr_of_mut!((*e).result), ret);
                write_volatile(addr_of_mut!((*h).done), (i + 1) as u64);
            }
            i += 1;
            if is_error(ret) && flags & SYSCALL_IGNORE_ERROR == 0 {
                return (ret, i as u64);
            }
        }
        (0, n as u64)
    }

    /// CMD_VMSPLICE: vmsplice the `count` [`IoVec`] records into pipe `arg0`,
    /// in chunks of at most [`CHUNK`] iovecs, resuming inside an iovec after a
    /// partial write. Returns (status, bytes moved).
    ///
    /// # Safety
    /// `h` heads a command area of `CMD_AREA_SIZE` bytes; the iovecs describe
    /// memory of this process the tracer wants spliced.
    unsafe fn run_vmsplice(h: *mut CmdHeader, count: u64) -> (i64, u64) {
        if count > MAX_IOVECS as u64 {
            return (-EINVAL, 0);
        }
        let n = count as usize;
        // SAFETY: `h` points to a readable header.
        let (first, second) = unsafe { (read_volatile(addr_of!((*h).arg0)), read_volatile(addr_of!((*h).arg1))) };
        let two = second & VMSPLICE_TWO != 0;
        let fds = [first as usize, (second & 0xffff_ffff) as usize];
        let mut which = 0usize;
        // Bytes still to go into pipe `which` before the other's turn.
        let mut slice_left = if two { PIPE_SLICE } else { u64::MAX };
        // SAFETY: the records follow the header; `n <= MAX_IOVECS` keeps every
        // `recs.add(r)`, `r < n`, inside the command area.
        let recs = unsafe { h.add(1).cast::<IoVec>() };

        let mut local = [const { MaybeUninit::<KIovec>::uninit() }; CHUNK];
        let mut idx = 0usize; // first record not completely moved
        let mut off = 0u64; // bytes of record `idx` already moved (< its len)
        let mut total = 0u64;
        while idx < n {
            // Gather up to CHUNK iovecs starting at (idx, off).
            let mut k = 0usize;
            let mut r = idx;
            let mut want = 0u64;
            while k < CHUNK && r < n {
                // SAFETY: `r < n`: a record inside the command area.
                let (base, len) = unsafe { read_iov(recs.add(r)) };
                let skip = if r == idx { off } else { 0 };
                let take = len.wrapping_sub(skip).min(MAX_SEG).min(slice_left - want);
                local[k].write(KIovec {
                    base: base.wrapping_add(skip) as usize,
                    len: take as usize,
                });
                want += take;
                k += 1;
                r += 1;
                if take < len.wrapping_sub(skip) || want == slice_left {
                    // Truncated segment: the kernel cannot move past it in
                    // this call, and the advance below assumes it does not.
                    break;
                }
            }

            if two {
                // Sleep until the pipe has room: vmsplice would first wait for
                // the pipe's lock, held (spinning) while cryo empties the pipe.
                let mut pfd = PollFd { fd: fds[which] as i32, events: POLLOUT, revents: 0 };
                // SAFETY: one pollfd that lives across the call, no timeout, no
                // signal mask; a failure only leaves the wait to vmsplice.
                unsafe { sys::syscall6(sys::SYS_PPOLL, [addr_of_mut!(pfd) as usize, 1, 0, 0, 8, 0]) };
            }
            let ret = loop {
                // SAFETY: `local[..k]` is initialised and lives across the call;
                // the iovecs name memory the tracer asked to splice (contract).
                let ret = unsafe {
                    sys::syscall6(sys::SYS_VMSPLICE, [fds[which], local.as_ptr() as usize, k, 0, 0, 0])
                } as i64;
                if ret != -EINTR {
                    break ret;
                }
            };
            if is_error(ret) {
                return (ret, total);
            }
            if ret == 0 && want != 0 {
                // No progress on a non-empty request: do not spin.
                return (-EIO, total);
            }
            total += ret as u64;
            slice_left -= ret as u64;
            if slice_left == 0 {
                which ^= 1;
                slice_left = PIPE_SLICE;
            }

            // Advance past what was moved (zero-length records included).
            let mut moved = ret as u64;
            while idx < n {
                // SAFETY: `idx < n`: a record inside the command area.
                let left = unsafe { read_iov(recs.add(idx)) }.1.wrapping_sub(off);
                if moved < left {
                    off += moved;
                    break;
                }
                moved -= left;
                idx += 1;
                off = 0;
            }
        }
        (0, total)
    }

    /// CMD_ZERO_PAGES: a bitmap of the pages that hold only zeros. A page
    /// with data is mostly told by its first word; only zero pages are read
    /// whole. Returns (status, zero pages).
    ///
    /// # Safety
    /// `h` heads a command area of `CMD_AREA_SIZE` bytes; the iovecs describe
    /// readable, page-aligned memory of this process, present in it.
    unsafe fn run_zero_pages(h: *mut CmdHeader, count: u64) -> (i64, u64) {
        // SAFETY: `h` points to a readable header.
        let ps = unsafe { read_volatile(addr_of!((*h).arg0)) } as usize;
        if count > MAX_IOVECS as u64 || ps == 0 || ps % 8 != 0 {
            return (-EINVAL, 0);
        }
        let n = count as usize;
        // SAFETY: the records follow the header; `n <= MAX_IOVECS`.
        let recs = unsafe { h.add(1).cast::<IoVec>() };
        // SAFETY: the bitmap follows the records, inside the command area as
        // long as the tracer sized the command to fit (it checks, and the
        // blob bounds every write below by the area's end).
        let bitmap = unsafe { recs.add(n).cast::<u8>() };
        let area_end = h as usize + CMD_AREA_SIZE;
        let mut page = 0usize;
        let mut zero = 0u64;
        let mut r = 0usize;
        while r < n {
            // SAFETY: `r < n`: a record inside the command area.
            let (base, len) = unsafe { read_iov(recs.add(r)) };
            let mut at = 0u64;
            while at < len {
                let p = (base + at) as usize as *const u64;
                let mut w = 0usize;
                // SAFETY: the page lies in memory the tracer named (contract).
                while w < ps / 8 && unsafe { read_volatile(p.add(w)) } == 0 {
                    w += 1;
                }
                let byte = bitmap as usize + page / 8;
                if byte >= area_end {
                    return (-EINVAL, zero);
                }
                // SAFETY: `byte` is inside the command area (checked above).
                unsafe {
                    let b = byte as *mut u8;
                    let old = if page % 8 == 0 { 0 } else { read_volatile(b) };
                    let bit = if w == ps / 8 { 1u8 << (page % 8) } else { 0 };
                    write_volatile(b, old | bit);
                }
                if w == ps / 8 {
                    zero += 1;
                }
                page += 1;
                at += ps as u64;
            }
            r += 1;
        }
        (0, zero)
    }

    /// (base, len) of an [`IoVec`] record.
    ///
    /// # Safety
    /// `p` points to a readable, aligned `IoVec`.
    unsafe fn read_iov(p: *const IoVec) -> (u64, u64) {
        // SAFETY: `p` is valid for reads (function contract).
        unsafe {
            (
                read_volatile(addr_of!((*p).base)),
                read_volatile(addr_of!((*p).len)),
            )
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        sys::trap()
    }
}
