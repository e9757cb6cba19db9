//! The ELF files a process had mapped (and its vDSO): where each was loaded,
//! its symbols, and its `.eh_frame` unwind tables.
//!
//! Files are read from disk as they are now. The image keeps the first page
//! of every ELF mapping, so a file that changed since the checkpoint (an
//! upgrade, a rebuild) is noticed and not used: wrong symbols are worse than none.

use crate::snapshot::ProcessMemory;
use cryo_image::{Vma, VmaKind};
use goblin::elf::{program_header::PT_LOAD, sym, Elf};
use std::collections::HashMap;
use std::ops::Range;

pub struct Module {
    /// Path of the file, or `[vdso]`.
    pub name: String,
    /// Runtime address minus the ELF's own (link-time) address.
    pub bias: u64,
    pub build_id: Option<String>,
    /// Separate debug-symbol file found through the build-id, if any.
    pub debug_file: Option<String>,
    /// Why symbols or unwind tables are missing, if they are.
    pub problem: Option<String>,
    syms: Vec<Sym>,
    data: Vec<u8>,
    pub(super) eh_frame: Option<Section>,
    pub(super) eh_frame_hdr: Option<Section>,
    pub(super) text_addr: Option<u64>,
}

#[derive(Clone)]
pub(super) struct Section {
    /// Link-time address.
    pub addr: u64,
    pub range: Range<usize>,
}

struct Sym {
    addr: u64,
    size: u64,
    name: String,
}

/// A code address resolved to a function.
#[derive(Clone, Debug)]
pub struct Symbol {
    pub name: String,
    pub offset: u64,
}

impl Module {
    pub(super) fn section(&self, s: &Section) -> &[u8] {
        &self.data[s.range.clone()]
    }

    pub fn has_symbols(&self) -> bool {
        !self.syms.is_empty()
    }

    pub fn has_unwind(&self) -> bool {
        self.eh_frame.is_some()
    }

    /// The function containing runtime address `addr`.
    pub fn symbol(&self, addr: u64) -> Option<Symbol> {
        let a = addr.wrapping_sub(self.bias);
        let i = self.syms.partition_point(|s| s.addr <= a);
        let s = &self.syms[i.checked_sub(1)?];
        if s.size != 0 && a >= s.addr + s.size {
            return None;
        }
        Some(Symbol { name: s.name.clone(), offset: a - s.addr })
    }
}

/// Every module of one process, loaded on first use.
pub struct Modules {
    by_name: HashMap<String, Option<Module>>,
}

impl Modules {
    pub fn new() -> Modules {
        Modules { by_name: HashMap::new() }
    }

    /// The module mapped at `addr`, if `addr` lies in a mapped ELF file or the vDSO.
    pub fn at(&mut self, mem: &ProcessMemory, vmas: &[Vma], addr: u64) -> Option<&Module> {
        let v = mem.vma_at(addr)?;
        if !matches!(v.kind, VmaKind::File | VmaKind::Vdso) {
            return None;
        }
        let name = v.name.clone();
        if !self.by_name.contains_key(&name) {
            let m = load(mem, vmas, &name);
            self.by_name.insert(name.clone(), m);
        }
        self.by_name.get(&name).and_then(|m| m.as_ref())
    }

