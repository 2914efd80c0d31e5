//! Issue 8 (reliability): the record decoder fed malformed input.
//!
//! Property tests (proptest) of every public piece of the decode path:
//! malformed fixed parts, lying variable-field descriptors, out-of-range
//! payload locations. The contract (rs/decode.rs): malformed input is an
//! error, never a panic and never an out-of-bounds read.
//!
//! What is fuzzed here:
//! - `Payload::decode(ty, fixed, var)` for every event type: arbitrary
//!   bytes, and well-formed fixed parts whose `struct tb_var` descriptors
//!   claim arbitrary lengths (exact oracle: Ok iff the lengths add up to
//!   the delivered bytes);
//! - `read_array` and `VarReader` at any offset, including near usize::MAX;
//! - JSON rendering (`json::write_event`) of whatever decodes: always one
//!   valid JSON object, whatever bytes and flags the fields carry;
//! - `PayloadArea::read` (the mmapped payload pool, through its slot table) with arbitrary
//!   CPU, position and length, on real BPF_F_MMAPABLE array maps (needs
//!   root; skipped otherwise): an error for anything outside the area,
//!   otherwise exactly the bytes at that logical position.
//!
//! Not reachable from here: the header half of `Inbox::decode`
//! (rs/tracer.rs) is private; docs/reliability.md gives the public function
//! wanted to fuzz it too.
//!
//! Run: `cargo test --release --test decoder_fuzz` (PROPTEST_CASES=N for more).

use proptest::prelude::*;
use tracer_ebpf::decode::{read_array, DecodeError, VarReader};
use tracer_ebpf::event::EventKind;
use tracer_ebpf::types::{rec, EventType, FieldKind, Payload, RECORD_SIZE};
use tracer_ebpf::{Comm, Event};

/// Size of `struct tb_var` (len u32, flags u32, size u64).
const VAR_DESC: usize = 16;
/// The fixed slot of a record: RECORD_SIZE - rec::FIXED bytes.
const FIXED_SLOT: usize = RECORD_SIZE - rec::FIXED;

fn any_event_type() -> impl Strategy<Value = EventType> {
    proptest::sample::select(EventType::ALL.to_vec())
}

fn var_fields(ty: EventType) -> Vec<usize> {
    ty.fields().iter().filter(|f| matches!(f.kind, FieldKind::Str | FieldKind::StrList | FieldKind::Bytes)).map(|f| f.offset).collect()
}

/// A descriptor length: mostly small, sometimes at the edges of u32.
fn desc_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..64,
        2 => 0u32..4096,
        1 => Just(u32::MAX),
        1 => (u32::MAX - 64)..=u32::MAX,
        1 => any::<u32>(),
    ]
}

/// TB_VAR_INLINE: the field's bytes are in the ring sample after the record.
const VAR_INLINE: u32 = 0x10;

/// A fixed part of the event's size (or the whole slot) with the given
/// descriptors written at each variable field's offset, other bytes random.
/// The descriptors describe payload-area fields (what `Payload::decode`
/// reads): the inline bit is cleared; `var_reader_never_reads_past_its_input`
/// covers fields split between the two sources.
/// The most variable fields an event type has (exec and proc/snapshot:
/// three); the generators make a descriptor for each.
const MAX_VARS: usize = 3;

#[test]
fn max_vars_covers_every_event_type() {
    assert_eq!(EventType::ALL.iter().map(|&t| var_fields(t).len()).max(), Some(MAX_VARS));
}

fn fixed_with(ty: EventType, noise: &[u8], descs: &[(u32, u32, u64)], whole_slot: bool) -> Vec<u8> {
    let size = if whole_slot { FIXED_SLOT.max(ty.fixed_size()) } else { ty.fixed_size() };
    let mut fixed: Vec<u8> = noise.iter().copied().cycle().take(size).collect();
    fixed.resize(size, 0);
    for (off, (len, flags, sz)) in var_fields(ty).into_iter().zip(descs) {
        fixed[off..off + 4].copy_from_slice(&len.to_le_bytes());
        fixed[off + 4..off + 8].copy_from_slice(&(flags & !VAR_INLINE).to_le_bytes());
        fixed[off + 8..off + 16].copy_from_slice(&sz.to_le_bytes());
    }
    fixed
}

/// The variable fields of a decoded payload, in order.
fn vars_of(p: &Payload) -> Vec<tracer_ebpf::types::Var> {
    let mut out = Vec::new();
    p.for_each_field(|_, v| {
        if let tracer_ebpf::types::FieldValue::Var(v) = v {
            out.push(v.clone());
        }
    });
    out
}

