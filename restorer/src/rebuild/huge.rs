//! Transparent huge pages under memory a restart fills whole.
//!
//! A restart has the kernel allocate and zero every page before the image's
//! bytes go in; one fault per 4 KiB page costs three times the read itself
//! (1 GiB: about 0.35 s of faults against 0.1 s of copying). Where a
//! PMD-sized, aligned stretch of a private anonymous area is stored whole,
//! one touched page and MADV_COLLAPSE (Linux 6.1) put a huge page there
//! first (0.06 s per GiB): the area's flags stay as they were
//! (MADV_HUGEPAGE would leave a mark the process never set), and the
//! process uses as much memory as it did, since every page of the stretch
//! existed. Nothing is done where the administrator turned huge pages off
//! ("never"), where the process asked for none (PR_SET_THP_DISABLE,
//! MADV_NOHUGEPAGE), or on stacks. A stretch the kernel cannot collapse
//! keeps small pages, as before.
//!
//! Not by default on a virtual machine whose balloon reports free memory to
//! its host: the host takes back free blocks of huge-page size, so a huge
//! page nearly always lands on memory the host must fault in again, 4 KiB
//! at a time, while small pages mostly reuse memory that was never handed
//! back (1 GiB: 2.3–2.9 s against 0.4–0.6 s on such a machine).

use super::{Restoree, Result, MADV_POPULATE_WRITE};
use cryo_image::chain::ResolvedPages;
use cryo_image::{Vma, VmaKind};
use cryo_injector::{Batch, Parasite};
use cryo_tracer::arch::Sysno;
use std::path::Path;

/// MADV_COLLAPSE (Linux 6.1).
const MADV_COLLAPSE: u64 = 25;
/// Virtio device id of a memory balloon, and its free page reporting feature bit.
const VIRTIO_ID_BALLOON: &str = "0x0005";
const VIRTIO_BALLOON_F_REPORTING: usize = 5;

/// `cryo restart --huge-pages`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HugePages {
    /// Where they are quicker: not under a balloon that reports free memory.
    #[default]
    Auto,
    /// Wherever the kernel allows them.
    On,
    Off,
}

impl std::str::FromStr for HugePages {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(HugePages::Auto),
            "on" => Ok(HugePages::On),
            "off" => Ok(HugePages::Off),
            _ => Err(format!("{s:?}: expected auto, on or off")),
        }
    }
}

/// The size of a huge page to fill memory with, if any: the PMD size,
/// unless transparent huge pages are off or unknown here, or (`Auto`) a
/// balloon hands free memory back to the host.
pub fn pmd_size(choice: HugePages) -> Option<u64> {
    if choice == HugePages::Off {
        return None;
    }
    let sys = Path::new("/sys/kernel/mm/transparent_hugepage");
    let enabled = std::fs::read_to_string(sys.join("enabled")).ok()?;
    if enabled.contains("[never]") {
        tracing::debug!("transparent huge pages are off here: memory is filled with small pages");
        return None;
    }
    if choice == HugePages::Auto && free_page_reporting() {
        tracing::debug!("a virtio balloon reports free memory to the host: memory is filled with small pages (--huge-pages on to use huge pages anyway)");
        return None;
    }
    let size = std::fs::read_to_string(sys.join("hpage_pmd_size")).ok()?.trim().parse::<u64>().ok()?;
    (size.is_power_of_two() && size > cryo_tracer::arch::page_size()).then_some(size)
}

/// Is there a virtio balloon that negotiated free page reporting? Its
/// `features` file has one character per feature bit.
fn free_page_reporting() -> bool {
    let Ok(devices) = std::fs::read_dir("/sys/bus/virtio/devices") else { return false };
    devices.flatten().any(|d| {
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
        read("device").trim() == VIRTIO_ID_BALLOON && read("features").as_bytes().get(VIRTIO_BALLOON_F_REPORTING) == Some(&b'1')
    })
}

fn may_be_huge(v: &Vma) -> bool {
    !v.shared && matches!(v.kind, VmaKind::Anon | VmaKind::Heap) && !v.has_flag("nh") && !v.has_flag("gd")
}

/// The aligned stretches of `size` bytes that the pages in `src` cover whole,
/// each inside one area that may hold huge pages, in address order.
fn stretches(vmas: &[Vma], src: &ResolvedPages, size: u64, ps: u64) -> Vec<u64> {
    let mut runs: Vec<(u64, u64)> = src.runs.iter().map(|r| (r.vaddr, r.vaddr + r.npages * ps)).collect();
    runs.sort_unstable();
    let mut covered: Vec<(u64, u64)> = Vec::new();
    for (start, end) in runs {
        match covered.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(end),
            _ => covered.push((start, end)),
        }
    }
    let mut out = Vec::new();
    for (start, end) in covered {
        let mut at = start.next_multiple_of(size);
        while at + size <= end {
            // The areas are in address order: the one holding `at` is the last starting at or below it.
            let holder = vmas.partition_point(|v| v.start <= at).checked_sub(1).map(|i| &vmas[i]);
            if holder.is_some_and(|v| v.start <= at && at + size <= v.end && may_be_huge(v)) {
                out.push(at);
            }
            at += size;
        }
    }
    out
}

/// Put huge pages where `src` will fill whole stretches, before the pages
/// are read in. Failures leave small pages: the fill works either way.
pub(super) fn prepare(b: &mut Restoree, src: &ResolvedPages) -> Result<()> {
    let Some(size) = b.huge_pages.filter(|_| b.p.thp_disable == 0) else { return Ok(()) };
    let ps = cryo_tracer::arch::page_size();
    let all = stretches(&b.p.vmas, src, size, ps);
    // Each stretch: one page touched; each run of adjacent ones: a collapse.
    let mut batch = Batch::new();
    let mut span: Option<(u64, u64)> = None;
    for &at in &all {
        let adjacent = span.is_some_and(|(start, len)| start + len == at);
        let full = !Parasite::fits_counts(batch.len() + 2, batch.data_len());
        if !adjacent || full {
            if let Some((start, len)) = span.take() {
                batch.call_may_fail(Sysno::Madvise, &[start.into(), len.into(), MADV_COLLAPSE.into()]);
            }
        }
        if full {
            b.run("making huge pages for the memory to fill", &batch)?;
            batch = Batch::new();
        }
        batch.call_may_fail(Sysno::Madvise, &[at.into(), ps.into(), MADV_POPULATE_WRITE.into()]);
        span = Some(span.map_or((at, size), |(start, len)| (start, len + size)));
    }
    if let Some((start, len)) = span {
        batch.call_may_fail(Sysno::Madvise, &[start.into(), len.into(), MADV_COLLAPSE.into()]);
    }
    b.run("making huge pages for the memory to fill", &batch)?;
    if !all.is_empty() {
        tracing::debug!(pid = b.p.pid, "{} huge pages asked for", all.len());
    }
    Ok(())
}
