//! Work spread over the machine's cores, for the stages that read or compute a whole cluster at once
//! (a 44k-Service snapshot is 88k objects to parse and 44k Services to compute).
//!
//! Threads take small runs of items as they finish the last, so one thread's share of slow items (the
//! EndpointSlices after the Services of a `kubectl get` dump) does not leave the others idle. Results come
//! back in the items' order, whatever thread made them: output does not depend on the machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Most items a thread takes at a time: enough that taking costs nothing. Fewer when there are few
/// items, so that each thread takes several times and none is left with the slow end alone.
const RUN: usize = 64;

/// How many threads work on a job: one per core, capped so that each has at least `min_each` items.
/// Small jobs (a live agent's one changed slice) are told so without asking for the cores.
pub(crate) fn threads_for(items: usize, min_each: usize) -> usize {
    let most = items / min_each.max(1);
    if most < 2 { 1 } else { cores().min(most) }
}

/// The machine's cores, asked once: std reads the cgroup's CPU quota from files on every call.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// `f` of every item, in the items' order, on [`threads_for`] threads (this one among them).
pub(crate) fn map<T: Sync, R: Send>(items: &[T], min_each: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads_for(items.len(), min_each);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let take = (items.len() / threads / 8).clamp(1, RUN);
    let next = AtomicUsize::new(0);
    let runs: Mutex<Vec<(usize, Vec<R>)>> = Mutex::new(Vec::with_capacity(items.len().div_ceil(take)));
    let work = || {
        let mut done = Vec::new();
        loop {
            let start = next.fetch_add(take, Ordering::Relaxed);
            let Some(run) = items.get(start..items.len().min(start.saturating_add(take))) else { break };
            if run.is_empty() {
                break;
            }
            done.push((start, run.iter().map(&f).collect::<Vec<R>>()));
        }
        runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(done);
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(work);
        }
        work();
    });
    let mut runs = runs.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    runs.sort_unstable_by_key(|(start, _)| *start);
    runs.into_iter().flat_map(|(_, results)| results).collect()
}

#[cfg(test)]
mod tests {
    use super::map;

    #[test]
    fn results_keep_the_items_order_on_any_number_of_threads() {
        let items: Vec<u64> = (0..10_000).collect();
        // Uneven work: later items cost more, as EndpointSlices after Services do.
        let expected: Vec<u64> = items.iter().map(|n| (0..n % 97).sum::<u64>() + n).collect();
        for min_each in [1, 100, 100_000] {
            assert_eq!(map(&items, min_each, |n| (0..n % 97).sum::<u64>() + n), expected);
        }
        assert!(map(&[] as &[u64], 1, |n| *n).is_empty());
    }
}
