//! One memory budget for every buffer whose size follows the traffic (`--memory-limit`).
//!
//! Per-call caps bound one call; nothing else bounds their sum over connections × pending
//! requests × streams. Buffers that grow with the traffic take their capacity from a shared
//! [`MemoryBudget`] before they allocate; when it is spent they stop growing and their call is
//! marked truncated (what was already read, and the request's top-level fields seen on the
//! wire, stay). The budget is given back when a buffer is dropped. Atomic, so any thread can
//! hold a share.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

#[derive(Debug)]
struct BudgetState {
    limit: AtomicUsize,
    used: AtomicUsize,
    peak: AtomicUsize,
    refusals: AtomicU64,
}

/// Bytes that buffers may hold together. Cloning shares the budget.
#[derive(Clone, Debug)]
pub struct MemoryBudget(Arc<BudgetState>);

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::unlimited()
    }
}

impl MemoryBudget {
    /// A budget that never refuses (still counts what is held).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    pub fn new(limit: usize) -> Self {
        MemoryBudget(Arc::new(BudgetState {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refusals: AtomicU64::new(0),
        }))
    }

    /// Changes the limit; bytes already held stay held (new growth is refused until enough
    /// is given back).
    pub fn set_limit(&self, limit: usize) {
        self.0.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.0.limit.load(Ordering::Relaxed)
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Most bytes ever held at once.
    pub fn peak(&self) -> usize {
        self.0.peak.load(Ordering::Relaxed)
    }

    /// Growths refused because the budget was spent.
    pub fn refusals(&self) -> u64 {
        self.0.refusals.load(Ordering::Relaxed)
    }

    /// Takes `bytes` if they fit under the limit (a miss is not counted: see `take_up_to`).
    fn try_take(&self, bytes: usize) -> bool {
        let limit = self.limit();
        let taken = self
            .0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            });
        match taken {
            Ok(before) => {
                self.0.peak.fetch_max(before + bytes, Ordering::Relaxed);
                true
            }
            // Not a refusal yet: the caller falls back to what is left.
            Err(_) => false,
        }
    }

    /// Takes as much of `bytes` as is left (possibly 0); returns what was taken.
    fn take_up_to(&self, bytes: usize) -> usize {
        let limit = self.limit();
        let before = self
            .0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let left = limit.saturating_sub(used);
                (left > 0).then(|| used + bytes.min(left))
            });
        match before {
            Ok(used) => {
                let taken = bytes.min(limit.saturating_sub(used));
                self.0.peak.fetch_max(used + taken, Ordering::Relaxed);
                if taken < bytes {
                    self.0.refusals.fetch_add(1, Ordering::Relaxed);
                }
                taken
            }
            Err(_) => {
                self.0.refusals.fetch_add(1, Ordering::Relaxed);
                0
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        // Never below zero, whatever the caller's arithmetic.
        let _ = self
            .0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// A byte buffer whose capacity is charged to a [`MemoryBudget`], up to a per-buffer cap.
#[derive(Debug, Default)]
pub struct BudgetedBuf {
    data: Vec<u8>,
    budget: MemoryBudget,
    /// Capacity charged (equals `data.capacity()`).
    charged: usize,
}

impl BudgetedBuf {
    pub fn new(budget: &MemoryBudget) -> Self {
        BudgetedBuf {
            data: Vec::new(),
            budget: budget.clone(),
            charged: 0,
        }
    }

    /// Appends as much of `bytes` as the per-buffer `cap` and the budget allow; `false` when
    /// some of it was left out (the holder marks its call truncated).
    pub fn extend_capped(&mut self, bytes: &[u8], cap: usize) -> bool {
        let room = cap.saturating_sub(self.data.len());
        let wanted = bytes.len().min(room);
        let kept = self.grow_for(wanted, cap);
        self.data
            .extend_from_slice(bytes.get(..kept).unwrap_or_default());
        kept == bytes.len()
    }

    /// Makes room for up to `wanted` more bytes; returns how many fit. Doubles like `Vec`
    /// (few reallocations) when the cap and the budget allow, else takes exactly what is
    /// needed, else keeps what fits in the capacity already held.
    fn grow_for(&mut self, wanted: usize, cap: usize) -> usize {
        let capacity = self.data.capacity();
        let needed = self.data.len() + wanted;
        if needed <= capacity {
            return wanted;
        }
        let doubled = capacity.saturating_mul(2).min(cap).max(needed);
        let target = if self.budget.try_take(doubled - capacity) {
            doubled
        } else {
            capacity + self.budget.take_up_to(needed - capacity)
        };
        if target > capacity {
            self.data.reserve_exact(target - self.data.len());
            self.charged = target;
            // The allocator may hand out more than asked: what is held is counted.
            let real = self.data.capacity();
            if real > self.charged {
                self.budget
                    .0
                    .used
                    .fetch_add(real - self.charged, Ordering::AcqRel);
                self.charged = real;
            }
        }
        wanted.min(target - self.data.len())
    }

    /// The budget this buffer draws on.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Frees the bytes and gives their budget back.
    pub fn release(&mut self) {
        self.data = Vec::new();
        self.budget.give_back(self.charged);
        self.charged = 0;
    }
}

impl Drop for BudgetedBuf {
    fn drop(&mut self) {
        self.budget.give_back(self.charged);
    }
}

/// Why `--memory-limit` cannot be honoured.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryLimitError {
    #[error(
        "--memory-limit {limit} bytes leaves no room for call bodies: llmtap already holds \
         {resident} bytes and keeps {headroom} bytes of headroom (raise it to at least {needed})"
    )]
    TooLow {
        limit: usize,
        resident: usize,
        headroom: usize,
        needed: usize,
    },
}