    /// Loaded modules, sorted by name.
    pub fn loaded(&self) -> Vec<&Module> {
        let mut v: Vec<&Module> = self.by_name.values().flatten().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

fn load(mem: &ProcessMemory, vmas: &[Vma], name: &str) -> Option<Module> {
    let mine: Vec<&Vma> = vmas.iter().filter(|v| v.name == name).collect();
    let first = mine.iter().find(|v| v.offset == 0).or(mine.first())?;
    let ps = mem.page_size() as usize;
    let data = if first.kind == VmaKind::Vdso {
        let mut d = vec![0u8; first.len() as usize];
        mem.read(first.start, &mut d).ok()?;
        d
    } else {
        // Only ELF files are read whole: a process may map large data files.
        let mut magic = [0u8; 4];
        std::io::Read::read_exact(&mut std::fs::File::open(name).ok()?, &mut magic).ok()?;
        if &magic != b"\x7fELF" {
            return None;
        }
        std::fs::read(name).ok()?
    };
    let elf = Elf::parse(&data).ok()?;
    let mut problem = None;
    if first.kind == VmaKind::File && first.offset == 0 && mem.stores_any(first.start, first.start + 1) {
        // The image's copy of the ELF header, program headers and the notes
        // in the first page (the build-id) against the file's: any rebuild changes them.
        let mut end = elf.header.e_phoff as usize + elf.header.e_phnum as usize * elf.header.e_phentsize as usize;
        for ph in elf.program_headers.iter().filter(|ph| ph.p_type == goblin::elf::program_header::PT_NOTE) {
            if ph.p_offset + ph.p_filesz <= ps as u64 {
                end = end.max((ph.p_offset + ph.p_filesz) as usize);
            }
        }
        let end = end.min(ps).min(data.len());
        let mut head = vec![0u8; end];
        if mem.read(first.start, &mut head).is_ok() && head[..] != data[..end] {
            problem = Some(format!("{name} changed since the checkpoint; its symbols would be wrong"));
        }
    }
    let bias = bias(&elf, first);
    let build_id = build_id(&elf, &data);
    let mut m = Module {
        name: name.to_string(),
        bias,
        build_id: build_id.clone(),
        debug_file: None,
        problem: None,
        syms: Vec::new(),
        eh_frame: None,
        eh_frame_hdr: None,
        text_addr: None,
        data: Vec::new(),
    };
    if problem.is_none() {
        let mut syms = Vec::new();
        collect_syms(&elf, &mut syms);
        if let Some(id) = build_id.as_deref().filter(|id| id.len() > 2) {
            let path = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
            if let Ok(dbg) = std::fs::read(&path) {
                if let Ok(d) = Elf::parse(&dbg) {
                    collect_syms(&d, &mut syms);
                    m.debug_file = Some(path);
                }
            }
        }
        // One name per address: globals before locals, fewer leading underscores first.
        syms.sort_by(|a, b| {
            (a.0.addr, a.1, a.0.name.len() - a.0.name.trim_start_matches('_').len(), &a.0.name).cmp(&(
                b.0.addr,
                b.1,
                b.0.name.len() - b.0.name.trim_start_matches('_').len(),
                &b.0.name,
            ))
        });
        syms.dedup_by_key(|s| s.0.addr);
        m.syms = syms.into_iter().map(|(s, _)| s).collect();
        for sh in &elf.section_headers {
            let range = sh.sh_offset as usize..(sh.sh_offset + sh.sh_size) as usize;
            if sh.sh_type == goblin::elf::section_header::SHT_NOBITS || range.end > data.len() {
                continue;
            }
            let s = Section { addr: sh.sh_addr, range };
            match elf.shdr_strtab.get_at(sh.sh_name) {
                Some(".eh_frame") => m.eh_frame = Some(s),
                Some(".eh_frame_hdr") => m.eh_frame_hdr = Some(s),
                Some(".text") => m.text_addr = Some(sh.sh_addr),
                _ => {}
            }
        }
        if m.syms.is_empty() && m.eh_frame.is_none() {
            problem = Some(format!("{name} has neither symbols nor unwind tables"));
        } else if m.syms.is_empty() {
            problem = Some(format!("{name} has no symbols (stripped, no debug file found by build-id)"));
        }
    }
    drop(elf);
    m.problem = problem;
    m.data = data;
    Some(m)
}

/// Runtime minus link-time address, from the mapping of file offset `v.offset`.
fn bias(elf: &Elf, v: &Vma) -> u64 {
    elf.program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD)
        .find(|ph| v.offset < ph.p_offset + ph.p_filesz.max(1))
        .map(|ph| v.start.wrapping_add(ph.p_offset).wrapping_sub(v.offset).wrapping_sub(ph.p_vaddr))
        .unwrap_or(0)
}

fn build_id(elf: &Elf, data: &[u8]) -> Option<String> {
    const NT_GNU_BUILD_ID: u32 = 3;
    for note in elf.iter_note_headers(data)?.flatten() {
        if note.n_type == NT_GNU_BUILD_ID && note.name == "GNU" {
            return Some(note.desc.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    None
}

/// Function symbols, each with "is local" for ranking aliases.
fn collect_syms(elf: &Elf, out: &mut Vec<(Sym, bool)>) {
    let tables = [(&elf.syms, &elf.strtab), (&elf.dynsyms, &elf.dynstrtab)];
    for (syms, strs) in tables {
        for s in syms.iter() {
            let t = s.st_type();
            if !(t == sym::STT_FUNC || t == sym::STT_GNU_IFUNC) || s.st_value == 0 {
                continue;
            }
            let Some(name) = strs.get_at(s.st_name).filter(|n| !n.is_empty()) else { continue };
            out.push((Sym { addr: s.st_value, size: s.st_size, name: name.to_string() }, s.st_bind() == sym::STB_LOCAL));
        }
    }
}
