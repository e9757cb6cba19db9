//! A checkpointed process's memory, read back from its image: what `cryo core`
//! writes into cores and what `cryo inspect` decodes and unwinds.
//!
//! A page comes from the image's pages file when the image stored it, from an
//! ancestor image when it is marked unchanged since one, from the mapped file
//! when the image relied on the file (clean pages of file mappings), and is
//! zero otherwise (anonymous memory that was never touched).

use anyhow::{bail, Context, Result};
use cryo_image::codec::PagesReader;
use cryo_image::{ImageReader, Inventory, PageOrigin, PageRun, ProcessImage, Vma, VmaKind};
use cryo_tracer::arch::{Arch, Native};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub struct ProcessMemory {
    pid: i32,
    ps: u64,
    vmas: Vec<Vma>,
    runs: Vec<PageRun>,
    pages: RefCell<PagesReader>,
    pages_path: PathBuf,
    /// The image this one is incremental against, opened on first use.
    parent: RefCell<Option<Option<Box<ProcessMemory>>>>,
    parent_dir: Option<PathBuf>,
    /// The parent process in this image, for the pages it shares since a
    /// fork, opened on first use.
    forked_from: RefCell<Option<Box<ProcessMemory>>>,
    dir: PathBuf,
    ppid: i32,
    files: RefCell<HashMap<String, Option<File>>>,
    last_page: RefCell<(Option<u64>, Vec<u8>)>,
}

/// Where the bytes of an address come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Image,
    /// The mapped file as it is now (the image relies on it being unchanged).
    MappedFile,
    /// Memory the process never touched.
    Zero,
}

impl ProcessMemory {
    pub fn open(img: &ImageReader, p: &ProcessImage) -> Result<ProcessMemory> {
        let parent_dir = img.inventory.parent.as_ref().map(|rel| img.dir().join(rel));
        Ok(ProcessMemory {
            pid: p.pid,
            ps: img.inventory.page_size,
            vmas: p.vmas.clone(),
            runs: p.pages.clone(),
            pages: RefCell::new(PagesReader::new(img.open_pages(p.pid)?, p.compression.clone())),
            pages_path: img.pages_path(p.pid),
            parent: RefCell::new(None),
            parent_dir,
            forked_from: RefCell::new(None),
            dir: img.dir().to_path_buf(),
            ppid: p.ppid,
            files: RefCell::new(HashMap::new()),
            last_page: RefCell::new((None, Vec::new())),
        })
    }

    pub fn page_size(&self) -> u64 {
        self.ps
    }

    pub fn vma_at(&self, addr: u64) -> Option<&Vma> {
        let i = self.vmas.partition_point(|v| v.end <= addr);
        self.vmas.get(i).filter(|v| v.start <= addr)
    }

    /// The stored run covering `addr`.
    fn run_at(&self, addr: u64) -> Option<&PageRun> {
        let i = self.runs.partition_point(|r| r.vaddr + r.npages * self.ps <= addr);
        self.runs.get(i).filter(|r| r.vaddr <= addr)
    }

    /// Does the image hold any page of [start, end) itself?
    pub fn stores_any(&self, start: u64, end: u64) -> bool {
        let i = self.runs.partition_point(|r| r.vaddr + r.npages * self.ps <= start);
        self.runs.get(i).is_some_and(|r| r.vaddr < end)
    }

    /// Fill `page` (one page) with the contents of the page at `addr`, which lies in `v`.
    pub fn read_page(&self, v: &Vma, addr: u64, page: &mut [u8]) -> Result<Source> {
        page.fill(0);
        if let Some(r) = self.run_at(addr) {
            match r.origin {
                PageOrigin::Parent => return self.read_parent_page(v, addr, page),
                PageOrigin::Inherited => return self.read_forked_page(addr, page),
                PageOrigin::Here | PageOrigin::Reference => {}
            }
            self.pages
                .borrow_mut()
                .read_exact_at(page, r.file_offset + (addr - r.vaddr))
                .with_context(|| format!("reading {}", self.pages_path.display()))?;
            return Ok(Source::Image);
        }
        if v.kind == VmaKind::File {
            let mut files = self.files.borrow_mut();
            let f = files.entry(v.name.clone()).or_insert_with(|| File::open(&v.name).ok());
            if let Some(f) = f {
                let off = v.offset + (addr - v.start);
                let mut done = 0;
                // Past the end of the file, the mapping reads zeros.
                while done < page.len() {
                    match f.read_at(&mut page[done..], off + done as u64) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => done += n,
                    }
                }
                return Ok(Source::MappedFile);
            }
        }
        Ok(Source::Zero)
    }

    fn read_parent_page(&self, v: &Vma, addr: u64, page: &mut [u8]) -> Result<Source> {
        let mut slot = self.parent.borrow_mut();
        if slot.is_none() {
            let opened = match &self.parent_dir {
                Some(dir) => {
                    let img = ImageReader::open(dir).with_context(|| format!("opening the parent image {}", dir.display()))?;
                    let p = img.read_process(self.pid)?;
                    Some(Box::new(ProcessMemory::open(&img, &p)?))
                }
                None => None,
            };
            *slot = Some(opened);
        }
        match slot.as_ref().and_then(|p| p.as_deref()) {
            Some(parent) => parent.read_page(v, addr, page),
            None => bail!("page {addr:#x} of process {} is in a parent image, but the image names none", self.pid),
        }
    }

    fn read_forked_page(&self, addr: u64, page: &mut [u8]) -> Result<Source> {
        let mut slot = self.forked_from.borrow_mut();
        if slot.is_none() {
            let img = ImageReader::open(&self.dir)?;
            let p = img.read_process(self.ppid).with_context(|| format!("process {} shares pages with its parent {}", self.pid, self.ppid))?;
            *slot = Some(Box::new(ProcessMemory::open(&img, &p)?));
        }
        let parent = slot.as_ref().expect("opened above");
        let Some(v) = parent.vma_at(addr) else { bail!("page {addr:#x} of process {} is its parent's, which has nothing mapped there", self.pid) };
        parent.read_page(v, addr, page)
    }

    /// Read `buf.len()` bytes at `addr` (possibly across pages and areas).
    /// Fails where the process had nothing mapped, or only kernel pages.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        // Stack walks read word by word from the same few pages.
        let mut cache = self.last_page.borrow_mut();
        while done < buf.len() {
            let a = addr + done as u64;
            let Some(v) = self.vma_at(a) else { bail!("nothing mapped at {a:#x}") };
            if matches!(v.kind, VmaKind::Vvar | VmaKind::Vsyscall) {
                bail!("{a:#x} is in {}, which the image does not keep", v.name);
            }
            let base = a & !(self.ps - 1);
            if cache.0 != Some(base) {
                cache.1.resize(self.ps as usize, 0);
                cache.0 = None;
                self.read_page(v, base, &mut cache.1)?;
                cache.0 = Some(base);
            }
            let page = &cache.1;
            let from = (a - base) as usize;
            let n = (page.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[from..from + n]);
            done += n;
        }
        Ok(())
    }

    /// A pointer-sized little-endian word.
    pub fn word(&self, addr: u64, size: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b[..size]).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// Registers and memory are decoded as this build's CPU lays them out.
pub fn check_arch(dir: &std::path::Path, inv: &Inventory) -> Result<()> {
    if inv.arch != Native::NAME {
        bail!(
            "image {} was taken on {}, this cryo reads {} images; use a cryo built for {}",
            dir.display(),
            inv.arch,
            Native::NAME,
            inv.arch
        );
    }
    Ok(())
}