fn event_with(ty: EventType, payload: Payload, comm: [u8; 16], hdr: (u64, u64, u32, u32, u32, u64, u64, u32)) -> Event {
    let (event_id, timestamp_ns, pid, tid, ppid, upid, uppid, flags) = hdr;
    Event {
        event_id,
        event_type: EventKind::Typed(ty),
        timestamp_ns,
        cpu: 0,
        pid,
        tid,
        ppid,
        upid,
        uppid,
        comm: Comm::from_padded(&comm),
        ns_pid: pid,
        ns_tid: tid,
        cgroup_id: upid ^ uppid,
        cgroup: None,
        flags,
        payload,
    }
}

// -- a minimal JSON validator (RFC 8259), so no new dependency is needed ----

struct Json<'a> {
    b: &'a [u8],
    i: usize,
}

impl Json<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }
    fn value(&mut self) -> Result<(), String> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_ok() {
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.value()?;
                    self.ws();
                    if self.eat(b',').is_err() {
                        return self.eat(b'}');
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.eat(b']').is_ok() {
                    return Ok(());
                }
                loop {
                    self.value()?;
                    self.ws();
                    if self.eat(b',').is_err() {
                        return self.eat(b']');
                    }
                }
            }
            Some(b'"') => self.string(),
            Some(b't') => self.lit(b"true"),
            Some(b'f') => self.lit(b"false"),
            Some(b'n') => self.lit(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(format!("unexpected byte at {}", self.i)),
        }
    }
    fn lit(&mut self, w: &[u8]) -> Result<(), String> {
        if self.b[self.i..].starts_with(w) {
            self.i += w.len();
            Ok(())
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }
    fn number(&mut self) -> Result<(), String> {
        let start = self.i;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        let digits = self.b[self.i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || (digits > 1 && self.b[self.i] == b'0') {
            return Err(format!("bad number at {start}"));
        }
        self.i += digits;
        Ok(())
    }
    fn string(&mut self) -> Result<(), String> {
        self.eat(b'"')?;
        loop {
            match self.b.get(self.i) {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => match self.b.get(self.i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                    Some(b'u') if self.b.get(self.i + 2..self.i + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => self.i += 6,
                    _ => return Err(format!("bad escape at {}", self.i)),
                },
                Some(&c) if c < 0x20 => return Err(format!("raw control byte {c:#x} in string at {}", self.i)),
                Some(_) => self.i += 1,
            }
        }
    }
}

fn assert_one_json_object(s: &str) -> Result<(), TestCaseError> {
    let mut j = Json { b: s.as_bytes(), i: 0 };
    prop_assert_eq!(s.as_bytes().first(), Some(&b'{'), "not an object: {}", s);
    j.value().map_err(|e| TestCaseError::fail(format!("invalid JSON ({e}): {s}")))?;
    j.ws();
    prop_assert_eq!(j.i, s.len(), "trailing bytes after the object: {}", s);
    prop_assert!(!s.contains('\n'), "a JSON line must not contain a newline");
    Ok(())
}

#[test]
fn json_validator_self_check() {
    for ok in [r#"{}"#, r#"{"a":[1,-2,"x\u0000",null,true,false],"b":{}}"#] {
        assert!(Json { b: ok.as_bytes(), i: 0 }.value().is_ok(), "{ok}");
    }
    for bad in [r#"{"a":}"#, "{\"a\":\"\x01\"}", r#"{"a":01}"#, r#"{"a":"\x"}"#, r#"{"a":1"#] {
        assert!(Json { b: bad.as_bytes(), i: 0 }.value().is_err(), "{bad}");
    }
}

// -- Payload::decode ----------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, .. ProptestConfig::default() })]

    /// Arbitrary bytes for both parts: never a panic; an error or a payload
    /// whose variable fields account for every delivered byte, in order.
    #[test]
    fn payload_decode_of_random_bytes_never_panics(
        ty in any_event_type(),
        fixed in proptest::collection::vec(any::<u8>(), 0..96),
        var in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        match Payload::decode(ty, &fixed, &var) {
            Ok(p) => {
                prop_assert!(fixed.len() >= ty.fixed_size());
                let joined: Vec<u8> = vars_of(&p).into_iter().flat_map(|v| v.data).collect();
                prop_assert_eq!(joined, var);
            }
            Err(DecodeError::FixedTooShort { need, got, .. }) => {
                prop_assert_eq!(need, ty.fixed_size());
                prop_assert_eq!(got, fixed.len());
                prop_assert!(got < need);
            }
            Err(DecodeError::VarOutOfBounds { .. } | DecodeError::TrailingBytes(_)) => {
                prop_assert!(!var_fields(ty).is_empty() || !var.is_empty());
            }
            Err(e) => prop_assert!(false, "unexpected error kind {:?}", e),
        }
    }

    /// Well-formed fixed parts whose descriptors claim arbitrary lengths
    /// (up to u32::MAX): Ok exactly when the claims add up to the bytes
    /// delivered; every field then holds its own slice, flags and size.
    #[test]
    fn lying_descriptors_are_errors_not_reads(
        ty in any_event_type(),
        noise in proptest::collection::vec(any::<u8>(), 1..64),
        descs in proptest::collection::vec((desc_len(), any::<u32>(), any::<u64>()), MAX_VARS),
        var_len in 0usize..200,
        whole_slot in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let fixed = fixed_with(ty, &noise, &descs, whole_slot);
        let var: Vec<u8> = (0..var_len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let n = var_fields(ty).len();
        let claimed: u128 = descs.iter().take(n).map(|d| d.0 as u128).sum();
        let r = Payload::decode(ty, &fixed, &var);
        if claimed == var.len() as u128 {
            let p = r.map_err(|e| TestCaseError::fail(format!("{e}")))?;
            let vars = vars_of(&p);
            prop_assert_eq!(vars.len(), n);
            let mut at = 0usize;
            for (v, d) in vars.iter().zip(&descs) {
                prop_assert_eq!(v.data.len(), d.0 as usize);
                prop_assert_eq!(&v.data[..], &var[at..at + d.0 as usize]);
                prop_assert_eq!(v.flags, d.1 & !VAR_INLINE);
                prop_assert_eq!(v.size, d.2);
                at += d.0 as usize;
            }
        } else if claimed > var.len() as u128 {
            let is_var_oob = matches!(r, Err(DecodeError::VarOutOfBounds { .. }));
            prop_assert!(is_var_oob, "claimed {} of {}: {:?}", claimed, var.len(), r);
        } else {
            prop_assert_eq!(r, Err(DecodeError::TrailingBytes(var.len() - claimed as usize)));
        }
    }

    /// Whatever decodes renders as exactly one valid JSON object, with any
    /// bytes in the fields (invalid UTF-8, NULs, controls) and any flags.
    #[test]
    fn decoded_events_always_render_valid_json(
        ty in any_event_type(),
        noise in proptest::collection::vec(any::<u8>(), 1..64),
        lens in proptest::collection::vec(0u32..48, MAX_VARS),
        flags in proptest::collection::vec(any::<u32>(), MAX_VARS),
        sizes in proptest::collection::vec(any::<u64>(), MAX_VARS),
        var in proptest::collection::vec(any::<u8>(), MAX_VARS * 48),
        comm in any::<[u8; 16]>(),
        hdr in any::<(u64, u64, u32, u32, u32, u64, u64, u32)>(),
    ) {
        let descs: Vec<(u32, u32, u64)> = (0..MAX_VARS).map(|i| (lens[i], flags[i], sizes[i])).collect();
        let n = var_fields(ty).len();
        let total: usize = lens.iter().take(n).map(|&l| l as usize).sum();
        let fixed = fixed_with(ty, &noise, &descs, false);
        let p = Payload::decode(ty, &fixed, &var[..total]).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let ev = event_with(ty, p, comm, hdr);
        let line = ev.to_json();
        assert_one_json_object(&line)?;
        let head = format!("{{\"event_id\":{},\"event_type\":\"{}\"", hdr.0, ty.name());
        prop_assert!(line.starts_with(&head), "{}", line);
        for v in vars_of(&ev.payload) {
            let _ = (v.captured(), v.truncated(), v.lost(), v.strings().count());
        }
    }

    /// Any event id: known ones round-trip, others are None (the record
    /// decoder turns that into DecodeError::UnknownEventType).
    #[test]
    fn event_type_ids_round_trip(id in any::<u32>()) {
        match EventType::from_id(id) {
            Some(t) => prop_assert_eq!(t.id(), id),
            None => prop_assert!(EventType::ALL.iter().all(|t| t.id() != id)),
        }
    }

    /// read_array at any offset: the bytes, or OutOfBounds (never a panic,
    /// even where offset + N overflows).
    #[test]
    fn read_array_at_any_offset(
        buf in proptest::collection::vec(any::<u8>(), 0..64),
        offset in prop_oneof![0usize..80, (usize::MAX - 16)..=usize::MAX, any::<usize>()],
    ) {
        let r4 = read_array::<4>(&buf, offset);
        let r8 = read_array::<8>(&buf, offset);
        for (r, n) in [(r4.map(|a| a.to_vec()), 4usize), (r8.map(|a| a.to_vec()), 8)] {
            match offset.checked_add(n) {
                Some(end) if end <= buf.len() => prop_assert_eq!(r, Ok(buf[offset..end].to_vec())),
                _ => prop_assert_eq!(r, Err(DecodeError::OutOfBounds { offset, len: n, size: buf.len() })),
            }
        }
    }

    /// VarReader with descriptors anywhere (also past the fixed part), each
    /// field from the payload-area bytes or (inline bit) the inline bytes,
    /// and a sequence of takes that overruns: errors, never a read from the
    /// wrong source, and `finish` accounts for the rest of both.
    #[test]
    fn var_reader_never_reads_past_its_input(
        fixed in proptest::collection::vec(any::<u8>(), 0..64),
        var in proptest::collection::vec(any::<u8>(), 0..64),
        inl in proptest::collection::vec(any::<u8>(), 0..16),
        offsets in proptest::collection::vec(prop_oneof![0usize..72, (usize::MAX - 20)..=usize::MAX], 0..6),
    ) {
        let mut vr = VarReader::split(&var, &inl);
        let (mut used_var, mut used_inl) = (0usize, 0usize);
        for off in offsets {
            let inline = off
                .checked_add(8)
                .and_then(|e| fixed.get(off + 4..e))
                .is_some_and(|f| u32::from_le_bytes(f.try_into().unwrap()) & VAR_INLINE != 0);
            let (src, used) = if inline { (&inl, &mut used_inl) } else { (&var, &mut used_var) };
            match vr.take(&fixed, off) {
                Ok(v) => {
                    prop_assert!(off.checked_add(VAR_DESC).is_some_and(|e| e <= fixed.len()));
                    prop_assert_eq!(&v.data[..], &src[*used..*used + v.data.len()]);
                    prop_assert_eq!(v.flags & VAR_INLINE, 0);
                    *used += v.data.len();
                }
                Err(DecodeError::OutOfBounds { .. }) => {
                    prop_assert!(off.checked_add(VAR_DESC).is_none_or(|e| e > fixed.len()));
                }
                Err(DecodeError::VarOutOfBounds { offset, len, available }) => {
                    prop_assert_eq!(offset, *used);
                    prop_assert_eq!(available, src.len());
                    prop_assert!(*used as u128 + len as u128 > src.len() as u128);
                }
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }
        let used = used_var + used_inl;
        let total = var.len() + inl.len();
        match vr.finish() {
            Ok(()) => prop_assert_eq!(used, total),
            Err(e) => prop_assert_eq!(e, DecodeError::TrailingBytes(total - used)),
        }
    }

    /// Comm from any 16 bytes: at most 16 bytes, stopping at the first NUL.
    #[test]
    fn comm_from_any_bytes(raw in any::<[u8; 16]>()) {
        let c = Comm::from_padded(&raw);
        let n = raw.iter().position(|&b| b == 0).unwrap_or(16);
        prop_assert_eq!(c.as_bytes(), &raw[..n]);
        let _ = c.to_string_lossy();
    }

    /// Decode hints for any integer: no panic (negative flags, i64::MIN errno).
    #[test]
    fn decode_hints_for_any_value(v in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), -200i64..200]) {
        use tracer_ebpf::types::Decode;
        for d in [Decode::Errno, Decode::OpenFlags, Decode::Signal] {
            if let Some(name) = tracer_ebpf::json::decoded_name(d, v) {
                prop_assert!(!name.is_empty() && !name.contains('"'));
            }
        }
    }
}

/// Each variable-length event type, by hand: a descriptor one byte longer
/// than what was delivered, and u32::MAX, both fail cleanly.
#[test]
fn every_variable_field_overrun_by_one_is_an_error() {
    for &ty in EventType::ALL {
        let n = var_fields(ty).len();
        if n == 0 {
            assert_eq!(Payload::decode(ty, &vec![0u8; ty.fixed_size()], b"x"), Err(DecodeError::TrailingBytes(1)));
            continue;
        }
        for k in 0..n {
            for claim in [4u32, u32::MAX] {
                let mut descs = vec![(0u32, 0u32, 0u64); n];
                descs[k].0 = claim;
                let fixed = fixed_with(ty, &[0], &descs, false);
                let r = Payload::decode(ty, &fixed, b"abc");
                assert!(matches!(r, Err(DecodeError::VarOutOfBounds { .. })), "{ty} field {k} claim {claim}: {r:?}");
            }
        }
        // Fixed part one byte short of the event's size.
        if ty.fixed_size() > 0 {
            let r = Payload::decode(ty, &vec![0u8; ty.fixed_size() - 1], b"");
            assert!(matches!(r, Err(DecodeError::FixedTooShort { .. })), "{ty}: {r:?}");
        }
    }
}

// -- PayloadArea::read on real mmapped BPF maps -------------------------------

mod area {
    use libbpf_rs::{libbpf_sys, MapCore, MapFlags, MapHandle, MapType};
    use std::os::fd::AsFd;
    use tracer_ebpf::payload_area::{geometry, AreaMaps, PayloadArea};
    use tracer_ebpf::types::{CHUNK_ELEM_SIZE, CHUNK_SIZE, CPU_CTL_SIZE};

    pub const NCPUS: usize = 2;
    pub const NCHUNKS: usize = 2;
    /// The pool (NCPUS x NCHUNKS) and the slots per CPU (all of it).
    pub const POOL: usize = NCPUS * NCHUNKS;
    pub const SLOTS: usize = POOL;
    const POOL_SIZE: usize = 128; // struct tb_pool

    /// The byte the fixture stores at `off` of array element `elem`.
    pub fn pattern(elem: usize, off: usize) -> u8 {
        (off as u32).wrapping_mul(2654435761).wrapping_add(elem as u32 * 97).rotate_right(13) as u8
    }

    /// The pool chunk the fixture's slot table gives slot `slot` of `cpu`
    /// (not the identity, so a reader that ignores the table reads the
    /// wrong bytes; CPU 1's slot 0 is neither of CPU 0's slots 0 and 1).
    pub fn chunk_of(cpu: usize, slot: usize) -> usize {
        (slot + 1 + cpu * (POOL / 2 + 1)) % POOL
    }

    pub struct Fixture {
        pub payload: MapHandle,
        pub ctl: MapHandle,
        pub owner: MapHandle,
        pub pool: MapHandle,
        pub area: PayloadArea,
        _slot: MapHandle,
    }

    fn u64_at(m: &MapHandle, key: usize, off: usize) -> u64 {
        let v = m.lookup(&(key as u32).to_ne_bytes(), MapFlags::ANY).expect("lookup").expect("present");
        u64::from_ne_bytes(v[off..off + 8].try_into().unwrap())
    }

    impl Fixture {
        /// Sets CPU `cpu`'s producer position (`head`, offset 0 of tb_cpu_ctl).
        pub fn set_head(&self, cpu: usize, head: u64) {
            let mut v = vec![0u8; CPU_CTL_SIZE];
            v[..8].copy_from_slice(&head.to_ne_bytes());
            self.ctl.update(&(cpu as u32).to_ne_bytes(), &v, MapFlags::ANY).expect("update cpu_ctl");
        }
        pub fn tail(&self, cpu: usize) -> u64 {
            u64_at(&self.ctl, cpu, 64)
        }
        /// Marks every pool chunk held, as producers would have.
        pub fn hold_all(&self) {
            for c in 0..POOL {
                self.owner.update(&(c as u32).to_ne_bytes(), &1u64.to_ne_bytes(), MapFlags::ANY).expect("owner");
            }
            let mut v = vec![0u8; POOL_SIZE];
            v[..8].copy_from_slice(&(POOL as u64).to_ne_bytes());
            self.pool.update(&0u32.to_ne_bytes(), &v, MapFlags::ANY).expect("pool");
        }
        pub fn held(&self, chunk: usize) -> bool {
            u64_at(&self.owner, chunk, 0) != 0
        }
        pub fn used(&self) -> u64 {
            u64_at(&self.pool, 0, 0)
        }
    }

    fn mmapable(name: &str, value_size: usize, entries: usize) -> Option<MapHandle> {
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: libbpf_sys::BPF_F_MMAPABLE,
            ..Default::default()
        };
        match MapHandle::create(MapType::Array, Some(name), 4, value_size as u32, entries as u32, &opts) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("skipping payload-area fuzzing: cannot create BPF maps ({e}); needs root");
                None
            }
        }
    }

    pub fn fixture() -> Option<Fixture> {
        assert_eq!(geometry(NCPUS, NCHUNKS), (POOL, SLOTS));
        let payload = mmapable("tbfuzz_payload", CHUNK_ELEM_SIZE, POOL)?;
        let ctl = mmapable("tbfuzz_cpu_ctl", CPU_CTL_SIZE, NCPUS)?;
        let owner = mmapable("tbfuzz_owner", 8, POOL)?;
        let slot = mmapable("tbfuzz_slot", 8, NCPUS * SLOTS)?;
        let pool = mmapable("tbfuzz_pool", POOL_SIZE, 1)?;
        for elem in 0..POOL {
            let v: Vec<u8> = (0..CHUNK_ELEM_SIZE).map(|o| pattern(elem, o)).collect();
            payload.update(&(elem as u32).to_ne_bytes(), &v, MapFlags::ANY).expect("fill payload");
        }
        for cpu in 0..NCPUS {
            for s in 0..SLOTS {
                let key = ((cpu * SLOTS + s) as u32).to_ne_bytes();
                slot.update(&key, &(chunk_of(cpu, s) as u64).to_ne_bytes(), MapFlags::ANY).expect("fill slots");
            }
        }
        let maps = AreaMaps {
            payload: payload.as_fd(),
            cpu_ctl: ctl.as_fd(),
            chunk_owner: owner.as_fd(),
            chunk_slot: slot.as_fd(),
            pool: pool.as_fd(),
        };
        let area = PayloadArea::new(maps, NCPUS, NCHUNKS).expect("mmap the payload area");
        assert_eq!(area.region_size(), (SLOTS * CHUNK_SIZE) as u64);
        Some(Fixture { payload, ctl, owner, pool, area, _slot: slot })
    }

    /// The bytes at logical positions [pos, pos + len) of `cpu`'s stream.
    pub fn model(cpu: usize, pos: u64, len: u32) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let p = pos.wrapping_add(i);
                let elem = chunk_of(cpu, ((p / CHUNK_SIZE as u64) % SLOTS as u64) as usize);
                pattern(elem, (p % CHUNK_SIZE as u64) as usize)
            })
            .collect()
    }
}

