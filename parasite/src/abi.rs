//! Layout of the shared command area. Every field is a fixed-width integer so
//! that a 64-bit tracer can drive a 32-bit (ARMv7) blob: pointers travel as
//! `u64` and the blob narrows them.

/// `CmdHeader::magic`: the tracer sets it, the blob checks it before acting.
pub const CMD_MAGIC: u32 = 0x4352_594f; // "CRYO"

/// Run `CmdHeader::count` [`SyscallEntry`] records that follow the header, in order.
pub const CMD_SYSCALLS: u32 = 1;
/// vmsplice `CmdHeader::count` [`IoVec`] records that follow the header into the
/// pipe whose fd is `CmdHeader::arg0`, looping over partial writes. With
/// [`VMSPLICE_TWO`] set in `arg1`, its low 32 bits are a second pipe: the
/// bytes go in slices of [`PIPE_SLICE`], the first into `arg0`'s pipe, the next
/// into the second, and so on, so that one pipe fills while the tracer
/// empties the other (a pipe is locked while it is emptied).
pub const CMD_VMSPLICE: u32 = 2;
/// `CmdHeader::arg1` of [`CMD_VMSPLICE`]: there is a second pipe.
pub const VMSPLICE_TWO: u64 = 1 << 63;
/// Bytes that go into one pipe before the other's turn (with [`VMSPLICE_TWO`]).
pub const PIPE_SLICE: u64 = 1 << 20;

/// Look at the pages of the `CmdHeader::count` [`IoVec`] records that follow
/// the header (page size `arg0`) and set bit i of the bitmap that follows the
/// records when page i (counted across the records) holds only zero bytes.
/// `done`: the number of zero pages.
pub const CMD_ZERO_PAGES: u32 = 3;

/// `SyscallEntry::flags`: a failing syscall does not stop the batch.
pub const SYSCALL_IGNORE_ERROR: u32 = 1;

/// Status the blob leaves when the header's magic or command is unknown.
pub const STATUS_BAD_COMMAND: i64 = -22; // -EINVAL

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CmdHeader {
    pub magic: u32,
    pub cmd: u32,
    /// Number of records after the header.
    pub count: u64,
    pub arg0: u64,
    pub arg1: u64,
    /// Written by the blob: 0 on success, a negative errno on failure.
    pub status: i64,
    /// Written by the blob: records completed (CMD_SYSCALLS) or bytes moved (CMD_VMSPLICE).
    pub done: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallEntry {
    pub nr: u64,
    pub args: [u64; 6],
    /// Bit i set: argument i is replaced by the result of entry number `args[i]`
    /// of this batch (which must come earlier), e.g. an fd returned by `open`.
    pub from_result: u32,
    pub flags: u32,
    /// Written by the blob: the raw return value (negative errno on failure).
    pub result: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IoVec {
    pub base: u64,
    pub len: u64,
}

/// Bytes of the command area, right after the loaded blob (page-aligned).
pub const CMD_AREA_SIZE: usize = 256 * 1024;
/// Bytes of the stack the blob runs on, after the command area.
pub const STACK_SIZE: usize = 64 * 1024;
/// Bytes reserved for the syscall gadget (tracer-written), after the stack.
pub const GADGET_AREA_SIZE: usize = 4096;

/// Largest number of [`SyscallEntry`] records that fit in one command.
pub const MAX_SYSCALLS: usize =
    (CMD_AREA_SIZE - core::mem::size_of::<CmdHeader>()) / core::mem::size_of::<SyscallEntry>();
/// Largest number of [`IoVec`] records that fit in one command.
pub const MAX_IOVECS: usize =
    (CMD_AREA_SIZE - core::mem::size_of::<CmdHeader>()) / core::mem::size_of::<IoVec>();

/// Is a raw syscall return value an error (-4095..=-1)?
pub const fn is_error(ret: i64) -> bool {
    ret < 0 && ret >= -4095
}

/// A syscall's return register as the ABI's i64: an error (-4095..=-1) keeps
/// its sign, anything else is unsigned. On a 32-bit CPU an address at or above
/// 2 GiB (an mmap in a compat task, up to 4 GiB) must not turn negative.
pub const fn widen_return(raw: isize) -> i64 {
    if raw < 0 && raw >= -4095 {
        raw as i64
    } else {
        raw as usize as u64 as i64
    }
}
