//! The loaded BPF object, through the skeleton libbpf-cargo generates from
//! c/bootstrap.bpf.c: maps, programs and rodata by their typed names, so a
//! name or layout that does not match the BPF side fails to compile.

use crate::bpf::{BootstrapMaps, BootstrapProgs, BootstrapSkel, OpenBootstrapSkel};
use libbpf_rs::skel::Skel;
use libbpf_rs::{Object, OpenObject};
use std::mem::{ManuallyDrop, MaybeUninit};

/// Storage the skeleton borrows for as long as it lives.
type Storage = MaybeUninit<OpenObject>;

/// A loaded skeleton with the storage it borrows (a skeleton holds a
/// reference into it, so the two are kept, and dropped, together).
pub(crate) struct Loaded {
    skel: ManuallyDrop<BootstrapSkel<'static>>,
    storage: *mut Storage,
}

/// Fresh storage for `BootstrapSkelBuilder::open` (through
/// `storage_ref`), to be given back to `Loaded::new`, or to `free_storage`
/// if opening or loading fails.
pub(crate) fn new_storage() -> *mut Storage {
    Box::into_raw(Box::new(MaybeUninit::uninit()))
}

/// The reference the skeleton borrows.
///
/// # Safety
/// `storage` came from `new_storage` and is freed only after every
/// skeleton opened with the reference is dropped.
pub(crate) unsafe fn storage_ref(storage: *mut Storage) -> &'static mut Storage {
    // SAFETY: per the contract, valid and not otherwise in use.
    unsafe { &mut *storage }
}

/// Frees storage whose skeleton is gone (open or load failed).
///
/// # Safety
/// `storage` came from `new_storage` and nothing borrows it any more.
pub(crate) unsafe fn free_storage(storage: *mut Storage) {
    // SAFETY: per the contract, a Box we leaked and no longer borrowed.
    drop(unsafe { Box::from_raw(storage) });
}

impl Loaded {
    /// # Safety
    /// `storage` is the storage `skel` was opened with, from `new_storage`.
    pub(crate) unsafe fn new(skel: BootstrapSkel<'static>, storage: *mut Storage) -> Loaded {
        Loaded { skel: ManuallyDrop::new(skel), storage }
    }

    pub(crate) fn maps(&self) -> &BootstrapMaps<'static> {
        &self.skel.maps
    }

    pub(crate) fn progs(&self) -> &BootstrapProgs<'static> {
        &self.skel.progs
    }

    pub(crate) fn object(&self) -> &Object {
        self.skel.object()
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // SAFETY: the skeleton goes first, then the storage it borrowed;
        // neither is used again.
        unsafe {
            ManuallyDrop::drop(&mut self.skel);
            free_storage(self.storage);
        }
    }
}

/// The open (not yet loaded) skeleton, as `open_and_load` prepares it.
pub(crate) type Open = OpenBootstrapSkel<'static>;