/// A location: mostly plausible, often at the edges (chunk and region
/// boundaries, u64::MAX, lengths past the region).
fn location() -> impl Strategy<Value = (u32, u64, u32)> {
    use tracer_ebpf::types::CHUNK_SIZE;
    let region = (area::SLOTS * CHUNK_SIZE) as u64;
    let cpu = prop_oneof![4 => 0u32..area::NCPUS as u32, 1 => Just(area::NCPUS as u32), 1 => any::<u32>()];
    let pos = prop_oneof![
        3 => 0u64..4 * region,
        2 => (1u64..8).prop_flat_map(|k| (k * CHUNK_SIZE as u64 - 64)..(k * CHUNK_SIZE as u64 + 64)),
        1 => (u64::MAX - region - 64)..=u64::MAX,
        1 => any::<u64>(),
    ];
    let len = prop_oneof![
        4 => 0u32..4096,
        1 => (CHUNK_SIZE as u32 - 8)..(CHUNK_SIZE as u32 + 8),
        1 => (region as u32 - 4)..(region as u32 + 4),
        1 => any::<u32>(),
    ];
    (cpu, pos, len)
}

#[test]
fn payload_area_reads_any_location_safely() {
    let Some(mut fx) = area::fixture() else { return };
    let region = fx.area.region_size();
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() });
    let result = runner.run(&(location(), any::<u64>()), |((cpu, pos, len), head)| {
        let mut out = b"prefix".to_vec();
        let in_area = (cpu as usize) < area::NCPUS && len as u64 <= region;
        if in_area {
            fx.set_head(cpu as usize, head);
        }
        let r = fx.area.read(cpu, pos, len, &mut out);
        if !in_area {
            prop_assert_eq!(r, Err(DecodeError::PayloadOutOfRange { cpu, pos, len }));
            prop_assert_eq!(&out[..], b"prefix", "nothing appended on error");
            return Ok(());
        }
        let intact = r.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&out[..6], b"prefix");
        prop_assert_eq!(out.len(), 6 + len as usize);
        prop_assert!(out[6..] == area::model(cpu as usize, pos, len)[..], "wrong bytes at cpu {} pos {} len {}", cpu, pos, len);
        // Intact unless the producer is past pos + region (where it reuses these
        // bytes); zero bytes cannot have been overwritten.
        if len == 0 {
            prop_assert!(intact, "zero bytes at cpu {} pos {} head {}", cpu, pos, head);
        } else {
            if let Some(limit) = pos.checked_add(region) {
                prop_assert_eq!(intact, head <= limit, "head {} pos {}", head, pos);
            }
            prop_assert_eq!(fx.area.intact(cpu, pos), intact);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // release() of a CPU that does not exist is ignored; of one that does, published.
    fx.area.release(area::NCPUS as u32, 5);
    fx.area.release(u32::MAX, 5);
    fx.area.release(1, 12345);
    assert_eq!(fx.tail(1), 12345);
    drop(fx.payload);
}

/// The exact edges, by hand, so they are covered whatever proptest draws.
#[test]
fn payload_area_edges() {
    use tracer_ebpf::types::CHUNK_SIZE;
    let Some(fx) = area::fixture() else { return };
    let region = fx.area.region_size();
    fx.set_head(0, 0);
    fx.set_head(1, 0);
    let mut out = Vec::new();
    // The whole region, starting mid-chunk: wraps around once.
    assert_eq!(fx.area.read(0, CHUNK_SIZE as u64 / 2, region as u32, &mut out), Ok(true));
    assert_eq!(out, area::model(0, CHUNK_SIZE as u64 / 2, region as u32));
    // One byte more than the region; a CPU past the last.
    for (cpu, len) in [(0u32, region as u32 + 1), (area::NCPUS as u32, 1), (u32::MAX, 0)] {
        out.clear();
        assert_eq!(fx.area.read(cpu, 0, len, &mut out), Err(DecodeError::PayloadOutOfRange { cpu, pos: 0, len }));
        assert!(out.is_empty());
    }
    // Zero bytes anywhere is fine, even with the producer far ahead.
    out.clear();
    assert_eq!(fx.area.read(1, 7, 0, &mut out), Ok(true));
    assert!(out.is_empty());
    fx.set_head(1, 7 + 10 * region);
    assert_eq!(fx.area.read(1, 7, 0, &mut out), Ok(true));
    fx.set_head(1, 0);
    // The producer exactly one region ahead is still intact; one byte more is not.
    fx.set_head(1, 100 + region);
    assert_eq!(fx.area.read(1, 100, 10, &mut out), Ok(true));
    fx.set_head(1, 101 + region);
    out.clear();
    assert_eq!(fx.area.read(1, 100, 10, &mut out), Ok(false));
}

/// Positions near u64::MAX: the logical position wraps in a u64. Must be
/// an error or a (flagged) read, never a panic, in debug builds too.
#[test]
fn payload_area_positions_near_u64_max() {
    let Some(fx) = area::fixture() else { return };
    fx.set_head(0, 0);
    for pos in [u64::MAX, u64::MAX - 3, u64::MAX - fx.area.region_size() + 1] {
        let mut out = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fx.area.read(0, pos, 16, &mut out)));
        assert!(r.is_ok(), "PayloadArea::read(cpu 0, pos {pos:#x}, len 16) panicked (integer overflow in `pos + done` / `pos + region`, rs/payload_area.rs)");
    }
}

