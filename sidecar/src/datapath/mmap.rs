//! Shared-memory views of `BPF_F_MMAPABLE` array maps.
//!
//! The IPv4 route tables are written through these views: a route change is
//! a handful of aligned 32-bit stores, which the datapath sees atomically,
//! instead of one syscall per /24 block.

use std::{
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

pub struct MmapRegion {
    base: NonNull<AtomicU32>,
    words: usize,
}

// SAFETY: the region is plain shared memory accessed only through atomics.
unsafe impl Send for MmapRegion {}
unsafe impl Sync for MmapRegion {}

impl MmapRegion {
    /// Maps `bytes` of the array map behind `fd`, read-write or read-only.
    pub fn map(fd: BorrowedFd<'_>, bytes: usize, writable: bool) -> std::io::Result<Self> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of a map fd; the kernel checks the size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(ptr.cast()).expect("mmap returned null"),
            words: bytes / 4,
        })
    }

    pub fn len_words(&self) -> usize {
        self.words
    }

    fn word(&self, index: usize) -> &AtomicU32 {
        assert!(
            index < self.words,
            "word {index} outside a {}-word map",
            self.words
        );
        // SAFETY: in bounds, 4-byte aligned (page-aligned base), valid while mapped.
        unsafe { &*self.base.as_ptr().add(index) }
    }

    pub fn load(&self, index: usize) -> u32 {
        self.word(index).load(Ordering::Acquire)
    }

    /// Release ordering: whatever the value refers to (a filled tbl8 group,
    /// a written nexthop) is visible before the value itself.
    pub fn store(&self, index: usize, value: u32) {
        self.word(index).store(value, Ordering::Release)
    }
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.words * 4) };
    }
}

/// The two IPv4 levels as mapped memory.
pub struct MmapDir24Store {
    pub tbl24: MmapRegion,
    pub tbl8: MmapRegion,
    pub groups: u32,
}

impl pf_control::dir24::Dir24Store for MmapDir24Store {
    // Element i of V4_TBL24 packs blocks 2i and 2i+1, so block b is word b.
    fn tbl24(&self, block: u32) -> u32 {
        self.tbl24.load(block as usize)
    }
    fn set_tbl24(&mut self, block: u32, action: u32) {
        self.tbl24.store(block as usize, action)
    }
    fn tbl8(&self, group: u32, offset: u32) -> u32 {
        self.tbl8
            .load(group as usize * pf_common::maps::TBL8_GROUP_SIZE + offset as usize)
    }
    fn set_tbl8(&mut self, group: u32, offset: u32, action: u32) {
        self.tbl8.store(
            group as usize * pf_common::maps::TBL8_GROUP_SIZE + offset as usize,
            action,
        )
    }
    fn tbl8_groups(&self) -> u32 {
        self.groups
    }
}
