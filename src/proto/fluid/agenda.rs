//! What is due when, in simulated seconds: events come out in time order, those set for the
//! same time in the order they were set. The flow models and the chain simulator keep their
//! events here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub struct Agenda<E: Ord> {
    /// (time's bits, order set, event): times are never negative, so their bits order as they do.
    heap: BinaryHeap<Reverse<(u64, u64, E)>>,
    set: u64,
}

impl<E: Ord> Agenda<E> {
    pub fn new() -> Agenda<E> {
        Agenda { heap: BinaryHeap::new(), set: 0 }
    }

    /// Sets `e` for `t` seconds (a negative time counts as 0).
    pub fn at(&mut self, t: f64, e: E) {
        self.set += 1;
        self.heap.push(Reverse((t.max(0.0).to_bits(), self.set, e)));
    }

    /// When the next event is due (`INFINITY`: none is).
    pub fn next(&self) -> f64 {
        self.heap.peek().map_or(f64::INFINITY, |Reverse((t, _, _))| f64::from_bits(*t))
    }

    /// The next event if it is due by `t`.
    pub fn due(&mut self, t: f64) -> Option<E> {
        (self.next() <= t).then(|| self.heap.pop().unwrap().0 .2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_in_time_order_then_in_the_order_set() {
        let mut a = Agenda::new();
        for (t, e) in [(2.0, 'c'), (0.5, 'b'), (2.0, 'a'), (-1.0, 'z')] {
            a.at(t, e);
        }
        assert_eq!(a.next(), 0.0);
        assert_eq!(a.due(1.0), Some('z'));
        assert_eq!(a.due(1.0), Some('b'));
        assert_eq!(a.due(1.0), None);
        assert_eq!((a.due(2.0), a.due(2.0), a.due(2.0), a.next()), (Some('c'), Some('a'), None, f64::INFINITY));
    }
}