/// Releasing gives back exactly the pool chunks wholly read: the ones the
/// slot table names for the logical chunks the tail passed, each once, and
/// only then publishes the tail.
#[test]
fn payload_area_release_gives_back_the_chunks_passed() {
    use tracer_ebpf::types::CHUNK_SIZE;
    let Some(mut fx) = area::fixture() else { return };
    let chunk = CHUNK_SIZE as u64;
    fx.hold_all();
    // Inside logical chunk 0: nothing given back.
    fx.area.release(0, chunk / 2);
    assert_eq!((fx.tail(0), fx.used()), (chunk / 2, area::POOL as u64));
    assert!((0..area::POOL).all(|c| fx.held(c)));
    // Past logical chunks 0 and 1 of CPU 0: their pool chunks, no others.
    fx.area.release(0, 2 * chunk + 5);
    assert_eq!((fx.tail(0), fx.used()), (2 * chunk + 5, area::POOL as u64 - 2));
    let freed = [area::chunk_of(0, 0), area::chunk_of(0, 1)];
    for c in 0..area::POOL {
        assert_eq!(fx.held(c), !freed.contains(&c), "pool chunk {c}");
    }
    // The same tail again frees nothing more.
    fx.area.release(0, 2 * chunk + 5);
    assert_eq!(fx.used(), area::POOL as u64 - 2);
    // CPU 1 past its logical chunk 0 (slot 0 of CPU 1).
    fx.area.release(1, chunk);
    assert_eq!((fx.tail(1), fx.used()), (chunk, area::POOL as u64 - 3));
    assert!(!fx.held(area::chunk_of(1, 0)));
    // CPUs that do not exist: nothing changes.
    fx.area.release(area::NCPUS as u32, 10 * chunk);
    fx.area.release(u32::MAX, 10 * chunk);
    assert_eq!(fx.used(), area::POOL as u64 - 3);
}

