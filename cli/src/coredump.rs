//! `cryo core`: an ELF core file from an image, for gdb.
//!
//! Written front to back through a buffered stream: headers and notes first,
//! then each memory area page by page from the image's pages file (or, for
//! pages the image did not need to store, from the mapped file or zeros), so
//! a large image never has to fit in memory.

use crate::snapshot::ProcessMemory;
use anyhow::{bail, Context, Result};
use cryo_image::{ImageReader, ProcessEntry, ProcessImage, ProcessState, Vma, VmaKind};
use cryo_tracer::arch::{push_word as put_word, word, Arch, Native};
use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, Writer};
use object::write::StreamingBuffer;
use object::Endianness;
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_SIGINFO: u32 = 0x5349_4749;
const NT_FILE: u32 = 0x4649_4c45;

/// Write one core per process: `out` for the root (or for `pid`), or with
/// `all`, `out.PID` for every live process of the image (gcore's naming;
/// zombies have neither memory nor threads).
/// Returns the files written with their number of memory areas.
pub fn write(dir: &Path, pid: Option<i32>, all: bool, out: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let img = ImageReader::open(dir)?;
    img.of_one_moment()?;
    crate::snapshot::check_arch(dir, &img.inventory)?;
    let live = |e: &&ProcessEntry| e.state == ProcessState::Live;
    let pids: Vec<i32> = if all {
        img.inventory.processes.iter().filter(live).map(|p| p.pid).collect()
    } else {
        let pid = pid.unwrap_or(img.inventory.root_pid);
        match img.inventory.processes.iter().find(|p| p.pid == pid) {
            Some(e) if live(&e) => vec![pid],
            Some(_) => bail!("process {pid} of image {} is a zombie: it has no memory or threads to write", dir.display()),
            None => {
                let have: Vec<String> = img.inventory.processes.iter().filter(live).map(|p| p.pid.to_string()).collect();
                bail!("image {} holds no process {pid}; it holds {}", dir.display(), have.join(", "))
            }
        }
    };
    let mut written = Vec::new();
    for pid in pids {
        let path = if all {
            let mut name = out.as_os_str().to_owned();
            name.push(format!(".{pid}"));
            PathBuf::from(name)
        } else {
            out.to_path_buf()
        };
        let n = write_one(&img, pid, &path).with_context(|| format!("core of process {pid} of image {}", dir.display()))?;
        written.push((path, n));
    }
    Ok(written)
}

fn write_one(img: &ImageReader, pid: i32, out: &Path) -> Result<u64> {
    let p = img.read_process(pid)?;
    let ps = img.inventory.page_size;
    let mem = ProcessMemory::open(img, &p)?;
    let segments: Vec<(&Vma, bool)> =
        p.vmas.iter().filter(|v| v.kind != VmaKind::Vsyscall).map(|v| (v, has_contents(&mem, v))).collect();
    let notes = notes(&p, ps);

    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let mut stream = StreamingBuffer::new(BufWriter::with_capacity(1 << 20, file));
    let mut w = Writer::new(Endianness::Little, Native::IS_64BIT, &mut stream);
    w.reserve_file_header();
    w.reserve_program_headers(1 + segments.len() as u32);
    let notes_off = w.reserve(notes.len(), 4);
    let offsets: Vec<usize> =
        segments.iter().map(|(v, data)| if *data { w.reserve(v.len() as usize, ps as usize) } else { 0 }).collect();

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_CORE,
        e_machine: Native::ELF_MACHINE,
        e_entry: 0,
        e_flags: 0,
    })
    .map_err(|e| anyhow::anyhow!("ELF header: {e}"))?;
    w.write_align_program_headers();
    w.write_program_header(&ProgramHeader {
        p_type: elf::PT_NOTE,
        p_flags: 0,
        p_offset: notes_off as u64,
        p_vaddr: 0,
        p_paddr: 0,
        p_filesz: notes.len() as u64,
        p_memsz: 0,
        p_align: 4,
    });
    for ((v, data), off) in segments.iter().zip(&offsets) {
        let mut flags = 0;
        if v.prot & libc::PROT_READ as u32 != 0 {
            flags |= elf::PF_R;
        }
        if v.prot & libc::PROT_WRITE as u32 != 0 {
            flags |= elf::PF_W;
        }
        if v.prot & libc::PROT_EXEC as u32 != 0 {
            flags |= elf::PF_X;
        }
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: flags,
            p_offset: *off as u64,
            p_vaddr: v.start,
            p_paddr: 0,
            p_filesz: if *data { v.len() } else { 0 },
            p_memsz: v.len(),
            p_align: ps,
        });
    }
    w.pad_until(notes_off);
    w.write(&notes);
    let mut page = vec![0u8; ps as usize];
    for ((v, data), off) in segments.iter().zip(&offsets) {
        if !*data {
            continue;
        }
        w.pad_until(*off);
        let mut addr = v.start;
        while addr < v.end {
            mem.read_page(v, addr, &mut page)?;
            w.write(&page);
            addr += ps;
        }
    }
    drop(w);
    stream.result().with_context(|| format!("writing {}", out.display()))?;
    Ok(segments.len() as u64)
}

