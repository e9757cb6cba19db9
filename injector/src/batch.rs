//! A list of syscalls the parasite runs in one go (CMD_SYSCALLS), with a data
//! area for their in/out buffers.

use cryo_parasite::abi::{self, SyscallEntry};
use cryo_tracer::arch::{nr, Sysno};

/// One syscall argument.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Val(u64),
    /// Address of a byte offset into the batch's data area.
    Data(usize),
    /// The result of an earlier call of the same batch (e.g. an fd).
    Result(usize),
}

impl From<u64> for Arg {
    fn from(v: u64) -> Arg {
        Arg::Val(v)
    }
}

#[derive(Default)]
pub struct Batch {
    pub(crate) calls: Vec<(Sysno, [Arg; 6], u32)>,
    pub(crate) data: Vec<u8>,
    /// (at, target, word size): the data area holds at `at` the address of `target`.
    pointers: Vec<(usize, usize, usize)>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Bytes of the data area so far.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Copy bytes into the data area (8-byte aligned); returns their offset.
    pub fn data(&mut self, bytes: &[u8]) -> usize {
        let off = self.data.len().next_multiple_of(8);
        self.data.resize(off, 0);
        self.data.extend_from_slice(bytes);
        off
    }

    /// Reserve zeroed room for an output buffer; returns its offset.
    pub fn reserve(&mut self, len: usize) -> usize {
        self.data(&vec![0u8; len])
    }

    /// Make the word at data offset `at` point to data offset `target` (for
    /// structures holding pointers, such as prctl_mm_map's auxv).
    pub fn data_pointer(&mut self, at: usize, target: usize, word: usize) {
        self.pointers.push((at, target, word));
    }

    /// The data area as it must be in the target at `data_addr`.
    pub(crate) fn data_at(&self, data_addr: u64) -> Vec<u8> {
        let mut d = self.data.clone();
        for &(at, target, word) in &self.pointers {
            let v = (data_addr + target as u64).to_le_bytes();
            d[at..at + word].copy_from_slice(&v[..word]);
        }
        d
    }

    /// A NUL-terminated string in the data area.
    pub fn cstr(&mut self, s: &str) -> usize {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.data(&b)
    }

    /// Add a call; a failure stops the batch. Returns its index (for `Arg::Result`).
    pub fn call(&mut self, call: Sysno, args: &[Arg]) -> usize {
        self.push(call, args, 0)
    }

    /// Add a call whose failure is only recorded.
    pub fn call_may_fail(&mut self, call: Sysno, args: &[Arg]) -> usize {
        self.push(call, args, abi::SYSCALL_IGNORE_ERROR)
    }

    fn push(&mut self, call: Sysno, args: &[Arg], flags: u32) -> usize {
        let mut a = [Arg::Val(0); 6];
        a[..args.len()].copy_from_slice(args);
        self.calls.push((call, a, flags));
        self.calls.len() - 1
    }

    /// Encode entries for a command area whose data area starts at `data_addr`.
    pub(crate) fn entries(&self, data_addr: u64) -> Vec<SyscallEntry> {
        self.calls
            .iter()
            .map(|(call, args, flags)| {
                let mut e = SyscallEntry { nr: nr(*call), flags: *flags, ..Default::default() };
                for (i, a) in args.iter().enumerate() {
                    e.args[i] = match *a {
                        Arg::Val(v) => v,
                        Arg::Data(off) => data_addr + off as u64,
                        Arg::Result(idx) => {
                            e.from_result |= 1 << i;
                            idx as u64
                        }
                    };
                }
                e
            })
            .collect()
    }
}

/// What a batch left behind: each call's raw result and the data area.
pub struct BatchOutput {
    pub results: Vec<i64>,
    pub data: Vec<u8>,
}

impl BatchOutput {
    pub fn bytes(&self, off: usize, len: usize) -> &[u8] {
        &self.data[off..off + len]
    }
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.data[off..off + 8].try_into().unwrap())
    }
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.data[off..off + 4].try_into().unwrap())
    }
    /// A pointer-sized word (4 bytes on 32-bit targets).
    pub fn word_at(&self, off: usize, is_64bit: bool) -> u64 {
        if is_64bit {
            self.u64_at(off)
        } else {
            self.u32_at(off) as u64
        }
    }
}
