//! How an upstream picks a target for a request (`balance`):
//!
//! - `round_robin`: smooth weighted round robin, as nginx does it: weights 5,1,1 give
//!   a,a,b,a,c,a,a rather than a,a,a,a,a,b,c, so no target gets a burst of consecutive requests.
//! - `random`: a target drawn at random in proportion to its weight.
//! - `least_requests`: the power of two choices: two targets drawn at random (by weight), the
//!   one with fewer requests in flight per unit of weight wins. It sends less to a slow target
//!   without every worker herding onto the one least loaded a moment ago.
//! - `hash`: weighted rendezvous hashing of a request key (`hash_on`): each target scores the
//!   key, the highest wins, so the same key goes to the same target from every worker and every
//!   instance, and adding or removing one target moves only the keys it gains or held (about
//!   1/N). A request without the key is drawn at random by weight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The balancer of one upstream.
#[derive(Debug)]
pub enum Balancer {
    /// `round_robin`.
    RoundRobin(SmoothWeighted),
    /// `random`.
    Random(WeightedRandom),
    /// `least_requests`.
    LeastRequests(LeastRequests),
    /// `hash`.
    Hash(Rendezvous),
}

impl Balancer {
    /// The next target among those `eligible` accepts, and, for `least_requests`, the mark
    /// that counts the request in flight until it is dropped.
    pub fn pick(
        &self,
        key: Option<&[u8]>,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<(usize, Option<InFlight>)> {
        match self {
            Balancer::RoundRobin(b) => b.pick(eligible).map(|i| (i, None)),
            Balancer::Random(b) => b.pick(eligible).map(|i| (i, None)),
            Balancer::LeastRequests(b) => b.pick(eligible).map(|(i, f)| (i, Some(f))),
            Balancer::Hash(b) => b.pick(key, eligible).map(|i| (i, None)),
        }
    }

    /// `round_robin`, `random` or `least_requests`.
    pub fn label(&self) -> &'static str {
        match self {
            Balancer::RoundRobin(_) => "round_robin",
            Balancer::Random(_) => "random",
            Balancer::LeastRequests(_) => "least_requests",
            Balancer::Hash(_) => "hash",
        }
    }
}

/// Weights of at least 1 (a u32 each, so their sum fits a u64).
fn weights_of(weights: Vec<u32>) -> Vec<u64> {
    weights.into_iter().map(|w| u64::from(w.max(1))).collect()
}

/// Draws an eligible target with probability proportional to its weight.
fn draw(weights: &[u64], eligible: &impl Fn(usize) -> bool) -> Option<usize> {
    let total: u64 = (0..weights.len())
        .filter(|&i| eligible(i))
        .map(|i| weights[i])
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = fastrand::u64(..total);
    for (i, &w) in weights.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    None
}

/// `random`: weighted, no shared state to write.
#[derive(Debug)]
pub struct WeightedRandom {
    weights: Vec<u64>,
}

impl WeightedRandom {
    /// A balancer over targets with these weights (each at least 1).
    pub fn new(weights: Vec<u32>) -> Self {
        WeightedRandom {
            weights: weights_of(weights),
        }
    }

    /// A target drawn among those `eligible` accepts.
    pub fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        draw(&self.weights, &eligible)
    }
}

/// `hash`: weighted rendezvous (highest random weight) hashing.
#[derive(Debug)]
pub struct Rendezvous {
    weights: Vec<u64>,
    /// Each target's identity (its URL): a target keeps its keys whatever its position in the
    /// list, and the same on every instance.
    ids: Vec<Box<[u8]>>,
}

impl Rendezvous {
    /// A balancer over targets named by `ids` with these weights (each at least 1).
    pub fn new(ids: Vec<Box<[u8]>>, weights: Vec<u32>) -> Self {
        Rendezvous {
            weights: weights_of(weights),
            ids,
        }
    }

    /// The target whose score for `key` is highest among those `eligible` accepts; without a
    /// key, one drawn by weight.
    pub fn pick(&self, key: Option<&[u8]>, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let Some(key) = key else {
            return draw(&self.weights, &eligible);
        };
        let mut best: Option<(usize, f64)> = None;
        for (i, id) in self.ids.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            // A fixed (unseeded) hash: every worker and instance must agree.
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            hasher.update(id);
            hasher.update(&[0xff]);
            hasher.update(key);
            let hash = hasher.digest();
            // A uniform value in (0, 1); -w / ln(u) is the weighted rendezvous score.
            let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = -(self.weights[i] as f64) / unit.ln();
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// `least_requests`: the power of two choices over in-flight counts.
#[derive(Debug)]
pub struct LeastRequests {
    weights: Vec<u64>,
    in_flight: Arc<[AtomicUsize]>,
}

/// A request counted in flight at a target until this is dropped.
#[derive(Debug)]
pub struct InFlight {
    counts: Arc<[AtomicUsize]>,
    target: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counts[self.target].fetch_sub(1, Ordering::Relaxed);
    }
}

impl LeastRequests {
    /// A balancer over targets with these weights (each at least 1).
    pub fn new(weights: Vec<u32>) -> Self {
        let weights = weights_of(weights);
        let in_flight = (0..weights.len()).map(|_| AtomicUsize::new(0)).collect();
        LeastRequests { weights, in_flight }
    }