/// Least budget for call bodies that makes a limit usable.
const MIN_BODY_BUDGET: usize = 8 * 1024 * 1024;

/// Keeps the whole process under `--memory-limit`. Call bodies get what the limit leaves
/// after llmtap's resident size at start and a headroom (a third of the limit) for what is
/// not accounted: one body's parse tree at a time, HPACK tables, the export queue, allocator
/// slack. The resident size is then checked periodically: above the high-water mark (the
/// limit less half the headroom) bodies stop growing until it comes back down, so the
/// process is never killed for memory whatever the traffic.
#[derive(Debug)]
pub struct MemoryGuard {
    limit: usize,
    body_limit: usize,
    budget: MemoryBudget,
    squeezed: bool,
    squeezes: u64,
}

impl MemoryGuard {
    pub fn new(
        limit: usize,
        resident_now: usize,
        budget: &MemoryBudget,
    ) -> Result<Self, MemoryLimitError> {
        let headroom = limit / 3;
        let body_limit = limit.saturating_sub(resident_now).saturating_sub(headroom);
        if body_limit < MIN_BODY_BUDGET {
            return Err(MemoryLimitError::TooLow {
                limit,
                resident: resident_now,
                headroom,
                // limit − limit/3 − resident ≥ MIN  ⇔  limit ≥ 3/2 (resident + MIN)
                needed: (resident_now + MIN_BODY_BUDGET).saturating_mul(3) / 2 + 3,
            });
        }
        budget.set_limit(body_limit);
        Ok(MemoryGuard {
            limit,
            body_limit,
            budget: budget.clone(),
            squeezed: false,
            squeezes: 0,
        })
    }

    /// Bytes call bodies may hold together while the process stays under its limit.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// Times the resident size reached the high-water mark.
    pub fn squeezes(&self) -> u64 {
        self.squeezes
    }

    /// Applies the process's resident size now.
    pub fn check(&mut self, resident: usize) {
        let high = self.limit - self.limit / 6;
        let low = self.limit - self.limit / 3;
        if resident > high && !self.squeezed {
            self.squeezed = true;
            self.squeezes += 1;
            // Nothing more grows until enough is given back.
            self.budget
                .set_limit(self.budget.used().min(self.body_limit));
            log::warn!(
                "llmtap holds {resident} bytes, near --memory-limit {}: call bodies are cut \
                 (calls flagged truncated) until memory comes back under {low} bytes",
                self.limit
            );
        } else if self.squeezed && resident < low {
            self.squeezed = false;
            self.budget.set_limit(self.body_limit);
            log::info!("llmtap is back under {low} bytes: call bodies are kept again");
        }
    }
}

