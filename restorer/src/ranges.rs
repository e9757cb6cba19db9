//! Sorted, disjoint address ranges, and runs of pages cut along them: which
//! pages a lazy restart leaves for later, which ones cryo copies into place.

use cryo_image::chain::SourceRun;

/// Whether `addr` lies in one of the sorted, disjoint `ranges`, and where
/// that next changes.
pub(crate) fn locate(ranges: &[(u64, u64)], addr: u64) -> (bool, u64) {
    let i = ranges.partition_point(|r| r.1 <= addr);
    match ranges.get(i) {
        Some(r) if r.0 <= addr => (true, r.1),
        Some(r) => (false, r.0),
        None => (false, u64::MAX),
    }
}

/// Page-aligned, sorted, merged.
pub(crate) fn normalized(mut ranges: Vec<(u64, u64)>, ps: u64) -> Vec<(u64, u64)> {
    for r in &mut ranges {
        *r = (r.0 & !(ps - 1), r.1.saturating_add(ps - 1) & !(ps - 1));
    }
    ranges.retain(|r| r.1 > r.0);
    ranges.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if r.0 <= l.1 => l.1 = l.1.max(r.1),
            _ => out.push(r),
        }
    }
    out
}

/// `runs` cut where `ranges` (normalized) begin and end: the pieces inside
/// them, and those outside, each in the order of `runs`.
pub(crate) fn cut<'r>(runs: impl IntoIterator<Item = &'r SourceRun>, ranges: &[(u64, u64)], ps: u64) -> (Vec<SourceRun>, Vec<SourceRun>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for r in runs {
        let end = r.vaddr + r.npages * ps;
        let mut at = r.vaddr;
        while at < end {
            let (within, edge) = locate(ranges, at);
            let to = end.min(edge);
            let piece = SourceRun { vaddr: at, npages: (to - at) / ps, file: r.file, file_offset: r.file_offset + (at - r.vaddr) };
            if within { &mut inside } else { &mut outside }.push(piece);
            at = to;
        }
    }
    (inside, outside)
}