// -- generic tracepoints: format parsing and raw-record decoding ----------------
//
// `tracepoint_format::parse` reads a tracefs format file; `GenericPayload::decode`
// decodes a raw record with it. Both take bytes from outside (the kernel's
// text, the captured record): malformed input must be an error, never a panic.

mod generic {
    use super::*;
    use std::sync::Arc;
    use tracer_ebpf::tracepoint_format::{Format, GenericPayload, MAX_USER_STRS};
    use tracer_ebpf::types::Var;

    /// One `field:` line with the given declaration and numbers.
    pub fn field_line(decl: &str, offset: &str, size: &str, signed: &str) -> String {
        format!("\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:{signed};\n")
    }

    pub fn decl() -> impl Strategy<Value = String> {
        let ty = proptest::sample::select(vec![
            "int",
            "unsigned int",
            "long",
            "unsigned long",
            "u8",
            "s16",
            "u64",
            "char",
            "unsigned char",
            "const char *",
            "char *",
            "pid_t",
            "umode_t",
            "size_t",
            "void *",
            "__data_loc char[]",
            "__data_loc u32[]",
            "__data_loc unsigned long[]",
            "bool",
            "struct foo",
            "",
            "*",
            "[",
        ]);
        let name = proptest::sample::select(vec!["a", "fd", "buf", "filename", "common_x", "comm", "x y", ""]);
        let array = prop_oneof![3 => Just(String::new()), 1 => (0usize..20).prop_map(|n| format!("[{n}]")),
                                1 => Just("[]".to_string()), 1 => Just("[x]".to_string())];
        (ty, name, array).prop_map(|(t, n, a)| format!("{t} {n}{a}"))
    }

