//! Sorted, disjoint address ranges, and runs of pages cut along them: which
//! pages a lazy restart leaves for later, which ones cryo copies into place,
//! which pages an incremental checkpoint finds unchanged.

use crate::chain::SourceRun;

/// Whether `addr` lies in one of the sorted, disjoint `ranges`, and where
/// that next changes.
pub fn locate(ranges: &[(u64, u64)], addr: u64) -> (bool, u64) {
    let i = ranges.partition_point(|r| r.1 <= addr);
    match ranges.get(i) {
        Some(r) if r.0 <= addr => (true, r.1),
        Some(r) => (false, r.0),
        None => (false, u64::MAX),
    }
}

/// Page-aligned, sorted, merged.
pub fn normalized(mut ranges: Vec<(u64, u64)>, ps: u64) -> Vec<(u64, u64)> {
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
pub fn cut<'r>(runs: impl IntoIterator<Item = &'r SourceRun>, ranges: &[(u64, u64)], ps: u64) -> (Vec<SourceRun>, Vec<SourceRun>) {
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

/// Those of `ranges` (normalized) in which one of `runs` starts.
pub fn holding(ranges: &[(u64, u64)], runs: &[SourceRun]) -> Vec<(u64, u64)> {
    let mut used = vec![false; ranges.len()];
    for r in runs {
        let i = ranges.partition_point(|a| a.1 <= r.vaddr);
        if ranges.get(i).is_some_and(|a| a.0 <= r.vaddr) {
            used[i] = true;
        }
    }
    ranges.iter().zip(used).filter(|(_, u)| *u).map(|(a, _)| *a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vaddr: u64, npages: u64, file_offset: u64) -> SourceRun {
        SourceRun { vaddr, npages, file: 0, file_offset }
    }

    /// A run across two ranges and the gap between them: cut at each edge,
    /// its file offsets following its addresses.
    #[test]
    fn runs_are_cut_at_the_edges_of_ranges() {
        let ps = 0x1000;
        let ranges = normalized(vec![(0x5000, 0x8000), (0x1800, 0x3000)], ps);
        assert_eq!(ranges, vec![(0x1000, 0x3000), (0x5000, 0x8000)]);
        let runs = [run(0x2000, 7, 0x10000), run(0x9000, 1, 0)];
        let (inside, outside) = cut(&runs, &ranges, ps);
        let view = |v: &[SourceRun]| v.iter().map(|r| (r.vaddr, r.npages, r.file_offset)).collect::<Vec<_>>();
        assert_eq!(view(&inside), vec![(0x2000, 1, 0x10000), (0x5000, 3, 0x13000)]);
        assert_eq!(view(&outside), vec![(0x3000, 2, 0x11000), (0x8000, 1, 0x16000), (0x9000, 1, 0)]);
        assert_eq!(holding(&ranges, &inside[1..]), vec![(0x5000, 0x8000)]);
        assert_eq!(holding(&ranges, &outside), Vec::<(u64, u64)>::new());
    }
}
