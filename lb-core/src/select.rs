//! Weighted round robin, prebuilt.
//!
//! The sequence of picks is computed once per snapshot with nginx's smooth
//! weighted round robin, so picks interleave (3:1 gives `a a b a`, never long
//! runs) and each pick at run time is one atomic increment and one index: O(1)
//! and allocation-free. The counter lives in an `Arc` that a new snapshot takes
//! over when the candidate set is unchanged, so the position survives reloads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest sequence kept for a small table; larger weight sums are scaled
/// down proportionally to [`sequence_budget`].
pub const MAX_SEQUENCE: u64 = 8192;

/// Slots per candidate a large table's sequence may hold: weights of one
/// to sixteen keep their exact ratios whatever the number of endpoints.
pub const SLOTS_PER_CANDIDATE: u64 = 16;

/// The longest sequence for `candidates` candidates: [`MAX_SEQUENCE`], or
/// [`SLOTS_PER_CANDIDATE`] each when that is more. A fixed cap would let a
/// large table's weights collapse: 10,000 endpoints of weights 1 and 3 (a
/// sum of 20,000) scaled to 8,192 slots all became 1, and the service
/// silently balanced evenly.
pub fn sequence_budget(candidates: usize) -> u64 {
    MAX_SEQUENCE.max(SLOTS_PER_CANDIDATE.saturating_mul(candidates as u64))
}

/// The most steps (sequence length × candidates) spent on nginx's smooth
/// weighted round robin; a larger table is interleaved by [`stride`].
const SMOOTH_STEPS: u64 = 1 << 24;

/// nginx's smooth weighted round robin: each step every candidate gains its
/// weight and the richest is picked and pays the total; `total` steps.
fn smooth(candidates: &[u32], weights: &[u64], total: u64) -> Vec<u32> {
    let total = total as i64;
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, w) in weights.iter().enumerate() {
            current[k] += *w as i64;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        sequence.push(candidates[best]);
    }
    sequence
}

/// Stride scheduling, for tables too large for [`smooth`]: candidate `k`'s
/// `j`-th pick falls at time `(j + φₖ) / wₖ` of the cycle, where the phase
/// `φₖ` in [0, 1) spreads the candidates (a golden-ratio step, so equal
/// weights do not all fall at once), and the picks are sorted by time (ties
/// in candidate order). Every candidate gets exactly its weight's share of
/// the cycle, evenly spaced; sorting costs `total · log total` rather than
/// `total × candidates`.
fn stride(candidates: &[u32], weights: &[u64]) -> Vec<u32> {
    const ONE: u64 = 1 << 16;
    let mut picks: Vec<(u64, u64, usize)> = Vec::new();
    for (k, w) in weights.iter().enumerate() {
        let phase = (k as u64).wrapping_mul(40_503) % ONE;
        picks.extend((0..*w).map(|j| (j * ONE + phase, w * ONE, k)));
    }
    // a/b < c/d ⇔ a·d < c·b, in 128 bits: a weight may be as large as the
    // sequence budget (2²⁵ at two million endpoints).
    picks.sort_by(|x, y| {
        (u128::from(x.0) * u128::from(y.1))
            .cmp(&(u128::from(y.0) * u128::from(x.1)))
            .then(x.2.cmp(&y.2))
    });
    picks.into_iter().map(|(_, _, k)| candidates[k]).collect()
}

/// The prebuilt weighted sequence over candidate endpoints.
#[derive(Debug, Clone)]
pub struct WeightedTable {
    /// Endpoint indices (into the service port's endpoint list) that may take new
    /// connections, in endpoint order; failover walks this list.
    candidates: Vec<u32>,
    /// The pick sequence, endpoint indices.
    sequence: Vec<u32>,
    /// Shared position; survives snapshot swaps for an unchanged candidate set.
    cursor: Arc<AtomicUsize>,
    /// Bit `i` set when endpoint `i` (< 64) is a candidate: an affinity hit
    /// asks [`WeightedTable::is_candidate`] on every pick, and a bit test is
    /// cheaper than the binary search that larger indices still take.
    small: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl WeightedTable {
    /// Builds the table for `(endpoint index, weight)` pairs; weight 0 entries are
    /// not candidates. `cursor` is the position to continue from (a new one
    /// when `None`).
    pub fn new(weighted: &[(u32, u32)], cursor: Option<Arc<AtomicUsize>>) -> Self {
        let live: Vec<(u32, u64)> = weighted
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|&(i, w)| (i, u64::from(w)))
            .collect();
        let candidates: Vec<u32> = live.iter().map(|(i, _)| *i).collect();
        let divisor = live.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
        let mut weights: Vec<u64> = live.iter().map(|(_, w)| w / divisor).collect();
        let sum: u64 = weights.iter().sum();
        let budget = sequence_budget(weights.len());
        if sum > budget {
            for w in &mut weights {
                // Every live endpoint keeps at least one slot.
                let scaled = u128::from(*w) * u128::from(budget) / u128::from(sum);
                *w = u64::try_from(scaled).unwrap_or(budget).max(1);
            }
        }
        let total: u64 = weights.iter().sum();
        let sequence = if weights.windows(2).all(|w| w[0] == w[1]) {
            // Equal weights: smooth weighted round robin visits the
            // candidates once each, in order; this is that sequence without
            // its n² steps (100,000 endpoints took 6 s to build).
            candidates.clone()
        } else if total.saturating_mul(weights.len() as u64) > SMOOTH_STEPS {
            stride(&candidates, &weights)
        } else {
            smooth(&candidates, &weights, total)
        };
        let small = candidates
            .iter()
            .filter(|&&i| i < 64)
            .fold(0u64, |bits, &i| bits | (1 << i));
        WeightedTable {
            candidates,
            sequence,
            cursor: cursor.unwrap_or_default(),
            small,
        }
    }

