//! Per-operation request counters and latency histograms, updated by every worker without a
//! lock.
//!
//! The worker loop ([`crate::server`]) times each request from the moment a worker takes it
//! until its reply is queued, and calls [`OpStats::record`]. Tversion and Tflush never reach
//! a worker (the connection's reader answers them) and are not counted.
//!
//! # Layout
//!
//! One [`OpHist`] per 9P request type, indexed by `type / 2` (every T-message type is even
//! and below 128, so 64 slots cover 9P2000, .u and .L). Each holds a request count, an error
//! count, the sum of latencies and [`BUCKETS`] atomic bucket counters:
//!
//! ```text
//! latency v (ns)   bucket
//! 0..=3            v                         (exact)
//! 2^e ..< 2^(e+1)  4*(e-1) + ((v >> (e-2)) & 3)   for 2 <= e <= MAX_EXP
//! ```
//!
//! That is, four buckets per power of two (at most 25% wide: "HDR with two bits of
//! precision"), up to 2^48 ns (78 hours); longer requests land in one overflow bucket. A
//! percentile is reported as the upper bound of the bucket it falls in, so p99 = 1.25 ms
//! means "99% of requests took at most ~1.25 ms, give or take one quarter-octave".
//!
//! Recording is three relaxed `fetch_add`s and one more on error: no allocation, no lock.
//! Readers ([`OpStats::snapshot`]) load the counters one by one, so a snapshot taken while
//! requests run may be off by the requests that finished during the copy; nothing more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_proto::MsgType;

/// Largest exponent with its own buckets (2^48 ns ≈ 78 h).
pub const MAX_EXP: u32 = 47;
/// Buckets per histogram: four per octave up to 2^(MAX_EXP+1) ns, then one overflow bucket.
pub const BUCKETS: usize = 4 * MAX_EXP as usize + 1;
/// Slots: one per even message type below 128.
const SLOTS: usize = 64;

/// The bucket of a latency in nanoseconds.
pub fn bucket_of(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros();
    if e > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (ns >> (e - 2)) & 3;
    (4 * (e - 1) as u64 + sub) as usize
}

/// The largest latency (ns) that falls in bucket `b`.
pub fn bucket_upper(b: usize) -> u64 {
    if b < 4 {
        return b as u64;
    }
    if b >= BUCKETS - 1 {
        return u64::MAX;
    }
    let e = (b / 4 + 1) as u32;
    let sub = (b % 4) as u64;
    ((4 + sub + 1) << (e - 2)) - 1
}

/// Counters of one request type.
#[derive(Debug)]
pub struct OpHist {
    count: AtomicU64,
    errors: AtomicU64,
    sum_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl OpHist {
    fn new() -> OpHist {
        OpHist {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Latency summary of one request type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpSummary {
    /// Message name, e.g. `Tread`.
    pub op: String,
    /// Requests answered.
    pub count: u64,
    /// Of which answered with an error.
    pub errors: u64,
    /// Mean latency in nanoseconds.
    pub mean_ns: u64,
    /// Median (bucket upper bound), ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
}

/// Every request type's counters.
#[derive(Debug)]
pub struct OpStats {
    ops: Box<[OpHist]>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            ops: (0..SLOTS).map(|_| OpHist::new()).collect(),
        }
    }
}

impl OpStats {
    /// Records one answered request.
    pub fn record(&self, ty: MsgType, elapsed: Duration, failed: bool) {
        let Some(h) = self.ops.get(usize::from(ty as u8 / 2)) else {
            return;
        };
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_ns.fetch_add(ns, Ordering::Relaxed);
        if failed {
            h.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(b) = h.buckets.get(bucket_of(ns)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests answered so far, all types.
    pub fn total(&self) -> u64 {
        self.ops
            .iter()
            .map(|h| h.count.load(Ordering::Relaxed))
            .sum()
    }

    /// Summaries of the types seen at least once, in message-type order.
    pub fn snapshot(&self) -> Vec<OpSummary> {
        let mut out = Vec::new();
        for (slot, h) in self.ops.iter().enumerate() {
            let count = h.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let counts: Vec<u64> = h
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let name = u8::try_from(slot * 2)
                .ok()
                .and_then(MsgType::from_u8)
                .map_or_else(|| format!("type{}", slot * 2), |t| t.name().to_string());
            out.push(OpSummary {
                op: name,
                count,
                errors: h.errors.load(Ordering::Relaxed),
                mean_ns: h.sum_ns.load(Ordering::Relaxed) / count,
                p50_ns: percentile(&counts, 0.50),
                p99_ns: percentile(&counts, 0.99),
                p999_ns: percentile(&counts, 0.999),
            });
        }
        out
    }
}

/// The upper bound of the bucket holding quantile `q` of the recorded values (0 if none).
pub fn percentile(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    // The rank of the q-quantile, 1-based: the smallest value with at least q*total at or
    // below it.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (b, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return bucket_upper(b);
        }
    }
    bucket_upper(counts.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_of_every_value_within_its_bounds() {
        let mut prev_upper = None;
        for b in 0..BUCKETS - 1 {
            let hi = bucket_upper(b);
            let lo = prev_upper.map_or(0, |p: u64| p + 1);
            assert_eq!(bucket_of(lo), b, "lower bound of {b}");
            assert_eq!(bucket_of(hi), b, "upper bound of {b}");
            prev_upper = Some(hi);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bucket_width_at_most_a_quarter_octave() {
        for b in 8..BUCKETS - 1 {
            let lo = bucket_upper(b - 1) + 1;
            let hi = bucket_upper(b);
            assert!((hi - lo + 1) * 4 <= lo, "bucket {b}: {lo}..={hi}");
        }
    }

    #[test]
    fn percentile_known_distribution_lands_in_right_bucket() {
        let s = OpStats::default();
        // 990 requests of 1 µs, 9 of 1 ms, 1 of 1 s.
        for _ in 0..990 {
            s.record(MsgType::Tread, Duration::from_micros(1), false);
        }
        for _ in 0..9 {
            s.record(MsgType::Tread, Duration::from_millis(1), false);
        }
        s.record(MsgType::Tread, Duration::from_secs(1), true);
        let snap = s.snapshot();
        assert_eq!(snap.len(), 1);
        let r = &snap[0];
        assert_eq!((r.op.as_str(), r.count, r.errors), ("Tread", 1000, 1));
        assert_eq!(r.p50_ns, bucket_upper(bucket_of(1_000)));
        assert_eq!(r.p99_ns, bucket_upper(bucket_of(1_000)));
        assert_eq!(r.p999_ns, bucket_upper(bucket_of(1_000_000)));
        assert!(r.p50_ns >= 1_000 && r.p50_ns < 1_250);
        assert_eq!(s.total(), 1000);
    }

    #[test]
    fn percentile_empty_is_zero() {
        assert_eq!(percentile(&[0; BUCKETS], 0.5), 0);
    }
}