/// This process's resident set size in bytes, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(usize::try_from(page).ok().filter(|p| *p > 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_share_one_limit_and_give_it_back() {
        let budget = MemoryBudget::new(1000);
        let mut a = BudgetedBuf::new(&budget);
        let mut b = BudgetedBuf::new(&budget);
        assert!(a.extend_capped(&[1; 600], 10_000));
        assert_eq!(a.len(), 600);
        // 400 left: b keeps 400 of 500 and says so.
        assert!(!b.extend_capped(&[2; 500], 10_000));
        assert_eq!(b.len(), 400);
        assert_eq!(budget.used(), 1000);
        assert!(budget.refusals() > 0);
        drop(a);
        assert_eq!(budget.used(), 400);
        assert!(b.extend_capped(&[3; 500], 10_000));
        assert_eq!(b.len(), 900);
        b.release();
        assert_eq!(budget.used(), 0);
        assert_eq!(b.len(), 0);
        assert!(budget.peak() >= 900);
    }

    #[test]
    fn per_buffer_cap_still_applies() {
        let budget = MemoryBudget::unlimited();
        let mut a = BudgetedBuf::new(&budget);
        assert!(a.extend_capped(&[1; 64], 100));
        assert!(!a.extend_capped(&[1; 64], 100));
        assert_eq!(a.len(), 100);
        assert_eq!(budget.used(), a.data.capacity());
    }

    /// Growth doubles while the budget allows, then takes exactly what is left.
    #[test]
    fn growth_falls_back_to_exact_near_the_limit() {
        let budget = MemoryBudget::new(300);
        let mut a = BudgetedBuf::new(&budget);
        assert!(a.extend_capped(&[1; 200], 1000));
        assert!(a.extend_capped(&[1; 100], 1000), "exact growth fits");
        assert_eq!(a.len(), 300);
        assert_eq!(budget.used(), a.data.capacity());
        assert!(!a.extend_capped(&[1; 1], 1000));
    }

    #[test]
    fn lowering_the_limit_refuses_new_growth_only() {
        let budget = MemoryBudget::new(1000);
        let mut a = BudgetedBuf::new(&budget);
        assert!(a.extend_capped(&[1; 500], 10_000));
        budget.set_limit(100);
        assert_eq!(a.len(), 500, "held bytes stay");
        let mut b = BudgetedBuf::new(&budget);
        assert!(!b.extend_capped(&[1; 10], 10_000));
        assert!(b.is_empty());
    }

    #[test]
    fn guard_gives_bodies_what_the_limit_leaves() {
        const MIB: usize = 1024 * 1024;
        let budget = MemoryBudget::unlimited();
        let guard = MemoryGuard::new(256 * MIB, 40 * MIB, &budget).expect("room");
        // 256 MiB − 40 MiB − a third of the limit.
        let expected = 256 * MIB - 40 * MIB - 256 * MIB / 3;
        assert_eq!(guard.body_limit(), expected);
        assert_eq!(budget.limit(), expected);
        let err = MemoryGuard::new(48 * MIB, 40 * MIB, &budget).expect_err("too low");
        let MemoryLimitError::TooLow { needed, .. } = err.clone();
        assert!(err.to_string().contains("--memory-limit"));
        assert!(MemoryGuard::new(needed, 40 * MIB, &MemoryBudget::unlimited()).is_ok());
        assert!(MemoryGuard::new(needed - MIB, 40 * MIB, &MemoryBudget::unlimited()).is_err());
    }

    #[test]
    fn guard_stops_growth_near_the_limit_and_resumes_below_it() {
        const MIB: usize = 1024 * 1024;
        let budget = MemoryBudget::unlimited();
        let mut guard = MemoryGuard::new(160 * MIB, 20 * MIB, &budget).expect("room");
        let mut held = BudgetedBuf::new(&budget);
        assert!(held.extend_capped(&vec![0; MIB], usize::MAX));
        guard.check(100 * MIB);
        assert_eq!(guard.squeezes(), 0);
        guard.check(150 * MIB); // above 160 − 160/6
        assert_eq!(guard.squeezes(), 1);
        let mut other = BudgetedBuf::new(&budget);
        assert!(
            !other.extend_capped(&[1; 10], usize::MAX),
            "no growth while squeezed"
        );
        guard.check(130 * MIB); // between the marks: still squeezed
        assert!(!other.extend_capped(&[1; 10], usize::MAX));
        guard.check(100 * MIB); // below 160 − 160/3
        assert!(other.extend_capped(&[1; 10], usize::MAX));
        guard.check(150 * MIB);
        assert_eq!(guard.squeezes(), 2);
    }

    #[test]
    fn resident_size_is_read() {
        let rss = resident_bytes().expect("/proc/self/statm");
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