    /// Whether no endpoint may take new connections.
    pub fn is_empty(&self) -> bool {
        self.sequence.is_empty()
    }

    /// The next endpoint index by weight, or `None` when there is no candidate.
    #[inline]
    pub fn next(&self) -> Option<usize> {
        if self.sequence.is_empty() {
            return None;
        }
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        Some(self.sequence[n % self.sequence.len()] as usize)
    }

    /// The candidate after endpoint `index` in endpoint order (wrapping), for a
    /// dial that failed: failover cycles through every candidate in turn.
    pub fn after(&self, index: usize) -> Option<usize> {
        if self.candidates.is_empty() {
            return None;
        }
        let pos = match self.candidates.binary_search(&(index as u32)) {
            Ok(p) => p + 1,
            Err(p) => p,
        };
        Some(self.candidates[pos % self.candidates.len()] as usize)
    }

    /// Whether endpoint `index` may take new connections.
    #[inline]
    pub fn is_candidate(&self, index: usize) -> bool {
        if index < 64 {
            return self.small & (1 << index) != 0;
        }
        u32::try_from(index).is_ok_and(|i| self.candidates.binary_search(&i).is_ok())
    }

    /// Candidate endpoint indices in order.
    pub fn candidates(&self) -> &[u32] {
        &self.candidates
    }

