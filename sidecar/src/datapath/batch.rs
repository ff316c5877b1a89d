//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (aya has no wrapper
//! for them): many map writes for one syscall.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::sys::{bpf, ENOTSUPP};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A batch the kernel stopped part-way through.
#[derive(Debug)]
pub struct BatchError {
    /// Elements written before the one that failed.
    pub done: usize,
    pub error: std::io::Error,
}

impl BatchError {
    /// The kernel has no batch operation for this map type.
    pub fn unsupported(&self) -> bool {
        self.done == 0
            && matches!(
                self.error.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(ENOTSUPP)
            )
    }
}

fn run(
    command: libc::c_long,
    map: BorrowedFd<'_>,
    keys: *const u8,
    values: *const u8,
    count: usize,
) -> Result<(), BatchError> {
    let mut attr = BatchAttr {
        keys: keys as u64,
        values: values as u64,
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        ..Default::default()
    };
    // `keys` and `values` point at `count` elements of the map's key and
    // value sizes, alive for the call (the callers' slices).
    match bpf(command, &mut attr) {
        Ok(_) => Ok(()),
        Err(error) => Err(BatchError {
            done: elements_done(count, attr.count),
            error,
        }),
    }
}

/// Elements the kernel wrote before a failure. It reports that count in
/// `attr.count` only once it has started on the elements; a command that fails
/// before them (no batch support for the map type, as on 5.10 for LPM tries)
/// leaves the requested count in place, which means none were written.
fn elements_done(requested: usize, reported: u32) -> usize {
    let reported = reported as usize;
    if reported >= requested {
        0
    } else {
        reported
    }
}

/// Writes `keys[i]` → `values[i]` for every `i`, in order. `K` and `V` must
/// be the map's key and value layouts.
pub fn update<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), BatchError> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    if keys.is_empty() {
        return Ok(());
    }
    run(
        BPF_MAP_UPDATE_BATCH,
        map,
        keys.as_ptr().cast(),
        values.as_ptr().cast(),
        keys.len(),
    )
}

/// Deletes every key of `keys`, in order.
pub fn delete<K: Copy>(map: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchError> {
    if keys.is_empty() {
        return Ok(());
    }
    run(
        BPF_MAP_DELETE_BATCH,
        map,
        keys.as_ptr().cast(),
        std::ptr::null(),
        keys.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::elements_done;

    #[test]
    fn a_count_left_as_requested_means_nothing_was_written() {
        assert_eq!(elements_done(10, 10), 0);
        assert_eq!(elements_done(10, 0), 0);
        assert_eq!(elements_done(10, 3), 3);
    }
}