    pub fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => (0usize..80).prop_map(|n| n.to_string()),
            1 => Just(usize::MAX.to_string()),
            1 => Just((usize::MAX - 3).to_string()),
            1 => Just("-1".to_string()),
            1 => Just("".to_string()),
            1 => Just("0".to_string()),
        ]
    }

    pub fn format_text() -> impl Strategy<Value = (String, String)> {
        let name = proptest::sample::select(vec!["syscalls/sys_enter_x", "syscalls/sys_exit_x", "cat/tp"]);
        let fields = proptest::collection::vec((decl(), number(), number(), proptest::sample::select(vec!["0", "1", ""])), 0..8);
        let id = prop_oneof![Just("ID: 7\n".to_string()), Just(String::new()), Just("ID: x\n".to_string())];
        (name, id, fields).prop_map(|(name, id, fields)| {
            let mut text = format!("name: x\n{id}format:\n");
            text += &field_line("unsigned short common_type", "0", "2", "0");
            for (d, o, s, g) in &fields {
                text += &field_line(d, o, s, g);
            }
            (name.to_string(), text)
        })
    }

    pub fn decode_any(f: &Arc<Format>, raw: Vec<u8>, flags: u32, strs: [Var; MAX_USER_STRS]) {
        let raw = Var { data: raw.into(), flags, size: 0 };
        if let Ok(p) = GenericPayload::decode(Arc::clone(f), &raw, strs) {
            let mut n = 0;
            p.for_each_field(|_, _| n += 1);
            assert_eq!(n, f.fields.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, .. ProptestConfig::default() })]

    /// Arbitrary and edge-case format files parse or fail cleanly; whatever
    /// parses decodes any raw record cleanly.
    #[test]
    fn generic_format_and_record_never_panic(
        (name, text) in generic::format_text(),
        raw in proptest::collection::vec(any::<u8>(), 0..96),
        flags in any::<u32>(),
    ) {
        if let Ok(f) = tracer_ebpf::tracepoint_format::parse(&name, &text) {
            let f = std::sync::Arc::new(f);
            generic::decode_any(&f, raw, flags, Default::default());
        }
    }

    /// Random text never panics the parser.
    #[test]
    fn generic_format_parser_takes_any_text(text in "(ID: [0-9]{1,3}\n)?(field:[ -~]{0,40};\toffset:[0-9-]{0,3};\tsize:[0-9]{0,3};\n){0,6}") {
        let _ = tracer_ebpf::tracepoint_format::parse("cat/tp", &text);
    }
}