    /// The shared position, for a later snapshot to continue from.
    pub fn cursor(&self) -> Arc<AtomicUsize> {
        self.cursor.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(t: &WeightedTable, n: usize, endpoints: usize) -> Vec<usize> {
        let mut c = vec![0; endpoints];
        for _ in 0..n {
            c[t.next().unwrap()] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_cycle_without_repeats() {
        let t = WeightedTable::new(&[(0, 1), (1, 1), (2, 1)], None);
        let picks: Vec<usize> = (0..30).map(|_| t.next().unwrap()).collect();
        assert!(picks.windows(2).all(|w| w[0] != w[1]));
        assert_eq!(counts(&t, 30, 3), vec![10, 10, 10]);
    }

    #[test]
    fn three_to_one_interleaves() {
        let t = WeightedTable::new(&[(0, 3), (1, 1)], None);
        assert_eq!(counts(&t, 400, 2), vec![300, 100]);
        let t = WeightedTable::new(&[(0, 3), (1, 1)], None);
        let picks: Vec<usize> = (0..4).map(|_| t.next().unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 1);
    }

    #[test]
    fn weight_zero_is_never_picked_nor_failed_over_to() {
        let t = WeightedTable::new(&[(0, 1), (1, 0), (2, 1)], None);
        assert_eq!(counts(&t, 10, 3)[1], 0);
        assert_eq!(t.after(0), Some(2));
        assert_eq!(t.after(2), Some(0));
        assert_eq!(t.after(1), Some(2));
    }

    #[test]
    fn empty_table_picks_nothing() {
        let t = WeightedTable::new(&[(0, 0)], None);
        assert!(t.is_empty());
        assert_eq!(t.next(), None);
        assert_eq!(t.after(0), None);
    }

    #[test]
    fn position_continues_with_a_shared_cursor() {
        let a = WeightedTable::new(&[(0, 1), (1, 1), (2, 1)], None);
        assert_eq!(a.next(), Some(0));
        let b = WeightedTable::new(&[(0, 1), (1, 1), (2, 1)], Some(a.cursor()));
        assert_eq!(b.next(), Some(1));
    }

    #[test]
    fn equal_weights_give_every_candidate_one_turn_in_order() {
        let pairs: Vec<(u32, u32)> = (0..100_000).map(|i| (i, 3)).collect();
        let t = WeightedTable::new(&pairs, None);
        let expected: Vec<u32> = (0..100_000).collect();
        assert_eq!(t.sequence, expected);
        // The same as smooth weighted round robin gives, on a small table.
        let small = [2u64; 5];
        assert_eq!(smooth(&[0, 1, 2, 3, 4], &small, 10)[..5], [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_table_too_large_for_smooth_round_robin_keeps_every_share_spread() {
        // 5,000 endpoints of weights 1 and 2: 7,500 picks (under
        // MAX_SEQUENCE, so not scaled), 37.5 million smooth steps: strided.
        let n = 5_000usize;
        let pairs: Vec<(u32, u32)> = (0..n as u32).map(|i| (i, 1 + i % 2)).collect();
        let t = WeightedTable::new(&pairs, None);
        assert_eq!(t.sequence.len(), 7_500);
        let mut seen = vec![Vec::new(); n];
        for (pos, e) in t.sequence.iter().enumerate() {
            seen[*e as usize].push(pos);
        }
        for (i, picks) in seen.iter().enumerate() {
            assert_eq!(picks.len(), 1 + i % 2, "endpoint {i}: its weight's share");
            if let [a, b] = picks[..] {
                // Half a cycle apart, give or take the endpoints whose
                // picks fall between (a fraction of a pick each).
                let gap = b - a;
                assert!((3_000..=4_500).contains(&gap), "endpoint {i}: gap {gap}");
            }
        }
        // The light endpoints are spread among the heavy ones, not sent as
        // one block: about 4/9 of neighbours are two heavy ones when mixed.
        let heavy_pairs = t
            .sequence
            .windows(2)
            .filter(|w| w[0] % 2 == 1 && w[1] % 2 == 1)
            .count();
        assert!(
            heavy_pairs < t.sequence.len() * 6 / 10,
            "{heavy_pairs} heavy pairs"
        );
    }

    #[test]
    fn many_endpoints_keep_their_weights_ratio() {
        // 10,000 endpoints of weights 1 and 3: a sum of 20,000, past the
        // small-table cap of 8,192, under the budget of 16 slots each: exact.
        let n = 10_000usize;
        let pairs: Vec<(u32, u32)> = (0..n as u32).map(|i| (i, 1 + 2 * (i % 2))).collect();
        let t = WeightedTable::new(&pairs, None);
        assert_eq!(t.sequence.len(), 20_000);
        let c = counts(&t, t.sequence.len(), n);
        for (i, picks) in c.iter().enumerate() {
            assert_eq!(*picks, 1 + 2 * (i % 2), "endpoint {i}");
        }
    }

    #[test]
    fn weights_past_the_budget_scale_and_keep_every_endpoint() {
        // Two endpoints of 1 and a billion: the budget (8,192) cannot hold
        // the ratio, but both stay live and the heavy one takes the rest.
        let t = WeightedTable::new(&[(0, 1), (1, 1_000_000_000)], None);
        assert!(t.sequence.len() as u64 <= MAX_SEQUENCE + 2);
        let c = counts(&t, t.sequence.len(), 2);
        assert_eq!(c[0], 1);
        assert!(c[1] >= 8_000, "{c:?}");
    }

    proptest! {
        #[test]
        fn shares_follow_weights(weights in proptest::collection::vec(0u32..20, 1..8), rounds in 1usize..4) {
            let pairs: Vec<(u32, u32)> = weights.iter().enumerate().map(|(i, w)| (i as u32, *w)).collect();
            let t = WeightedTable::new(&pairs, None);
            let sum: u32 = weights.iter().sum();
            if sum == 0 {
                prop_assert!(t.next().is_none());
                return Ok(());
            }
            let g = weights.iter().fold(0u64, |g, w| gcd(g, *w as u64));
            let period = (sum as u64 / g) as usize;
            let c = counts(&t, period * rounds, weights.len());
            for (i, w) in weights.iter().enumerate() {
                prop_assert_eq!(c[i] as u64, (*w as u64 / g) * rounds as u64);
            }
        }

        #[test]
        fn large_weights_stay_proportional(weights in proptest::collection::vec(1u32..1_000_000, 2..6)) {
            let pairs: Vec<(u32, u32)> = weights.iter().enumerate().map(|(i, w)| (i as u32, *w)).collect();
            let t = WeightedTable::new(&pairs, None);
            prop_assert!(t.sequence.len() as u64 <= MAX_SEQUENCE + weights.len() as u64);
            let n = t.sequence.len() * 3;
            let c = counts(&t, n, weights.len());
            let sum: f64 = weights.iter().map(|w| *w as f64).sum();
            for (i, w) in weights.iter().enumerate() {
                let expected = *w as f64 / sum;
                let got = c[i] as f64 / n as f64;
                prop_assert!((expected - got).abs() < 0.01 || c[i] >= 3, "share {got} vs {expected}");
            }
        }
    }
}
