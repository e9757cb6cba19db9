//! The one place that picks the architecture cryo was built for; every other
//! crate names `cryo_tracer::arch::Native`.

#[cfg(target_arch = "x86_64")]
pub use cryo_arch_x86_64::X86_64 as Native;

#[cfg(target_arch = "aarch64")]
pub use cryo_arch_aarch64::Aarch64 as Native;

#[cfg(target_arch = "arm")]
pub use cryo_arch_armv7::Armv7 as Native;

pub use cryo_arch::{flock64, Arch, Sysno};

/// Syscall number on the native architecture. Every call cryo issues exists on
/// all three CPUs except where noted in `Sysno`; a missing one is a cryo bug.
pub fn nr(call: Sysno) -> u64 {
    Native::sysno(call).unwrap_or_else(|| panic!("{call:?} has no syscall number on {}", Native::NAME))
}

/// Bytes of a pointer-sized word in a target (4 on 32-bit ARM).
pub fn word() -> usize {
    if Native::IS_64BIT {
        8
    } else {
        4
    }
}

/// Append a pointer-sized little-endian word, as kernel structures hold them.
pub fn push_word(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes()[..word()]);
}

/// This machine's page size (4 KiB on x86; 4, 16 or 64 KiB on ARM kernels).
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64
}
