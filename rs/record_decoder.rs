//! Ring records into events: the ring-buffer callback's state, which copies
//! each record's payload bytes once out of the payload area and decodes the
//! record (typed or generic) into an `Event`, staged until the reader moves
//! it to the queue.

use crate::byte_blocks::BlockWriter;
use crate::cgroup::CgroupResolver;
use crate::clock::WallClock;
use crate::decode::{read_array, DecodeError, VarReader};
use crate::event::{Comm, Event, EventKind};
use crate::payload_area::PayloadArea;
use crate::queue::EventQueue;
use crate::stats::UserCounters;
use crate::tracepoint_format::{Format, GenericPayload, MAX_USER_STRS};
use crate::types::{rec, EventType, Payload, COMM_LEN, RECORD_SIZE};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

/// Events decoded by the ring-buffer callback during one consume, before
/// they move to the shared queue.
pub(crate) struct Inbox {
    pub(crate) area: PayloadArea,
    pub(crate) pending: Vec<Event>,
    /// Queue weight of each pending event (see `EventQueue::weight`).
    pub(crate) weights: Vec<u32>,
    pub(crate) pending_bytes: usize,
    /// Stop consuming once pending events weigh this much.
    pub(crate) budget: usize,
    /// Where payload bytes are copied to (shared by the events).
    pub(crate) blocks: BlockWriter,
    /// Kernel timestamps into wall time.
    pub(crate) wall_clock: WallClock,
    pub(crate) next_event_id: u64,
    pub(crate) last_seq: Vec<u64>,
    pub(crate) counters: UserCounters,
    /// Generic tracepoints by tracefs ID.
    pub(crate) formats: HashMap<u32, Arc<Format>>,
    /// Closing: records are counted as discarded, not decoded.
    pub(crate) discarding: bool,
    /// Cgroup ids to paths and containers.
    pub(crate) cgroups: CgroupResolver,
}

/// Record flag: a generic tracepoint (TB_REC_GENERIC).
const REC_GENERIC: u32 = crate::types::rec_flags::GENERIC;

/// What the ring-buffer callback returns to stop `ring_buffer__consume`
/// (which then returns it).
pub(crate) const STOP_CONSUMING: i32 = -1;

impl Inbox {
    pub(crate) fn on_record(&mut self, raw: &[u8]) -> i32 {
        if self.discarding {
            self.counters.discarded += 1;
            return 0;
        }
        match self.decode(raw) {
            Ok((ev, payload_len)) => {
                let w = EventQueue::weight(payload_len);
                self.pending.push(ev);
                self.weights.push(w);
                self.pending_bytes += w as usize;
            }
            Err(DecodeError::PayloadOverwritten) => self.counters.overwritten += 1,
            Err(_) => self.counters.decode_errors += 1,
        }
        if self.pending_bytes >= self.budget {
            STOP_CONSUMING // the record itself was consumed
        } else {
            0
        }
    }

