//! When each request is due, fixed before the run starts: the open model. Nothing the
//! server does moves a due time; a slow answer only makes later requests start late.

use std::time::Duration;

/// How arrivals are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced: request i is due at i / rate.
    Uniform,
    /// Exponential gaps (a Poisson process), reproducible from the seed.
    Poisson,
    /// Every request due at once (a flash sale's opening instant).
    Burst,
}

/// The due time of every request, relative to the run's start.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub arrivals: Arrivals,
    pub rate: f64,
    pub count: u64,
    /// Poisson offsets, in nanoseconds (empty for the others).
    offsets: Vec<u64>,
}

impl Schedule {
    /// `rate` requests per second for `duration`.
    pub fn new(arrivals: Arrivals, rate: f64, duration: Duration, seed: u64) -> Schedule {
        let count = (rate * duration.as_secs_f64()).round().max(0.0) as u64;
        let offsets = match arrivals {
            Arrivals::Poisson => {
                let mut rng = SplitMix(seed ^ 0x005e_ed0f_a771_7a15);
                let mut t = 0.0f64;
                (0..count)
                    .map(|_| {
                        let at = t;
                        // Inverse transform of U in (0, 1]: -ln(U) / rate.
                        let u = 1.0 - rng.unit();
                        t += -u.ln() / rate;
                        (at * 1e9) as u64
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Schedule { arrivals, rate, count, offsets }
    }

    /// `count` requests all due at the start.
    pub fn burst(count: u64) -> Schedule {
        Schedule { arrivals: Arrivals::Burst, rate: f64::INFINITY, count, offsets: Vec::new() }
    }

    /// When request `i` is due, or None past the end.
    pub fn due(&self, i: u64) -> Option<Duration> {
        if i >= self.count {
            return None;
        }
        Some(match self.arrivals {
            Arrivals::Uniform => Duration::from_secs_f64(i as f64 / self.rate),
            Arrivals::Poisson => Duration::from_nanos(self.offsets[i as usize]),
            Arrivals::Burst => Duration::ZERO,
        })
    }

    /// How long the schedule offers load (the last due time, or the nominal length).
    pub fn span(&self) -> Duration {
        match self.arrivals {
            Arrivals::Burst => Duration::ZERO,
            _ => Duration::from_secs_f64(self.count as f64 / self.rate),
        }
    }
}

/// A tiny, fast, seedable generator (SplitMix64): deterministic choices per request
/// without shared state.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// A generator for request `i` of a run seeded with `seed`.
    pub fn for_request(seed: u64, i: u64) -> SplitMix {
        SplitMix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_spacing_and_count() {
        let s = Schedule::new(Arrivals::Uniform, 100.0, Duration::from_secs(2), 1);
        assert_eq!(s.count, 200);
        assert_eq!(s.due(0), Some(Duration::ZERO));
        assert_eq!(s.due(50), Some(Duration::from_millis(500)));
        assert_eq!(s.due(200), None);
    }

    #[test]
    fn poisson_is_reproducible_and_keeps_the_mean_rate() {
        let a = Schedule::new(Arrivals::Poisson, 1000.0, Duration::from_secs(10), 7);
        let b = Schedule::new(Arrivals::Poisson, 1000.0, Duration::from_secs(10), 7);
        let c = Schedule::new(Arrivals::Poisson, 1000.0, Duration::from_secs(10), 8);
        assert_eq!(a.offsets, b.offsets);
        assert_ne!(a.offsets, c.offsets);
        let last = a.due(a.count - 1).unwrap().as_secs_f64();
        assert!((last - 10.0).abs() < 0.5, "10 000 arrivals at 1000/s end near 10 s, not {last}");
        assert!(a.offsets.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SplitMix::for_request(1, 2);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
