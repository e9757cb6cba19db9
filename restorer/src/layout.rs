//! Where the blob goes while a process is rebuilt: a range free both in the
//! address space being replaced and in the one being restored.

use cryo_image::Vma;

/// Lowest address considered; far above mmap_min_addr and typical non-PIE
/// program addresses, and within a 32-bit address space.
const SEARCH_FROM: u64 = 0x1000_0000;

pub fn free_area(current: &[Vma], target: &[Vma], size: u64, limit: u64) -> Option<u64> {
    let mut taken: Vec<(u64, u64)> = current.iter().chain(target).map(|v| (v.start, v.end)).collect();
    taken.sort_unstable();
    // Leave a guard page on each side, so a stack growing down never meets the blob.
    let guard = cryo_tracer::arch::page_size();
    let size = size + 2 * guard;
    let mut cand = SEARCH_FROM;
    for (s, e) in taken {
        if e <= cand {
            continue;
        }
        if s >= cand && s - cand >= size {
            break;
        }
        cand = cand.max(e);
    }
    (cand + size <= limit).then_some(cand + guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_image::VmaKind;

    fn vma(start: u64, end: u64) -> Vma {
        Vma { start, end, prot: 0, shared: false, kind: VmaKind::Anon, offset: 0, dev: 0, inode: 0, name: String::new(), vmflags: vec![] }
    }

    #[test]
    fn finds_a_gap_free_in_both() {
        let a = [vma(0x1000_0000, 0x1000_5000)];
        let b = [vma(0x1000_6000, 0x1001_0000)];
        let at = free_area(&a, &b, 0x2000, 1 << 47).unwrap();
        assert!(at >= 0x1001_0000 + 4096);
        let big_gap = [vma(0x1000_0000, 0x1000_1000), vma(0x2000_0000, 0x2000_1000)];
        assert_eq!(free_area(&big_gap, &[], 0x2000, 1 << 47), Some(0x1000_1000 + 4096));
        assert_eq!(free_area(&[vma(0x1000_0000, 0xffff_f000)], &[], 0x10000, 1 << 32), None);
    }
}
