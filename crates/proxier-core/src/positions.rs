//! Stable backend positions: which position each backend of a destination takes when its set of
//! backends changes.
//!
//! A data plane that picks a backend by position (position `numgen random mod N`, then the address
//! and port stored for that position) must rewrite every position whose backend changed. Sorted by
//! address, one new endpoint shifts every later one; here a change moves as little as it can:
//!
//! - a backend that stays keeps its position, unless it stood past the new end (see below);
//! - a new backend takes the position of one that went (the lowest free first), or else is appended;
//! - when more went than came, each remaining free position is filled by moving the last backend into
//!   it, and the list shrinks.
//!
//! So a change of `r` removed and `a` added backends rewrites at most `max(r, a)` positions, plus the
//! `r - a` positions dropped from the end. The result depends only on the previous order and the new
//! set (new backends are placed in address order), so the same history gives the same positions.
//!
//! [`crate::compute()`] has no history: its backends are in address order. A
//! [`crate::state::ClusterState`] keeps each destination's order between changes and hands out its
//! shares in it.
//!
//! ```
//! use proxier_core::Backend;
//! use proxier_core::positions::stable_order;
//! let b = |last: u8| Backend { ip: [10, 244, 0, last].into(), port: 8080 };
//! // 1 goes, 0 comes: 0 takes 1's position; 2 and 3 stay where they were.
//! assert_eq!(stable_order(&[b(1), b(2), b(3)], &[b(0), b(2), b(3)]), [b(0), b(2), b(3)]);
//! // 1 goes: the last one moves into its position.
//! assert_eq!(stable_order(&[b(1), b(2), b(3)], &[b(2), b(3)]), [b(3), b(2)]);
//! // 4 comes: appended.
//! assert_eq!(stable_order(&[b(3), b(2)], &[b(2), b(3), b(4)]), [b(3), b(2), b(4)]);
//! ```

use crate::model::{Action, Backend, Destination};

/// The positions of `backends` (the new set, each once) given the `previous` order: see the module
/// documentation. Backends named in `previous` but not in `backends` are gone; backends in `backends`
/// only are new, placed in address order.
pub fn stable_order(previous: &[Backend], backends: &[Backend]) -> Vec<Backend> {
    let mut wanted = backends.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut known = previous.to_vec();
    known.sort_unstable();
    let mut slots: Vec<Option<Backend>> =
        previous.iter().map(|b| wanted.binary_search(b).is_ok().then_some(*b)).collect();
    let mut arrivals = wanted.iter().filter(|b| known.binary_search(b).is_err()).copied();
    // New backends first fill the positions of those that went, lowest first.
    let mut free = Vec::new();
    for (position, slot) in slots.iter_mut().enumerate() {
        if slot.is_none() {
            match arrivals.next() {
                Some(backend) => *slot = Some(backend),
                None => free.push(position),
            }
        }
    }
    slots.extend(arrivals.map(Some));
    // More went than came: move the last backend into each free position, lowest first.
    for position in free {
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        if position >= slots.len() {
            break;
        }
        slots[position] = slots.pop().flatten();
    }
    slots.into_iter().flatten().collect()
}

/// Puts the backends of each destination in `destinations` in their stable positions, given the
/// destinations as last handed out (`previous`, sorted by address, protocol and port). Only a
/// destination balanced directly over its backends both times is reordered: that is where positions
/// are laid out; the others keep the order they were computed in.
pub(crate) fn keep_positions(previous: &[Destination], destinations: &mut [Destination]) {
    for destination in destinations {
        let Action::Balance { backends, .. } = &mut destination.action else { continue };
        let key = (destination.ip, destination.protocol, destination.port);
        let Ok(i) = previous.binary_search_by(|d| (d.ip, d.protocol, d.port).cmp(&key)) else { continue };
        if let Action::Balance { backends: before, .. } = &previous[i].action
            && before != backends
        {
            *backends = stable_order(before, backends);
        }
    }
}