/// Which areas carry their contents in the core: everything a debugger reads
/// that is not plain program text it can take from the binaries themselves.
fn has_contents(mem: &ProcessMemory, v: &Vma) -> bool {
    if v.prot & libc::PROT_READ as u32 == 0 || v.kind == VmaKind::Vvar {
        return false;
    }
    if v.kind == VmaKind::Vdso {
        return mem.stores_any(v.start, v.end);
    }
    if v.kind != VmaKind::File || v.prot & libc::PROT_WRITE as u32 != 0 {
        return true;
    }
    // Read-only file areas: the ELF header (build-ids) and anything the process changed.
    v.offset == 0 || mem.stores_any(v.start, v.end)
}

fn note(out: &mut Vec<u8>, owner: &str, ty: u32, desc: &[u8]) {
    let name_len = owner.len() + 1;
    out.extend_from_slice(&(name_len as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(owner.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}


/// `struct elf_prstatus` for one thread.
fn prstatus(p: &ProcessImage, t: &cryo_image::ThreadImage) -> Vec<u8> {
    let w = word();
    let mut b = vec![0u8; 16]; // elf_siginfo (12) + pr_cursig (2) + padding
    put_word(&mut b, t.pending);
    put_word(&mut b, t.sigmask);
    for id in [t.tid, p.ppid, p.pgid, p.sid] {
        b.extend_from_slice(&id.to_le_bytes());
    }
    b.resize(b.len() + 8 * w, 0); // four timevals
    b.extend_from_slice(&t.regsets[0].data);
    let fpvalid = t.regsets.len() > 1;
    b.extend_from_slice(&(fpvalid as u32).to_le_bytes());
    b.resize(b.len().next_multiple_of(w), 0);
    b
}

/// `struct elf_prpsinfo` for the process.
fn prpsinfo(p: &ProcessImage) -> Vec<u8> {
    let w = word();
    // pr_state (index into "RSDTZW"), pr_sname, pr_zomb, pr_nice: a
    // checkpointed process is stopped from outside, which ps shows as sleeping.
    let mut b = vec![1, b'S', 0, 0];
    b.resize(w, 0);
    put_word(&mut b, 0); // pr_flag
    let u = Native::PRPSINFO_UID_BYTES;
    b.extend_from_slice(&p.creds.uids[0].to_le_bytes()[..u]);
    b.extend_from_slice(&p.creds.gids[0].to_le_bytes()[..u]);
    for id in [p.pid, p.ppid, p.pgid, p.sid] {
        b.extend_from_slice(&id.to_le_bytes());
    }
    let mut fname = [0u8; 16];
    for (d, s) in fname.iter_mut().zip(p.comm.bytes().take(15)) {
        *d = s;
    }
    b.extend_from_slice(&fname);
    let mut args = [0u8; 80];
    for (d, s) in args.iter_mut().zip(p.cmdline.join(" ").bytes().take(79)) {
        *d = s;
    }
    b.extend_from_slice(&args);
    b.resize(b.len().next_multiple_of(w), 0);
    b
}

/// NT_FILE: which file backs each file mapping.
fn file_note(p: &ProcessImage, ps: u64) -> Vec<u8> {
    let files: Vec<&Vma> = p.vmas.iter().filter(|v| v.kind == VmaKind::File).collect();
    let mut b = Vec::new();
    put_word(&mut b, files.len() as u64);
    put_word(&mut b, ps);
    for v in &files {
        put_word(&mut b, v.start);
        put_word(&mut b, v.end);
        put_word(&mut b, v.offset / ps);
    }
    for v in &files {
        b.extend_from_slice(v.name.as_bytes());
        b.push(0);
    }
    b
}

/// Notes in the order the kernel writes them (the first thread's status, then
/// the process-wide notes, then that thread's other register sets; then each
/// further thread), with gdb's per-thread NT_SIGINFO after each thread.
fn notes(p: &ProcessImage, ps: u64) -> Vec<u8> {
    let spec = |nt: u32| Native::REGSETS.iter().find(|s| s.note_type == nt);
    let mut out = Vec::new();
    for (i, t) in p.threads.iter().enumerate() {
        note(&mut out, "CORE", Native::REGSETS[0].note_type, &prstatus(p, t));
        if i == 0 {
            note(&mut out, "CORE", NT_PRPSINFO, &prpsinfo(p));
            note(&mut out, "CORE", NT_AUXV, &p.mm.auxv);
            note(&mut out, "CORE", NT_FILE, &file_note(p, ps));
        }
        for rs in t.regsets.iter().skip(1) {
            let s = spec(rs.note_type);
            let mut buf = vec![0u8; s.map_or(0, |s| s.max_size).max(rs.data.len())];
            let n = Native::core_note(rs.note_type, &rs.data, &mut buf);
            note(&mut out, s.map_or("LINUX", |s| s.core_note_owner), rs.note_type, &buf[..n]);
        }
        note(&mut out, "CORE", NT_SIGINFO, &siginfo());
    }
    out
}

/// NT_SIGINFO: the process was not stopped by a signal but from outside, as
/// gcore stops it; like gcore's, the note says SIGSTOP sent by a user
/// (SI_USER), while pr_cursig stays 0 so gdb reports no fatal signal.
fn siginfo() -> Vec<u8> {
    const SIGSTOP: i32 = 19;
    const SI_USER: i32 = 0;
    let mut b = vec![0u8; 128];
    b[0..4].copy_from_slice(&SIGSTOP.to_le_bytes());
    b[8..12].copy_from_slice(&SI_USER.to_le_bytes());
    b
}
