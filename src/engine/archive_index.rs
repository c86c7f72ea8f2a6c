//! One channel's archive index: its finished segments by wall-clock time. Pure: the files
//! are named after their entries, so the index is rebuilt from a folder listing after a
//! restart, and a request reaches a file only through an entry found here.

use std::collections::VecDeque;

/// One finished archive segment: the channel's MPEG-TS from a keyframe on, PAT + PMT
/// first, so any segment plays on its own and consecutive ones join without a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Wall-clock start, Unix milliseconds.
    pub start_ms: i64,
    pub dur_ms: u32,
    pub bytes: u64,
    /// The output restarted, or data was lost, just before it.
    pub discontinuity: bool,
}

impl Entry {
    pub fn end_ms(&self) -> i64 {
        self.start_ms + i64::from(self.dur_ms)
    }

    /// Its file name: `<start ms>-<duration ms>.ts`, `-d` before `.ts` after a
    /// discontinuity.
    pub fn file_name(&self) -> String {
        let d = if self.discontinuity { "-d" } else { "" };
        format!("{}-{}{d}.ts", self.start_ms, self.dur_ms)
    }

    /// The entry a file name stands for (its size comes from the file); None for any
    /// other name.
    pub fn parse(name: &str) -> Option<Entry> {
        let stem = name.strip_suffix(".ts")?;
        let (stem, discontinuity) = match stem.strip_suffix("-d") {
            Some(s) => (s, true),
            None => (stem, false),
        };
        let (start, dur) = stem.split_once('-')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(start) || !digits(dur) {
            return None;
        }
        Some(Entry {
            start_ms: start.parse().ok()?,
            dur_ms: dur.parse().ok()?,
            bytes: 0,
            discontinuity,
        })
    }
}

/// A channel's finished segments in time order.
#[derive(Debug, Default)]
pub struct Index {
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl Index {
    /// An index of these entries (any order; a duplicate start keeps the first).
    pub fn from_entries(mut entries: Vec<Entry>) -> Index {
        entries.sort_by_key(|e| e.start_ms);
        entries.dedup_by_key(|e| e.start_ms);
        let bytes = entries.iter().map(|e| e.bytes).sum();
        Index {
            entries: entries.into(),
            bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn first(&self) -> Option<&Entry> {
        self.entries.front()
    }

    pub fn last(&self) -> Option<&Entry> {
        self.entries.back()
    }

    /// The archived span, Unix milliseconds (start of the first, end of the last).
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((self.first()?.start_ms, self.last()?.end_ms()))
    }

    /// Adds a segment after the others (one that would start before the last's start is
    /// refused: the clock went back; the caller names it after the last's end instead).
    pub fn push(&mut self, e: Entry) -> bool {
        if self.last().is_some_and(|l| e.start_ms <= l.start_ms) {
            return false;
        }
        self.bytes += e.bytes;
        self.entries.push_back(e);
        true
    }

    /// Removes the oldest segment.
    pub fn pop_oldest(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.bytes;
        Some(e)
    }

    /// The segment starting exactly at `start_ms`.
    pub fn find(&self, start_ms: i64) -> Option<Entry> {
        let i = self.entries.partition_point(|e| e.start_ms < start_ms);
        self.entries
            .get(i)
            .filter(|e| e.start_ms == start_ms)
            .copied()
    }

    /// The segments a window `[start, end)` (Unix ms) touches: from the one that holds
    /// `start` (or the first after it, when `start` falls in a gap or before the archive)
    /// to the last that starts before `end`.
    pub fn window(&self, start_ms: i64, end_ms: i64) -> Vec<Entry> {
        let from = self.entries.partition_point(|e| e.end_ms() <= start_ms);
        self.entries
            .iter()
            .skip(from)
            .take_while(|e| e.start_ms < end_ms)
            .copied()
            .collect()
    }

    /// The first segment that starts after `start_ms` (the one a reader that follows the
    /// archive reads next).
    pub fn after(&self, start_ms: i64) -> Option<Entry> {
        let i = self.entries.partition_point(|e| e.start_ms <= start_ms);
        self.entries.get(i).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start_ms: i64, dur_ms: u32) -> Entry {
        Entry {
            start_ms,
            dur_ms,
            bytes: 100,
            discontinuity: false,
        }
    }

    #[test]
    fn file_names_round_trip_and_nothing_else_parses() {
        let a = Entry {
            discontinuity: true,
            bytes: 0,
            ..e(1_764_000_000_123, 6_040)
        };
        assert_eq!(a.file_name(), "1764000000123-6040-d.ts");
        assert_eq!(Entry::parse(&a.file_name()), Some(a));
        let b = Entry {
            bytes: 0,
            ..e(5, 6)
        };
        assert_eq!(Entry::parse("5-6.ts"), Some(b));
        for bad in [
            "5-6.ts.part",
            "5.part",
            "../5-6.ts",
            "5-6-x.ts",
            "-6.ts",
            "5-.ts",
            "5-6",
            "a-6.ts",
            "5--6.ts",
            "1234567890123456-1.ts",
        ] {
            assert_eq!(Entry::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn windows_start_at_the_segment_holding_start_and_gaps_are_skipped() {
        let mut ix = Index::default();
        for (s, d) in [(0, 6000), (6000, 6000), (12000, 6000), (30000, 6000)] {
            assert!(ix.push(e(s, d)));
        }
        assert!(!ix.push(e(30000, 10)), "a start that does not move on");
        let starts = |v: Vec<Entry>| v.iter().map(|e| e.start_ms).collect::<Vec<_>>();
        assert_eq!(starts(ix.window(7000, 13000)), [6000, 12000]);
        assert_eq!(starts(ix.window(6000, 12000)), [6000], "end is exclusive");
        assert_eq!(starts(ix.window(19000, 31000)), [30000], "a start in a gap");
        assert_eq!(starts(ix.window(-5000, 1)), [0]);
        assert!(ix.window(36000, 40000).is_empty());
        assert!(ix.window(18000, 30000).is_empty(), "the gap alone");
        assert_eq!(ix.span(), Some((0, 36000)));
        assert_eq!(ix.after(6000).map(|e| e.start_ms), Some(12000));
        assert_eq!(ix.after(5999).map(|e| e.start_ms), Some(6000));
        assert_eq!(ix.after(30000), None);
        assert_eq!(ix.find(12000).map(|e| e.dur_ms), Some(6000));
        assert_eq!(ix.find(12001), None);
        assert_eq!(ix.bytes(), 400);
        assert_eq!(ix.pop_oldest().map(|e| e.start_ms), Some(0));
        assert_eq!(ix.bytes(), 300);
    }

    #[test]
    fn a_rebuilt_index_is_sorted_without_duplicates() {
        let ix = Index::from_entries(vec![e(12000, 1), e(0, 1), e(6000, 1), e(0, 2)]);
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.first().map(|e| e.dur_ms), Some(1));
        assert_eq!(ix.bytes(), 300);
    }

    #[test]
    fn a_day_of_six_second_segments_fits_in_well_under_a_megabyte() {
        // 24 h at 6 s: 14,400 entries.
        assert!(std::mem::size_of::<Entry>() * 14_400 < 512 * 1024);
    }
}
