//! The pin directory: generations of maps and programs, and the links.
//!
//! ```text
//! <pin_dir>/gen-<n>/<MAP NAME>        maps of generation n
//! <pin_dir>/gen-<n>/prog_fast_path    programs of generation n
//! <pin_dir>/link_<ifname>             one XDP link per interface
//! ```
//!
//! The newest generation is the live one. A restarted daemon builds
//! generation n+1 from its sources while n keeps forwarding, then moves every
//! link to the new program in one `BPF_LINK_UPDATE` each (atomic per
//! interface), then removes the older generations. Links are never detached
//! and never unpinned on the way.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use super::sys::{bpf, BPF_LINK_UPDATE, BPF_OBJ_GET};

const GENERATION_PREFIX: &str = "gen-";

/// Generation numbers present under `pin_dir`, ascending.
pub fn generations(pin_dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(pin_dir)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    e.ok()?
                        .file_name()
                        .to_str()?
                        .strip_prefix(GENERATION_PREFIX)?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found
}

pub fn generation_dir(pin_dir: &Path, generation: u32) -> PathBuf {
    pin_dir.join(format!("{GENERATION_PREFIX}{generation}"))
}

/// The live generation's directory, if any.
pub fn current_generation(pin_dir: &Path) -> Option<PathBuf> {
    generations(pin_dir)
        .last()
        .map(|&g| generation_dir(pin_dir, g))
}

/// Interfaces with a pinned link.
pub fn linked_interfaces(pin_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pin_dir)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    e.ok()?
                        .file_name()
                        .to_str()?
                        .strip_prefix("link_")
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Removes every generation except `keep` (the kernel frees their maps and
/// programs once nothing references them).
pub fn retire_generations_except(pin_dir: &Path, keep: &Path) -> io::Result<()> {
    for generation in generations(pin_dir) {
        let dir = generation_dir(pin_dir, generation);
        if dir != keep {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Opens a pinned object without touching the pin.
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Points the pinned XDP link at `program`, atomically, leaving the pin.
pub fn update_link(link_pin: &Path, program: BorrowedFd<'_>) -> io::Result<()> {
    let link = open_pinned(link_pin)?;
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_found_in_numeric_order() {
        let dir = std::env::temp_dir().join(format!("pf-gens-{}", std::process::id()));
        for g in [10, 2, 9] {
            std::fs::create_dir_all(generation_dir(&dir, g)).unwrap();
        }
        std::fs::create_dir_all(dir.join("gen-x")).unwrap();
        assert_eq!(generations(&dir), vec![2, 9, 10]);
        assert_eq!(current_generation(&dir), Some(generation_dir(&dir, 10)));
        retire_generations_except(&dir, &generation_dir(&dir, 10)).unwrap();
        assert_eq!(generations(&dir), vec![10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
