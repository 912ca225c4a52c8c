//! Smooth weighted round robin, as nginx does it: weights 5,1,1 give a,a,b,a,c,a,a rather than
//! a,a,a,a,a,b,c, so no target gets a burst of consecutive requests.

use std::sync::Mutex;

/// Picks targets in proportion to their weights, interleaved as evenly as possible.
#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Vec<i64>,
    // The running "current weight" per target. A short critical section per request (a few
    // additions) is cheaper and simpler than a lock-free scheme, and the lock is per upstream.
    current: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    /// A balancer over targets with these weights (each at least 1).
    pub fn new(weights: Vec<u32>) -> Self {
        let weights: Vec<i64> = weights.into_iter().map(|w| i64::from(w.max(1))).collect();
        let current = Mutex::new(vec![0; weights.len()]);
        SmoothWeighted { weights, current }
    }

    /// The next target among those `eligible` accepts, or `None` when it accepts none.
    pub fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if self.weights.len() == 1 {
            return eligible(0).then_some(0);
        }
        // A poisoned lock only means another request panicked mid-pick; the weights are
        // still usable numbers, so keep balancing rather than failing every request.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0;
        let mut best: Option<usize> = None;
        for (i, weight) in self.weights.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            current[i] += weight;
            total += weight;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: Vec<u32>, n: usize) -> Vec<usize> {
        let b = SmoothWeighted::new(weights);
        (0..n).map(|_| b.pick(|_| true).unwrap()).collect()
    }

    #[test]
    fn interleaves_smoothly() {
        assert_eq!(sequence(vec![5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(sequence(vec![1, 2], 6), vec![1, 0, 1, 1, 0, 1]);
        assert_eq!(sequence(vec![1, 1, 1], 6), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn shares_match_weights_and_no_long_runs() {
        let seq = sequence(vec![3, 1], 400);
        let zeros = seq.iter().filter(|&&i| i == 0).count();
        assert_eq!(zeros, 300);
        let longest_run = seq
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap();
        assert!(longest_run <= 3, "run of {longest_run}");
    }

    #[test]
    fn skips_ineligible_targets() {
        let b = SmoothWeighted::new(vec![1, 1, 1]);
        let picks: Vec<_> = (0..4).map(|_| b.pick(|i| i != 1).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2);
        assert_eq!(b.pick(|_| false), None);
        let single = SmoothWeighted::new(vec![4]);
        assert_eq!(single.pick(|_| true), Some(0));
        assert_eq!(single.pick(|_| false), None);
    }
}