/// Every format this kernel has, with random raw records of every length up
/// to its size and a bit more (skipped when tracefs is not readable).
#[test]
fn generic_decode_of_every_kernel_format_with_random_records() {
    use tracer_ebpf::tracepoint_format::load;
    let tracing = std::path::Path::new("/sys/kernel/tracing");
    let Ok(cats) = std::fs::read_dir(tracing.join("events")) else {
        eprintln!("skipping: /sys/kernel/tracing/events is not readable");
        return;
    };
    let mut state = 0x9e3779b97f4a7c15u64; // xorshift64: deterministic bytes
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    let (mut formats, mut records) = (0, 0);
    for cat in cats.flatten().filter(|c| c.path().is_dir()) {
        for tp in std::fs::read_dir(cat.path()).into_iter().flatten().flatten().filter(|t| t.path().is_dir()) {
            let name = format!("{}/{}", cat.file_name().to_string_lossy(), tp.file_name().to_string_lossy());
            let Ok(f) = load(tracing, &name) else { continue };
            let f = std::sync::Arc::new(f);
            formats += 1;
            for len in (0..=f.raw_size + 8).step_by(1 + f.raw_size / 16) {
                let raw: Vec<u8> = (0..len).map(|_| next()).collect();
                generic::decode_any(&f, raw, 0, Default::default());
                records += 1;
            }
        }
    }
    eprintln!("decoded {records} random records against {formats} kernel formats");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, .. ProptestConfig::default() })]

    /// Formats built directly (any offset, size, shape; a format is only as
    /// good as the text it came from) decode any raw record without a panic.
    #[test]
    fn generic_decode_with_any_field_geometry(
        fields in proptest::collection::vec((
            prop_oneof![4 => 0usize..64, 1 => Just(usize::MAX), 1 => (usize::MAX - 8)..=usize::MAX],
            prop_oneof![4 => 0usize..16, 1 => Just(0usize), 1 => Just(usize::MAX), 1 => 9usize..64],
            0u8..6,
            any::<bool>(),
            0usize..10,
        ), 0..6),
        raw in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        use tracer_ebpf::tracepoint_format::{FieldShape, Format, FormatField};
        let fields = fields.into_iter().enumerate().map(|(i, (offset, size, shape, signed, elem))| FormatField {
            name: format!("f{i}"),
            c_type: "int".into(),
            offset,
            size,
            shape: match shape {
                0 => FieldShape::Int { signed },
                1 => FieldShape::CharArray,
                2 => FieldShape::IntArray { elem, signed },
                3 => FieldShape::DataLocStr,
                4 => FieldShape::DataLocArray { elem, signed },
                _ => FieldShape::UserStr { slot: elem },
            },
            decode: None,
        }).collect();
        let f = std::sync::Arc::new(Format { name: "cat/tp", id: 1, fields, raw_size: 0 });
        generic::decode_any(&f, raw, 0, Default::default());
    }
}
