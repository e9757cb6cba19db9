//! The parasite blob embedded in the injector, and the loader that turns its
//! static-pie ELF into a flat image to copy into a target.
//!
//! In the target the blob occupies one region:
//! `[image][CMD_AREA_SIZE][STACK_SIZE][GADGET_AREA_SIZE]` (see
//! `cryo_parasite::abi`), with the image relocated for the region's base.

use cryo_parasite::abi::{CMD_AREA_SIZE, GADGET_AREA_SIZE, STACK_SIZE};
use goblin::elf::dynamic::DT_NULL;
use goblin::elf::header::ET_DYN;
use goblin::elf::program_header::{PT_INTERP, PT_LOAD, PT_TLS};
use goblin::elf::reloc::r_to_str;
use goblin::elf::section_header::SHF_ALLOC;
use goblin::elf::{Elf, RelocSection};

/// The parasite ELF built by `build.rs` for this crate's target CPU.
pub static PARASITE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/parasite.elf"));

/// Granularity of the image (and of the region the injector maps).
pub const PAGE_SIZE: u64 = 4096;

/// Largest image accepted (the blob is a few KiB; this only bounds garbage).
const MAX_IMAGE: u64 = 64 << 20;

// DT_RELR packed relative relocations (not in goblin 0.9's constants).
const DT_RELRSZ: u64 = 35;
const DT_RELR: u64 = 36;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("malformed parasite ELF: {0}")]
    Elf(#[from] goblin::error::Error),
    #[error("parasite ELF is not position independent (e_type {0}, expected ET_DYN)")]
    NotPie(u16),
    #[error("parasite ELF is big-endian; only little-endian targets are supported")]
    BigEndian,
    #[error("parasite ELF has no PT_LOAD segment")]
    NoLoad,
    #[error("parasite ELF has a {0} segment; the blob must be a self-contained static-pie")]
    UnsupportedSegment(&'static str),
    #[error("parasite ELF segment {index} is malformed (outside the file, or p_filesz > p_memsz)")]
    BadSegment { index: usize },
    #[error("parasite image is too large ({0:#x} bytes)")]
    TooLarge(u64),
    #[error("parasite ELF entry point {0:#x} lies outside its PT_LOAD segments")]
    EntryOutOfImage(u64),
    #[error(
        "unsupported relocation R_{name} (type {r_type}) at {offset:#x} in the parasite ELF: \
         only RELATIVE relocations can be applied"
    )]
    UnsupportedReloc {
        name: &'static str,
        r_type: u32,
        offset: u64,
    },
    #[error("relocation at {offset:#x} in the parasite ELF lies outside the loaded image")]
    RelocOutOfImage { offset: u64 },
}

/// A parsed blob: its flat image and what it takes to place it at any base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobLayout {
    /// All PT_LOAD segments copied at `p_vaddr - min_vaddr` (min_vaddr rounded
    /// down to a page), bss zero-filled, length a multiple of [`PAGE_SIZE`].
    pub image: Vec<u8>,
    /// Entry point, relative to the start of the image.
    pub entry_offset: u64,
    /// Base-relative fixups: (offset in the image, addend relative to the image
    /// start); [`relocated`](Self::relocated) stores `base + addend` there.
    pub relocs: Vec<(u64, u64)>,
    /// ELF64 (u64 fixups) or ELF32 (u32 fixups).
    pub is_64bit: bool,
}

impl BlobLayout {
    /// The embedded parasite, for the relocation type of this CPU's RELATIVE
    /// fixups (`Arch::RELATIVE_RELOC`).
    pub fn parasite(relative_reloc_type: u32) -> Result<Self, BlobError> {
        Self::parse(PARASITE_ELF, relative_reloc_type)
    }

