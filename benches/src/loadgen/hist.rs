//! Run statistics of one load-generator run: operations, payload bytes and per-operation
//! latencies (kept whole, sorted once for the percentiles; a 10 s run at 100,000 ops/s is
//! 8 MB of samples, cheaper than a histogram's rounding arguments).

use std::time::Duration;

/// What the connections of one run measured inside the timed window.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    /// Operations that finished inside the window.
    pub ops: u64,
    /// Payload bytes those operations moved (read or written file data, directory data).
    pub bytes: u64,
    /// Extra items counted by the mix (directory entries for `readdir`).
    pub items: u64,
    /// Latency of each finished operation, nanoseconds.
    pub lat_ns: Vec<u64>,
    /// Length of the window.
    pub window: Duration,
    /// How the mix had to adapt to the server, if it did.
    pub note: Option<&'static str>,
}

impl RunStats {
    /// Adds another connection's counts (same window).
    pub fn merge(&mut self, other: RunStats) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.items += other.items;
        self.lat_ns.extend(other.lat_ns);
        self.note = self.note.or(other.note);
    }

    /// Operations per second.
    pub fn ops_per_s(&self) -> f64 {
        per_s(self.ops as f64, self.window)
    }

    /// Payload megabytes (10^6 B) per second.
    pub fn mb_per_s(&self) -> f64 {
        per_s(self.bytes as f64 / 1e6, self.window)
    }

    /// Items per second.
    pub fn items_per_s(&self) -> f64 {
        per_s(self.items as f64, self.window)
    }

    /// Latency percentiles p50, p99, p99.9 in microseconds (sorts the samples).
    pub fn percentiles_us(&mut self) -> [f64; 3] {
        self.lat_ns.sort_unstable();
        [0.50, 0.99, 0.999].map(|q| percentile(&self.lat_ns, q) as f64 / 1e3)
    }
}

fn per_s(v: f64, window: Duration) -> f64 {
    let s = window.as_secs_f64();
    if s > 0.0 {
        v / s
    } else {
        0.0
    }
}

/// Nearest-rank percentile of sorted samples (0 for none).
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_hundred_samples_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 0.999), 100);
    }

    #[test]
    fn percentile_empty_zero() {
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn rates_one_second_window_counts() {
        let s = RunStats {
            ops: 10,
            bytes: 3_000_000,
            items: 4,
            lat_ns: vec![],
            window: Duration::from_secs(2),
            note: None,
        };
        assert_eq!(s.ops_per_s(), 5.0);
        assert_eq!(s.mb_per_s(), 1.5);
        assert_eq!(s.items_per_s(), 2.0);
    }
}
