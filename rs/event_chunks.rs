//! The queue's events, in chunks of a fixed number of events.
//!
//! One contiguous buffer would have to be reallocated as a burst grows the
//! queue, copying every queued event each time, under the queue's lock: with
//! 100,000 events queued that took the reader thread 20-30 ms, during which
//! the ring buffer filled. Chunks are only ever added and removed whole, so
//! queuing costs the same however long the queue is, and the consumer takes
//! whole chunks under the lock and moves their events after releasing it.

use crate::event::Event;
use std::collections::VecDeque;

/// Events per chunk.
pub(crate) const CHUNK_EVENTS: usize = 4096;

/// Events queued in order, in chunks of up to `CHUNK_EVENTS`, with up to
/// `keep` chunks' worth of room kept for the next events.
pub(crate) struct EventChunks {
    /// Oldest first; none is empty.
    chunks: VecDeque<VecDeque<Event>>,
    len: usize,
    /// Empty chunks with room, for the next events.
    spare: Vec<VecDeque<Event>>,
    keep: usize,
}

/// Events taken from the front, to be moved out after the queue's lock is
/// released: part of the first chunk, or whole chunks.
#[derive(Default)]
pub(crate) struct Taken {
    part: Vec<Event>,
    chunks: Vec<VecDeque<Event>>,
}

impl Taken {
    /// Moves the events to `out`, in order; returns the emptied chunks.
    pub(crate) fn move_to(mut self, out: &mut Vec<Event>) -> Vec<VecDeque<Event>> {
        out.append(&mut self.part);
        for chunk in &mut self.chunks {
            out.extend(chunk.drain(..));
        }
        self.chunks
    }
}

impl EventChunks {
    /// An empty queue that keeps room for up to `keep_events` when emptied.
    pub(crate) fn new(keep_events: usize) -> EventChunks {
        EventChunks { chunks: VecDeque::new(), len: 0, spare: Vec::new(), keep: keep_events.div_ceil(CHUNK_EVENTS) }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Events there is room for without allocating (queued chunks and spares).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.iter().chain(&self.spare).map(VecDeque::capacity).sum()
    }

    /// Queues `events` (which it empties) after those queued.
    pub(crate) fn extend(&mut self, events: &mut Vec<Event>) {
        self.len += events.len();
        let mut rest = events.drain(..);
        while rest.len() > 0 {
            let back = match self.chunks.back_mut() {
                Some(back) if back.len() < CHUNK_EVENTS => back,
                _ => {
                    let chunk = self.spare.pop().unwrap_or_else(|| VecDeque::with_capacity(CHUNK_EVENTS));
                    self.chunks.push_back(chunk);
                    self.chunks.back_mut().expect("just pushed")
                }
            };
            let room = CHUNK_EVENTS - back.len();
            back.extend(rest.by_ref().take(room));
        }
    }

    /// Takes up to `max` events from the front: whole chunks, moved without
    /// touching their events, as many as fit in `max`; or, when the first
    /// chunk alone holds more than `max`, `max` of its events (fewer than
    /// `CHUNK_EVENTS`), moved now. Returns them and their number.
    pub(crate) fn take_front(&mut self, max: usize) -> (Taken, usize) {
        let mut taken = Taken::default();
        let mut n = 0;
        while let Some(first) = self.chunks.front_mut() {
            if n + first.len() <= max {
                n += first.len();
                taken.chunks.extend(self.chunks.pop_front());
            } else {
                if n == 0 {
                    taken.part = first.drain(..max).collect();
                    n = max;
                }
                break;
            }
        }
        self.len -= n;
        (taken, n)
    }

    /// Keeps up to `keep` emptied chunks for the next events; the rest of a
    /// burst's room is given back.
    pub(crate) fn recycle(&mut self, chunks: Vec<VecDeque<Event>>) {
        let room = self.keep.saturating_sub(self.spare.len());
        self.spare.extend(chunks.into_iter().take(room));
    }

    /// Drops every queued event and gives all room back.
    pub(crate) fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.spare = Vec::new();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(ids: std::ops::Range<u64>) -> Vec<Event> {
        ids.map(|i| Event::test_read(i, i)).collect()
    }

    fn ids(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.event_id).collect()
    }

    #[test]
    fn events_come_out_in_order_whatever_the_chunks_and_takes() {
        let mut q = EventChunks::new(2 * CHUNK_EVENTS);
        let n = 3 * CHUNK_EVENTS as u64 + 99;
        let mut next = 0;
        // Pushes of sizes that straddle chunk boundaries.
        for size in [1, CHUNK_EVENTS - 1, 7, 2 * CHUNK_EVENTS, 92] {
            q.extend(&mut events(next..next + size as u64));
            next += size as u64;
        }
        assert_eq!((next, q.len() as u64), (n, n));
        let mut out = Vec::new();
        for max in [5, CHUNK_EVENTS + 10, 1, usize::MAX] {
            let before = q.len();
            let (taken, k) = q.take_front(max);
            assert!(k > 0 && k <= max, "{k} {max}");
            assert_eq!(q.len(), before - k);
            let at = out.len();
            q.recycle(taken.move_to(&mut out));
            assert_eq!(out.len() - at, k);
        }
        assert_eq!(ids(&out), (0..n).collect::<Vec<_>>());
        assert!(q.is_empty() && q.take_front(10).1 == 0);
    }

    #[test]
    fn a_take_moves_few_events_itself_and_a_burst_s_room_is_given_back() {
        let mut q = EventChunks::new(2 * CHUNK_EVENTS);
        q.extend(&mut events(0..10 * CHUNK_EVENTS as u64));
        // Whole chunks: nothing moved by the take itself.
        let (taken, k) = q.take_front(3 * CHUNK_EVENTS + 5);
        assert_eq!((k, taken.part.len(), taken.chunks.len()), (3 * CHUNK_EVENTS, 0, 3));
        // Less than a chunk: only that many moved.
        let (part, k) = q.take_front(5);
        assert_eq!((k, part.part.len(), part.chunks.len()), (5, 5, 0));
        let mut out = Vec::new();
        q.recycle(part.move_to(&mut out));
        q.recycle(taken.move_to(&mut out));
        assert_eq!(ids(&out[..5]), (3 * CHUNK_EVENTS as u64..3 * CHUNK_EVENTS as u64 + 5).collect::<Vec<_>>());
        while q.take_front(usize::MAX).1 > 0 {}
        let (rest, _) = q.take_front(usize::MAX);
        q.recycle(rest.move_to(&mut out));
        assert!(q.capacity() <= 2 * CHUNK_EVENTS, "{}", q.capacity());
        q.clear();
        assert_eq!(q.capacity(), 0);
    }
}