    /// Lay out a static-pie ELF. Every dynamic relocation must be of type
    /// `relative_reloc_type` (REL, RELA and RELR tables are accepted).
    pub fn parse(elf: &[u8], relative_reloc_type: u32) -> Result<Self, BlobError> {
        let e = Elf::parse(elf)?;
        if e.header.e_type != ET_DYN {
            return Err(BlobError::NotPie(e.header.e_type));
        }
        if !e.little_endian {
            return Err(BlobError::BigEndian);
        }
        let is_64bit = e.is_64;
        let word: u64 = if is_64bit { 8 } else { 4 };

        for ph in &e.program_headers {
            match ph.p_type {
                PT_INTERP => return Err(BlobError::UnsupportedSegment("PT_INTERP")),
                PT_TLS => return Err(BlobError::UnsupportedSegment("PT_TLS")),
                _ => {}
            }
        }
        let loads: Vec<_> = e
            .program_headers
            .iter()
            .filter(|ph| ph.p_type == PT_LOAD)
            .collect();
        let min_vaddr = loads
            .iter()
            .map(|ph| ph.p_vaddr)
            .min()
            .ok_or(BlobError::NoLoad)?
            & !(PAGE_SIZE - 1);
        let mut end = min_vaddr;
        for (index, ph) in e
            .program_headers
            .iter()
            .enumerate()
            .filter(|(_, ph)| ph.p_type == PT_LOAD)
        {
            let seg_end = ph
                .p_vaddr
                .checked_add(ph.p_memsz)
                .ok_or(BlobError::BadSegment { index })?;
            end = end.max(seg_end);
        }
        let len = (end - min_vaddr)
            .checked_add(PAGE_SIZE - 1)
            .map(|l| l & !(PAGE_SIZE - 1))
            .filter(|&l| l <= MAX_IMAGE)
            .ok_or(BlobError::TooLarge(end - min_vaddr))?;
        let mut image = vec![0u8; len as usize];
        for (index, ph) in e
            .program_headers
            .iter()
            .enumerate()
            .filter(|(_, ph)| ph.p_type == PT_LOAD)
        {
            let bad = || BlobError::BadSegment { index };
            if ph.p_filesz > ph.p_memsz {
                return Err(bad());
            }
            let src = usize::try_from(ph.p_offset)
                .ok()
                .and_then(|o| elf.get(o..o.checked_add(ph.p_filesz as usize)?))
                .ok_or_else(bad)?;
            let dst = (ph.p_vaddr - min_vaddr) as usize;
            image[dst..dst + src.len()].copy_from_slice(src);
        }

        if e.entry < min_vaddr || e.entry >= end {
            return Err(BlobError::EntryOutOfImage(e.entry));
        }

        let mut layout = BlobLayout {
            image,
            entry_offset: e.entry - min_vaddr,
            relocs: Vec::new(),
            is_64bit,
        };
        let machine = e.header.e_machine;
        let add = |layout: &mut BlobLayout, vaddr: u64, r_type: u32, addend: Option<i64>| {
            if r_type != relative_reloc_type {
                return Err(BlobError::UnsupportedReloc {
                    name: r_to_str(r_type, machine),
                    r_type,
                    offset: vaddr,
                });
            }
            let off = vaddr
                .checked_sub(min_vaddr)
                .filter(|o| o.checked_add(word).is_some_and(|end| end <= len))
                .ok_or(BlobError::RelocOutOfImage { offset: vaddr })?;
            // REL/RELR: the addend is the word already at the location.
            let addend = addend
                .map(|a| a as u64)
                .unwrap_or_else(|| layout.word_at(off));
            layout.relocs.push((off, addend.wrapping_sub(min_vaddr)));
            Ok(())
        };

        if let Some(dynamic) = &e.dynamic {
            for r in e
                .dynrelas
                .iter()
                .chain(e.dynrels.iter())
                .chain(e.pltrelocs.iter())
            {
                add(&mut layout, r.r_offset, r.r_type, r.r_addend)?;
            }
            let tag = |t: u64| {
                dynamic
                    .dyns
                    .iter()
                    .take_while(|d| d.d_tag != DT_NULL)
                    .find(|d| d.d_tag == t)
            };
            if let (Some(relr), Some(relrsz)) = (tag(DT_RELR), tag(DT_RELRSZ)) {
                let table = relr.d_val;
                let out = BlobError::RelocOutOfImage { offset: table };
                let start = table.checked_sub(min_vaddr).ok_or(out)?;
                if start.checked_add(relrsz.d_val).is_none_or(|end| end > len) {
                    return Err(BlobError::RelocOutOfImage { offset: table });
                }
                let mut next = 0u64;
                for i in 0..relrsz.d_val / word {
                    let entry = layout.word_at(start + i * word);
                    if entry & 1 == 0 {
                        add(&mut layout, entry, relative_reloc_type, None)?;
                        next = entry.wrapping_add(word);
                    } else {
                        let mut bits = entry >> 1;
                        let mut at = next;
                        while bits != 0 {
                            if bits & 1 != 0 {
                                add(&mut layout, at, relative_reloc_type, None)?;
                            }
                            bits >>= 1;
                            at = at.wrapping_add(word);
                        }
                        next = next.wrapping_add((word * 8 - 1) * word);
                    }
                }
            }
        } else {
            // No PT_DYNAMIC: take the relocation sections that are loaded
            // (.rela.dyn / .rel.dyn), not link-time ones kept by --emit-relocs.
            let loaded = |idx: usize| {
                e.section_headers
                    .get(idx)
                    .is_some_and(|sh| sh.sh_flags & u64::from(SHF_ALLOC) != 0)
            };
            let sections: Vec<&RelocSection> = e
                .shdr_relocs
                .iter()
                .filter(|(idx, _)| loaded(*idx))
                .map(|(_, s)| s)
                .collect();
            for r in sections.into_iter().flat_map(|s| s.iter()) {
                add(&mut layout, r.r_offset, r.r_type, r.r_addend)?;
            }
        }
        Ok(layout)
    }