    /// Requests in flight at `target` now.
    pub fn in_flight(&self, target: usize) -> usize {
        self.in_flight[target].load(Ordering::Relaxed)
    }

    /// Of two targets drawn among those `eligible` accepts, the less loaded for its weight,
    /// counted in flight until the returned mark is dropped.
    pub fn pick(&self, eligible: impl Fn(usize) -> bool) -> Option<(usize, InFlight)> {
        let first = draw(&self.weights, &eligible)?;
        let second = draw(&self.weights, &|i| i != first && eligible(i)).unwrap_or(first);
        // load_a / weight_a <= load_b / weight_b, without division.
        let lighter = |a: usize, b: usize| {
            let (la, lb) = (self.in_flight(a) as u128, self.in_flight(b) as u128);
            la * u128::from(self.weights[b]) <= lb * u128::from(self.weights[a])
        };
        let chosen = if lighter(first, second) {
            first
        } else {
            second
        };
        self.in_flight[chosen].fetch_add(1, Ordering::Relaxed);
        Some((
            chosen,
            InFlight {
                counts: Arc::clone(&self.in_flight),
                target: chosen,
            },
        ))
    }
}

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
    fn random_draws_by_weight_and_skips_ineligible_targets() {
        fastrand::seed(7);
        let b = WeightedRandom::new(vec![1, 1, 2]);
        let mut counts = [0usize; 3];
        for _ in 0..40_000 {
            counts[b.pick(|_| true).unwrap()] += 1;
        }
        // Expected 10k, 10k, 20k; a sixth off would be dozens of standard deviations.
        assert!((8_500..11_500).contains(&counts[0]), "{counts:?}");
        assert!((8_500..11_500).contains(&counts[1]), "{counts:?}");
        assert!((18_000..22_000).contains(&counts[2]), "{counts:?}");
        assert!((0..100).all(|_| b.pick(|i| i != 2) != Some(2)));
        assert_eq!(b.pick(|_| false), None);
    }

    #[test]
    fn least_requests_prefers_the_less_loaded_for_its_weight() {
        let b = LeastRequests::new(vec![1, 1]);
        // Hold marks on target 0: with two targets both are always compared.
        let (first, held) = b.pick(|_| true).unwrap();
        let other = 1 - first;
        for _ in 0..10 {
            let (i, mark) = b.pick(|_| true).unwrap();
            assert_eq!(i, other, "the idle target wins");
            drop(mark);
        }
        assert_eq!(b.in_flight(first), 1);
        drop(held);
        assert_eq!(b.in_flight(first), 0, "a dropped mark leaves the count");
        // Weight counts: 2 in flight at weight 4 is lighter than 1 at weight 1.
        let w = LeastRequests::new(vec![4, 1]);
        w.in_flight[0].store(2, Ordering::Relaxed);
        w.in_flight[1].store(1, Ordering::Relaxed);
        let (i, _mark) = w.pick(|_| true).unwrap();
        assert_eq!(i, 0);
        // One eligible target is picked whatever its load.
        let (i, _mark2) = w.pick(|i| i == 1).unwrap();
        assert_eq!(i, 1);
        assert!(w.pick(|_| false).is_none());
    }

    #[test]
    fn rendezvous_keeps_keys_on_their_target_and_moves_few_when_one_goes() {
        let ids = |n: usize| -> Vec<Box<[u8]>> {
            (0..n)
                .map(|i| {
                    format!("http://10.0.0.{i}:80")
                        .into_bytes()
                        .into_boxed_slice()
                })
                .collect()
        };
        let four = Rendezvous::new(ids(4), vec![1; 4]);
        let keys: Vec<String> = (0..4_000).map(|k| format!("user-{k}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| four.pick(Some(k.as_bytes()), |_| true).unwrap())
            .collect();
        // Stable: the same key, the same target.
        for (k, &t) in keys.iter().zip(&before).take(100) {
            assert_eq!(four.pick(Some(k.as_bytes()), |_| true), Some(t));
        }
        // Spread: each of 4 targets gets about a quarter.
        for t in 0..4 {
            let n = before.iter().filter(|&&b| b == t).count();
            assert!((800..1_200).contains(&n), "target {t}: {n}");
        }
        // Target 3 removed: only its keys move.
        let three = Rendezvous::new(ids(3), vec![1; 3]);
        for (k, &t) in keys.iter().zip(&before) {
            let now = three.pick(Some(k.as_bytes()), |_| true).unwrap();
            if t != 3 {
                assert_eq!(now, t, "{k} moved off a target that stayed");
            }
        }
        // Ineligible targets are passed over like removed ones.
        for (k, &t) in keys.iter().zip(&before).take(500) {
            let now = four.pick(Some(k.as_bytes()), |i| i != 3).unwrap();
            assert!(now != 3 && (t == 3 || now == t));
        }
        // Weights: a target of weight 3 among ones of weight 1 gets about half of 6 shares.
        let weighted = Rendezvous::new(ids(4), vec![3, 1, 1, 1]);
        let heavy = keys
            .iter()
            .filter(|k| weighted.pick(Some(k.as_bytes()), |_| true) == Some(0))
            .count();
        assert!((1_700..2_300).contains(&heavy), "{heavy}");
        assert!(
            four.pick(None, |_| true).is_some(),
            "no key: drawn by weight"
        );
        assert_eq!(four.pick(Some(b"k"), |_| false), None);
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