    /// The event of record `raw`, and how many variable bytes it had
    /// (payload area and inline).
    fn decode(&mut self, raw: &[u8]) -> Result<(Event, usize), DecodeError> {
        if raw.len() < RECORD_SIZE {
            return Err(DecodeError::RecordTooShort { need: RECORD_SIZE, got: raw.len() });
        }
        let u32_at = |o| read_array::<4>(raw, o).map(u32::from_le_bytes);
        let u64_at = |o| read_array::<8>(raw, o).map(u64::from_le_bytes);
        let cpu = u32_at(rec::CPU)?;
        let pos = u64_at(rec::PAYLOAD_POS)?;
        let len = u32_at(rec::PAYLOAD_LEN)?;
        let seq = u64_at(rec::SEQ)?;

        // Copy the payload bytes once, into the reader's blocks (the events'
        // fields are slices of that copy), then hand their space in the area
        // back to the producer, whatever became of them.
        let inline_len = u32_at(rec::INLINE_LEN)? as usize;
        let inline = RECORD_SIZE
            .checked_add(inline_len)
            .and_then(|end| raw.get(RECORD_SIZE..end))
            .ok_or(DecodeError::InlineTooLong { inline_len, got: raw.len() });
        let area = &self.area;
        let (bytes, copied) = if len as u64 > area.region_size() {
            (Bytes::new(), Err(DecodeError::PayloadOutOfRange { cpu, pos, len }))
        } else {
            self.blocks.put(len as usize, |dst| area.read_into(cpu, pos, dst))
        };
        let decoded = match copied {
            Ok(true) => inline.and_then(|inline| decode_payload(raw, &bytes, inline, &self.formats)),
            Ok(false) => Err(DecodeError::PayloadOverwritten),
            Err(e) => Err(e),
        };
        if !matches!(decoded, Err(DecodeError::PayloadOutOfRange { .. })) {
            self.area.release(cpu, pos.wrapping_add(len as u64));
            if let Some(last) = self.last_seq.get_mut(cpu as usize) {
                if seq > last.saturating_add(1) {
                    self.counters.seq_gaps += seq - *last - 1;
                }
                *last = seq;
            }
        }
        let (event_type, payload) = decoded?;
        let flags = u32_at(rec::FLAGS)?;
        let comm: [u8; COMM_LEN] = read_array(raw, rec::COMM)?;
        let boot_ns = u64_at(rec::TIMESTAMP_NS)?;
        let pid = u32_at(rec::PID)?;
        let cgroup_id = u64_at(rec::CGROUP_ID)?;
        let cgroup = self.cgroups.resolve(cgroup_id, pid);
        self.next_event_id = self.next_event_id.wrapping_add(1);
        let event = Event {
            event_id: self.next_event_id,
            event_type,
            timestamp_ns: self.wall_clock.wall_ns(boot_ns),
            cpu,
            pid,
            tid: u32_at(rec::TID)?,
            ppid: u32_at(rec::PPID)?,
            upid: u64_at(rec::UPID)?,
            uppid: u64_at(rec::UPPID)?,
            comm: Comm::from_padded(&comm),
            ns_pid: u32_at(rec::NS_PID)?,
            ns_tid: u32_at(rec::NS_TID)?,
            cgroup_id,
            cgroup,
            flags,
            payload,
        };
        // Inline bytes count too: the queue bounds what the events hold.
        Ok((event, len as usize + inline_len))
    }
}

/// The event kind and payload of ring sample `raw`: its payload-area bytes
/// are `bytes`, the bytes after the record in the sample (an inline field)
/// `inline`; the event's fields are slices of them.
fn decode_payload(
    raw: &[u8],
    bytes: &Bytes,
    inline: &[u8],
    formats: &HashMap<u32, Arc<Format>>,
) -> Result<(EventKind, Payload), DecodeError> {
    let type_id = read_array::<4>(raw, rec::EVENT_TYPE).map(u32::from_le_bytes)?;
    let flags = read_array::<4>(raw, rec::FLAGS).map(u32::from_le_bytes)?;
    let fixed = raw.get(rec::FIXED..RECORD_SIZE).ok_or(DecodeError::RecordTooShort { need: RECORD_SIZE, got: raw.len() })?;
    if flags & REC_GENERIC != 0 {
        let format = formats.get(&type_id).ok_or(DecodeError::UnknownEventType(type_id))?.clone();
        let mut vr = VarReader::shared(bytes, inline);
        let raw_var = vr.take(fixed, 0)?;
        let strs: [_; MAX_USER_STRS] = [vr.take(fixed, 16)?, vr.take(fixed, 32)?, vr.take(fixed, 48)?];
        vr.finish()?;
        let g = GenericPayload::decode(format.clone(), &raw_var, strs)?;
        Ok((EventKind::Generic(format), Payload::Generic(g)))
    } else {
        let event_type = EventType::from_id(type_id).ok_or(DecodeError::UnknownEventType(type_id))?;
        Ok((EventKind::Typed(event_type), Payload::decode_shared(event_type, fixed, bytes, inline)?))
    }
}