    /// The image with every fixup applied for a load at `base`.
    pub fn relocated(&self, base: u64) -> Vec<u8> {
        let mut img = self.image.clone();
        for &(off, addend) in &self.relocs {
            let v = base.wrapping_add(addend);
            let o = off as usize;
            if self.is_64bit {
                img[o..o + 8].copy_from_slice(&v.to_le_bytes());
            } else {
                img[o..o + 4].copy_from_slice(&(v as u32).to_le_bytes());
            }
        }
        img
    }

    /// Offset of the command area from the region's base.
    pub fn cmd_offset(&self) -> u64 {
        self.image.len() as u64
    }

    /// Offset of the (exclusive) top of the blob's stack from the region's base.
    pub fn stack_top_offset(&self) -> u64 {
        self.cmd_offset() + (CMD_AREA_SIZE + STACK_SIZE) as u64
    }

    /// Offset of the syscall-gadget area from the region's base.
    pub fn gadget_offset(&self) -> u64 {
        self.stack_top_offset()
    }

    /// Bytes of the whole region: image, command area, stack, gadget area.
    pub fn region_size(&self) -> u64 {
        self.gadget_offset() + GADGET_AREA_SIZE as u64
    }

    /// The little-endian word (u64 or u32 by class) at `off` of the image.
    fn word_at(&self, off: u64) -> u64 {
        let o = off as usize;
        if self.is_64bit {
            u64::from_le_bytes(self.image[o..o + 8].try_into().expect("8 bytes"))
        } else {
            u64::from(u32::from_le_bytes(
                self.image[o..o + 4].try_into().expect("4 bytes"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use goblin::elf::header::{EM_ARM, EM_X86_64};
    use goblin::elf::reloc::{R_ARM_ABS32, R_ARM_RELATIVE, R_X86_64_64, R_X86_64_RELATIVE};

    /// Relocation type of this host's RELATIVE fixups, for the real blob.
    fn host_relative() -> u32 {
        match std::env::consts::ARCH {
            "x86_64" => R_X86_64_RELATIVE,
            "aarch64" => goblin::elf::reloc::R_AARCH64_RELATIVE,
            "arm" => R_ARM_RELATIVE,
            other => panic!("no parasite for {other}"),
        }
    }

    #[test]
    fn blob_parses_embedded_parasite() {
        let l = BlobLayout::parasite(host_relative()).expect("embedded parasite parses");
        assert_eq!(l.image.len() as u64 % PAGE_SIZE, 0);
        assert!(!l.image.is_empty());
        assert!(l.entry_offset < l.image.len() as u64);
        assert_eq!(l.is_64bit, cfg!(target_pointer_width = "64"));
        // The entry is code, not zero fill.
        assert_ne!(&l.image[l.entry_offset as usize..][..4], &[0, 0, 0, 0]);
        assert_eq!(l.cmd_offset() % PAGE_SIZE, 0);
        assert_eq!(
            l.region_size(),
            l.image.len() as u64 + (CMD_AREA_SIZE + STACK_SIZE + GADGET_AREA_SIZE) as u64
        );
        // Relocating at 0 changes nothing but the fixups; any base is fine.
        let base = 0x7f12_3456_0000;
        let img = l.relocated(base);
        assert_eq!(img.len(), l.image.len());
        for &(off, addend) in &l.relocs {
            let o = off as usize;
            if l.is_64bit {
                assert_eq!(
                    u64::from_le_bytes(img[o..o + 8].try_into().unwrap()),
                    base + addend
                );
            }
        }
    }

    #[test]
    fn blob_rejects_non_elf() {
        assert!(matches!(
            BlobLayout::parse(b"not an elf at all, really", 8),
            Err(BlobError::Elf(_))
        ));
    }

    /// A minimal ET_DYN ELF: one PT_LOAD (file 0..0x300, memsz 0x1800) and a
    /// PT_DYNAMIC at 0x100 pointing at a REL or RELA table at 0x140. Words at
    /// 0x200.. hold 0x1000 + i * 0x10 (REL implicit addends).
    fn synth_elf(is_64: bool, rela: bool, relocs: &[(u64, u32, i64)]) -> Vec<u8> {
        let mut f = vec![0u8; 0x300];
        let w = if is_64 { 8 } else { 4 };
        let put = |f: &mut Vec<u8>, off: usize, v: u64, n: usize| {
            f[off..off + n].copy_from_slice(&v.to_le_bytes()[..n])
        };
        // e_ident
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = if is_64 { 2 } else { 1 };
        f[5] = 1; // little-endian
        f[6] = 1; // EV_CURRENT
        let (ehsize, phentsize) = if is_64 { (64, 56) } else { (52, 32) };
        put(&mut f, 16, u64::from(ET_DYN), 2);
        put(
            &mut f,
            18,
            u64::from(if is_64 { EM_X86_64 } else { EM_ARM }),
            2,
        );
        put(&mut f, 20, 1, 4);
        // e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum
        let mut o = 24;
        put(&mut f, o, 0x180, w);
        o += w;
        put(&mut f, o, ehsize as u64, w);
        o += w;
        put(&mut f, o, 0, w);
        o += w;
        put(&mut f, o, 0, 4);
        o += 4;
        put(&mut f, o, ehsize as u64, 2);
        put(&mut f, o + 2, phentsize as u64, 2);
        put(&mut f, o + 4, 2, 2);
        put(&mut f, o + 6, if is_64 { 64 } else { 40 }, 2);
        // Program headers.
        let ph = |f: &mut Vec<u8>,
                  at: usize,
                  p_type: u32,
                  off: u64,
                  filesz: u64,
                  memsz: u64,
                  flags: u32| {
            if is_64 {
                put(f, at, u64::from(p_type), 4);
                put(f, at + 4, u64::from(flags), 4);
                put(f, at + 8, off, 8);
                put(f, at + 16, off, 8);
                put(f, at + 24, off, 8);
                put(f, at + 32, filesz, 8);
                put(f, at + 40, memsz, 8);
                put(f, at + 48, 0x1000, 8);
            } else {
                put(f, at, u64::from(p_type), 4);
                put(f, at + 4, off, 4);
                put(f, at + 8, off, 4);
                put(f, at + 12, off, 4);
                put(f, at + 16, filesz, 4);
                put(f, at + 20, memsz, 4);
                put(f, at + 24, u64::from(flags), 4);
                put(f, at + 28, 0x1000, 4);
            }
        };
        ph(&mut f, ehsize, PT_LOAD, 0, 0x300, 0x1800, 7);
        let dyn_size = 4 * 2 * w as u64;
        ph(
            &mut f,
            ehsize + phentsize,
            goblin::elf::program_header::PT_DYNAMIC,
            0x100,
            dyn_size,
            dyn_size,
            6,
        );
        // Dynamic section.
        let ent = if rela { 3 * w } else { 2 * w };
        let (t_tab, t_sz, t_ent) = if rela { (7, 8, 9) } else { (17, 18, 19) };
        let dyns = [
            (t_tab, 0x140),
            (t_sz, (relocs.len() * ent) as u64),
            (t_ent, ent as u64),
            (0, 0),
        ];
        for (i, (tag, val)) in dyns.iter().enumerate() {
            put(&mut f, 0x100 + i * 2 * w, *tag, w);
            put(&mut f, 0x100 + i * 2 * w + w, *val, w);
        }
        // Relocation table.
        for (i, &(off, ty, addend)) in relocs.iter().enumerate() {
            let at = 0x140 + i * ent;
            put(&mut f, at, off, w);
            let info = if is_64 {
                u64::from(ty)
            } else {
                u64::from(ty & 0xff)
            };
            put(&mut f, at + w, info, w);
            if rela {
                put(&mut f, at + 2 * w, addend as u64, w);
            }
        }
        for i in 0..8 {
            put(&mut f, 0x200 + i * w, 0x1000 + (i as u64) * 0x10, w);
        }
        f
    }

    #[test]
    fn blob_rela64_applies_relative() {
        let elf = synth_elf(
            true,
            true,
            &[
                (0x200, R_X86_64_RELATIVE, 0x1234),
                (0x1008, R_X86_64_RELATIVE, 0x40),
            ],
        );
        let l = BlobLayout::parse(&elf, R_X86_64_RELATIVE).unwrap();
        assert!(l.is_64bit);
        assert_eq!(l.image.len(), 0x2000);
        assert_eq!(l.entry_offset, 0x180);
        assert_eq!(l.relocs, vec![(0x200, 0x1234), (0x1008, 0x40)]);
        let img = l.relocated(0x5555_0000_0000);
        assert_eq!(
            u64::from_le_bytes(img[0x200..0x208].try_into().unwrap()),
            0x5555_0000_1234
        );
        assert_eq!(
            u64::from_le_bytes(img[0x1008..0x1010].try_into().unwrap()),
            0x5555_0000_0040
        );
        // Untouched bytes stay as loaded; bss is zero.
        assert_eq!(img[0x208..0x210], l.image[0x208..0x210]);
        assert!(img[0x300..0x1000].iter().all(|&b| b == 0));
    }

    #[test]
    fn blob_rel32_uses_implicit_addend() {
        let elf = synth_elf(
            false,
            false,
            &[(0x204, R_ARM_RELATIVE, 0), (0x208, R_ARM_RELATIVE, 0)],
        );
        let l = BlobLayout::parse(&elf, R_ARM_RELATIVE).unwrap();
        assert!(!l.is_64bit);
        assert_eq!(l.relocs, vec![(0x204, 0x1010), (0x208, 0x1020)]);
        let img = l.relocated(0x4000_0000);
        assert_eq!(
            u32::from_le_bytes(img[0x204..0x208].try_into().unwrap()),
            0x4000_1010
        );
        assert_eq!(
            u32::from_le_bytes(img[0x208..0x20c].try_into().unwrap()),
            0x4000_1020
        );
        assert_eq!(
            u32::from_le_bytes(img[0x200..0x204].try_into().unwrap()),
            0x1000
        );
    }

    #[test]
    fn blob_rejects_other_relocs() {
        let elf = synth_elf(
            true,
            true,
            &[(0x200, R_X86_64_RELATIVE, 1), (0x208, R_X86_64_64, 0)],
        );
        let err = BlobLayout::parse(&elf, R_X86_64_RELATIVE).unwrap_err();
        assert!(
            matches!(
                err,
                BlobError::UnsupportedReloc {
                    r_type: R_X86_64_64,
                    offset: 0x208,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("X86_64_64"), "{err}");
        let elf = synth_elf(false, false, &[(0x200, R_ARM_ABS32, 0)]);
        let err = BlobLayout::parse(&elf, R_ARM_RELATIVE).unwrap_err();
        assert!(err.to_string().contains("ARM_ABS32"), "{err}");
        let elf = synth_elf(true, true, &[(0x1ffc, R_X86_64_RELATIVE, 0)]);
        assert!(matches!(
            BlobLayout::parse(&elf, R_X86_64_RELATIVE),
            Err(BlobError::RelocOutOfImage { offset: 0x1ffc })
        ));
    }

    /// Runs the real blob in a forked, ptrace-stopped child.
    #[cfg(target_arch = "x86_64")]
    mod run {
        use super::super::*;
        use cryo_parasite::abi::{
            CmdHeader, IoVec, SyscallEntry, CMD_MAGIC, CMD_SYSCALLS, CMD_VMSPLICE,
            STATUS_BAD_COMMAND, SYSCALL_IGNORE_ERROR,
        };
        use goblin::elf::reloc::R_X86_64_RELATIVE;
        use std::mem::size_of;

        const EBADF: i64 = 9;
        const EINVAL: i64 = 22;

        fn check(ret: libc::c_long, what: &str) -> libc::c_long {
            assert!(ret >= 0, "{what}: {}", std::io::Error::last_os_error());
            ret
        }

        fn bytes_of<T: Copy>(v: &[T]) -> &[u8] {
            // SAFETY: only used for the ABI's repr(C) integer-only structs,
            // which have no padding (so every byte is initialised).
            unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
        }

        fn read_struct<T: Copy + Default>(b: &[u8]) -> T {
            assert!(b.len() >= size_of::<T>());
            // SAFETY: `b` holds at least size_of::<T>() bytes, and T is an
            // integer-only repr(C) struct, valid for any bit pattern.
            unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) }
        }

        /// A traced child stopped in SIGSTOP, with the blob region mapped at
        /// `base` (mapped before fork, so at the same address in both).
        struct Child {
            pid: libc::pid_t,
            base: u64,
            layout: BlobLayout,
        }

        impl Drop for Child {
            fn drop(&mut self) {
                // SAFETY: plain syscalls on our own child and our own mapping.
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                    let mut st = 0;
                    libc::waitpid(self.pid, &mut st, libc::__WALL);
                    libc::munmap(
                        self.base as *mut libc::c_void,
                        self.layout.region_size() as usize,
                    );
                }
            }
        }

        impl Child {
            fn spawn() -> Child {
                let layout = BlobLayout::parasite(R_X86_64_RELATIVE).unwrap();
                let size = layout.region_size() as usize;
                // SAFETY: a fresh anonymous mapping; nothing else refers to it.
                let base = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        size,
                        libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                assert_ne!(base, libc::MAP_FAILED);
                // SAFETY: the child only makes async-signal-safe syscalls
                // (ptrace, raise, _exit) before it is killed.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0);
                if pid == 0 {
                    // SAFETY: see above; the child never returns into the harness.
                    unsafe {
                        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                            libc::_exit(1);
                        }
                        libc::raise(libc::SIGSTOP);
                        libc::_exit(0);
                    }
                }
                let child = Child {
                    pid,
                    base: base as u64,
                    layout,
                };
                let st = child.wait();
                assert!(
                    libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGSTOP,
                    "status {st:#x}"
                );
                // SAFETY: ptrace on our stopped tracee.
                check(
                    unsafe {
                        libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, libc::PTRACE_O_EXITKILL)
                    },
                    "PTRACE_SETOPTIONS",
                );
                let img = child.layout.relocated(child.base);
                child.write(child.base, &img);
                child
            }

            fn wait(&self) -> libc::c_int {
                let mut st = 0;
                // SAFETY: waiting for our own child.
                let r = unsafe { libc::waitpid(self.pid, &mut st, libc::__WALL) };
                assert_eq!(r, self.pid, "waitpid: {}", std::io::Error::last_os_error());
                st
            }

            fn write(&self, addr: u64, data: &[u8]) {
                let local = libc::iovec {
                    iov_base: data.as_ptr() as *mut _,
                    iov_len: data.len(),
                };
                let remote = libc::iovec {
                    iov_base: addr as *mut _,
                    iov_len: data.len(),
                };
                // SAFETY: `local` describes `data`; the kernel checks `remote`.
                let n = unsafe { libc::process_vm_writev(self.pid, &local, 1, &remote, 1, 0) };
                assert_eq!(check(n as _, "process_vm_writev") as usize, data.len());
            }

            fn read(&self, addr: u64, len: usize) -> Vec<u8> {
                let mut buf = vec![0u8; len];
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: len,
                };
                let remote = libc::iovec {
                    iov_base: addr as *mut _,
                    iov_len: len,
                };
                // SAFETY: `local` describes `buf`; the kernel checks `remote`.
                let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
                assert_eq!(check(n as _, "process_vm_readv") as usize, len);
                buf
            }

            fn cmd_addr(&self) -> u64 {
                self.base + self.layout.cmd_offset()
            }

            /// Write `cmd` to the command area, run the blob until it traps,
            /// calling `pump` while it runs; returns the command area's first
            /// `cmd.len()` bytes afterwards.
            fn run(&self, cmd: &[u8], mut pump: impl FnMut()) -> Vec<u8> {
                self.write(self.cmd_addr(), cmd);
                // SAFETY: user_regs_struct is plain integers; zeroed is valid.
                let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
                // SAFETY: ptrace on our stopped tracee, with a buffer of the right type.
                check(
                    unsafe { libc::ptrace(libc::PTRACE_GETREGS, self.pid, 0, &mut regs) },
                    "GETREGS",
                );
                regs.rip = self.base + self.layout.entry_offset;
                regs.rdi = self.cmd_addr();
                regs.rsp = self.base + self.layout.stack_top_offset() - 8; // rsp+8 16-aligned
                regs.orig_rax = u64::MAX; // not in a syscall: no restart
                regs.rax = 0;
                // SAFETY: as above.
                check(
                    unsafe { libc::ptrace(libc::PTRACE_SETREGS, self.pid, 0, &regs) },
                    "SETREGS",
                );
                // SAFETY: as above; signal 0 discards the pending stop.
                check(
                    unsafe { libc::ptrace(libc::PTRACE_CONT, self.pid, 0, 0) },
                    "CONT",
                );
                let st = loop {
                    let mut st = 0;
                    // SAFETY: waiting for our own child.
                    let r =
                        unsafe { libc::waitpid(self.pid, &mut st, libc::__WALL | libc::WNOHANG) };
                    assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
                    if r == self.pid {
                        break st;
                    }
                    pump();
                };
                assert!(
                    libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTRAP,
                    "blob did not trap: {st:#x}"
                );
                self.read(self.cmd_addr(), cmd.len())
            }
        }

        fn header(cmd: u32, count: usize, arg0: u64) -> CmdHeader {
            CmdHeader {
                magic: CMD_MAGIC,
                cmd,
                count: count as u64,
                arg0,
                status: 0x5a5a,
                done: 0x5a5a,
                ..Default::default()
            }
        }

        fn syscalls_cmd(entries: &[SyscallEntry], tail: &[u8]) -> Vec<u8> {
            let mut v = bytes_of(&[header(CMD_SYSCALLS, entries.len(), 0)]).to_vec();
            v.extend_from_slice(bytes_of(entries));
            v.extend_from_slice(tail);
            v
        }

        fn parse_syscalls(out: &[u8], n: usize) -> (CmdHeader, Vec<SyscallEntry>) {
            let h: CmdHeader = read_struct(out);
            let recs = (0..n)
                .map(|i| {
                    read_struct(&out[size_of::<CmdHeader>() + i * size_of::<SyscallEntry>()..])
                })
                .collect();
            (h, recs)
        }

        fn sc(nr: i64, args: [u64; 6]) -> SyscallEntry {
            SyscallEntry {
                nr: nr as u64,
                args,
                result: 0x1234_5678,
                ..Default::default()
            }
        }

        fn pipe() -> [libc::c_int; 2] {
            let mut fds = [0; 2];
            // SAFETY: `fds` is a valid out-array of two ints.
            check(
                unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as _,
                "pipe2",
            );
            fds
        }

        #[test]
        fn blob_runs_syscalls_in_child() {
            let fds = pipe();
            let child = Child::spawn();
            let pid = child.pid;

            // The message travels inside the command area, after the records.
            let msg = b"hello from the parasite\n";
            let n = 5;
            let msg_addr =
                child.cmd_addr() + (size_of::<CmdHeader>() + n * size_of::<SyscallEntry>()) as u64;
            let mut entries = vec![
                sc(libc::SYS_getpid, [0; 6]),
                sc(libc::SYS_kill, [0, 0, 0, 0, 0, 0]),
                sc(
                    libc::SYS_write,
                    [fds[1] as u64, msg_addr, msg.len() as u64, 0, 0, 0],
                ),
                sc(libc::SYS_close, [u64::MAX, 0, 0, 0, 0, 0]),
                sc(libc::SYS_gettid, [0; 6]),
            ];
            entries[1].from_result = 1; // kill(result of #0, 0)
            entries[3].flags = SYSCALL_IGNORE_ERROR;
            let out = child.run(&syscalls_cmd(&entries, msg), || {});
            let (h, r) = parse_syscalls(&out, n);
            assert_eq!((h.status, h.done), (0, n as u64));
            assert_eq!(r[0].result, i64::from(pid));
            assert_eq!(r[1].result, 0);
            assert_eq!(r[2].result, msg.len() as i64);
            assert_eq!(r[3].result, -EBADF);
            assert_eq!(r[4].result, i64::from(pid));
            let mut got = vec![0u8; msg.len()];
            // SAFETY: reading into a buffer of the given length.
            let k = unsafe { libc::read(fds[0], got.as_mut_ptr().cast(), got.len()) };
            assert_eq!(k as usize, msg.len());
            assert_eq!(&got, msg);

            // A failure stops the batch: done counts the failed entry.
            let entries = [
                sc(libc::SYS_close, [u64::MAX, 0, 0, 0, 0, 0]),
                sc(libc::SYS_getpid, [0; 6]),
            ];
            let (h, r) = parse_syscalls(&child.run(&syscalls_cmd(&entries, &[]), || {}), 2);
            assert_eq!((h.status, h.done), (-EBADF, 1));
            assert_eq!((r[0].result, r[1].result), (-EBADF, 0x1234_5678));

            // from_result may only name an earlier entry.
            let mut entries = [
                sc(libc::SYS_getpid, [0; 6]),
                sc(libc::SYS_kill, [1, 0, 0, 0, 0, 0]),
            ];
            entries[1].from_result = 1;
            let (h, r) = parse_syscalls(&child.run(&syscalls_cmd(&entries, &[]), || {}), 2);
            assert_eq!((h.status, h.done), (-EINVAL, 1));
            assert_eq!((r[0].result, r[1].result), (i64::from(pid), 0x1234_5678));

            // Bad magic and unknown commands are refused.
            let mut bad = syscalls_cmd(&[sc(libc::SYS_getpid, [0; 6])], &[]);
            bad[0] ^= 1;
            let (h, r) = parse_syscalls(&child.run(&bad, || {}), 1);
            assert_eq!(
                (h.status, h.done, r[0].result),
                (STATUS_BAD_COMMAND, 0, 0x1234_5678)
            );
            let unknown = bytes_of(&[header(99, 0, 0)]).to_vec();
            let h: CmdHeader = read_struct(&child.run(&unknown, || {}));
            assert_eq!((h.status, h.done), (STATUS_BAD_COMMAND, 0));

            // SAFETY: closing our own pipe fds.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        }

        #[test]
        fn blob_runs_vmsplice_in_child() {
            // Source data, allocated before fork: at the same address in the child.
            let src: Vec<u8> = (0..300_000u32)
                .map(|i| (i.wrapping_mul(7) ^ (i >> 9)) as u8)
                .collect();
            let fds = pipe();
            // SAFETY: setting O_NONBLOCK on our own pipe's read end.
            unsafe { libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK | libc::O_CLOEXEC) };
            let child = Child::spawn();

            // Pieces: a big one, an empty one, 1500 small ones (more than one
            // IOV_MAX chunk), and the rest; more than a pipe holds, so the
            // blob sees partial writes while we drain.
            let base = src.as_ptr() as u64;
            let mut iov = vec![
                IoVec { base, len: 100_000 },
                IoVec {
                    base: base + 100_000,
                    len: 0,
                },
            ];
            let mut at = 100_000u64;
            for _ in 0..1500 {
                iov.push(IoVec {
                    base: base + at,
                    len: 37,
                });
                at += 37;
            }
            iov.push(IoVec {
                base: base + at,
                len: src.len() as u64 - at - 1000,
            });
            iov.push(IoVec {
                base: base + 5,
                len: 1000,
            }); // out of order
            let mut expected = Vec::new();
            for v in &iov {
                let o = (v.base - base) as usize;
                expected.extend_from_slice(&src[o..o + v.len as usize]);
            }

            let mut cmd = bytes_of(&[header(CMD_VMSPLICE, iov.len(), fds[1] as u64)]).to_vec();
            cmd.extend_from_slice(bytes_of(&iov));
            let mut got = Vec::new();
            let drain = |got: &mut Vec<u8>| {
                let mut buf = vec![0u8; 65536];
                loop {
                    // SAFETY: reading into a buffer of the given length.
                    let k = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
                    if k <= 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..k as usize]);
                }
            };
            let out = child.run(&cmd, || {
                drain(&mut got);
                std::thread::sleep(std::time::Duration::from_millis(1));
            });
            drain(&mut got);
            let h: CmdHeader = read_struct(&out);
            assert_eq!((h.status, h.done), (0, expected.len() as u64));
            assert_eq!(got.len(), expected.len());
            assert!(got == expected, "spliced bytes differ");

            // A bad fd is reported as -errno with nothing moved.
            let mut cmd = bytes_of(&[header(CMD_VMSPLICE, 1, 9999)]).to_vec();
            cmd.extend_from_slice(bytes_of(&[IoVec { base, len: 10 }]));
            let h: CmdHeader = read_struct(&child.run(&cmd, || {}));
            assert_eq!((h.status, h.done), (-EBADF, 0));

            // SAFETY: closing our own pipe fds.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        }
    }
}
