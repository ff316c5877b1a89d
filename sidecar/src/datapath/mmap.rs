//! Shared-memory views of `BPF_F_MMAPABLE` array maps.
//!
//! The route tables are written through these views: a route change is a
//! handful of aligned 32-bit stores, which the datapath sees atomically,
//! instead of one syscall per /24 block or trie node.

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

    /// The word at `index`, or `None` outside the region (for readers of
    /// indexes taken from the maps themselves).
    pub fn get(&self, index: usize) -> Option<u32> {
        (index < self.words).then(|| self.load(index))
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

/// The IPv6 trie's three arrays as mapped memory: `V6_TOP` (head and
/// cover per slot), `V6_NODES` (six words per node) and `V6_LEAVES` (one
/// word per leaf). Reads outside an array answer zeros, so a reader of
/// another process's maps never trusts an index it found there.
pub struct MmapV6Store {
    pub top: MmapRegion,
    pub nodes: MmapRegion,
    pub leaves: MmapRegion,
}

const NODE_WORDS: usize = std::mem::size_of::<pf_common::layout::V6Node>() / 4;

impl pf_control::v6trie::V6Read for MmapV6Store {
    fn head(&self, slot: u32) -> u32 {
        self.top.get(2 * slot as usize).unwrap_or(0)
    }
    fn cover(&self, slot: u32) -> u32 {
        self.top.get(2 * slot as usize + 1).unwrap_or(0)
    }
    fn node(&self, index: u32) -> pf_common::layout::V6Node {
        let base = index as usize * NODE_WORDS;
        let mut words = [0; NODE_WORDS];
        for (i, word) in words.iter_mut().enumerate() {
            *word = self.nodes.get(base + i).unwrap_or(0);
        }
        pf_common::layout::V6Node::from_words(words)
    }
    fn leaf(&self, index: u32) -> u32 {
        self.leaves.get(index as usize).unwrap_or(0)
    }
}

impl pf_control::v6trie::V6Store for MmapV6Store {
    fn set_head(&mut self, slot: u32, raw: u32) {
        self.top.store(2 * slot as usize, raw)
    }
    fn set_cover(&mut self, slot: u32, raw: u32) {
        self.top.store(2 * slot as usize + 1, raw)
    }
    fn set_node(&mut self, index: u32, node: &pf_common::layout::V6Node) {
        let base = index as usize * NODE_WORDS;
        for (i, word) in node.to_words().into_iter().enumerate() {
            self.nodes.store(base + i, word);
        }
    }
    fn set_leaf(&mut self, index: u32, raw: u32) {
        self.leaves.store(index as usize, raw)
    }
    fn node_capacity(&self) -> u32 {
        (self.nodes.len_words() / NODE_WORDS) as u32
    }
    fn leaf_capacity(&self) -> u32 {
        self.leaves.len_words() as u32
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
