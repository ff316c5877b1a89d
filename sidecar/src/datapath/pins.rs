//! The pin directory: generations of maps and programs, and the links.
//!
//! ```text
//! <pin_dir>/gen-<n>/<MAP NAME>        maps of generation n
//! <pin_dir>/gen-<n>/prog_fast_path    programs of generation n
//! <pin_dir>/link_<ifname>             one XDP link per interface
//! ```
//!
//! The live generation is the one the links run: each link's program id is
//! matched with the `prog_fast_path` pin of a generation
//! ([`live_generation`]). A generation no link runs (left by a start that
//! failed or was killed before it went live) is never read as the live
//! one. A restarted daemon builds generation n+1 from its sources while n
//! keeps forwarding, then moves every link to the new program in one
//! `BPF_LINK_UPDATE` each (atomic per interface), then removes the other
//! generations. Links are never detached and never unpinned on the way.
//!
//! A running daemon holds an exclusive `flock` on the pin directory itself
//! ([`PinLock`]; bpffs holds no regular files, so the directory is the lock
//! file): a second `run` on the same directory refuses to start, and
//! `detach` refuses unless forced.

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use super::sys::{bpf, BPF_LINK_UPDATE, BPF_OBJ_GET, BPF_OBJ_GET_INFO_BY_FD};

const GENERATION_PREFIX: &str = "gen-";
const LINK_PREFIX: &str = "link_";
/// The pin of a generation's entry program.
pub const FAST_PATH_PIN: &str = "prog_fast_path";

/// Why the pins could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("permission denied reading the pinned datapath in {path} ({source}): `status`, `diff` and `lookup` read the pinned maps and links through bpf(), which needs root (CAP_SYS_ADMIN or CAP_BPF); run it with sudo")]
    PermissionDenied { path: PathBuf, source: io::Error },
    #[error(
        "no datapath is pinned in {0} (nothing attached: `pf-sidecar run` or `attach` pins one)"
    )]
    NotPinned(PathBuf),
    #[error("the links in {pin_dir} run fast_path program ids {ids:?}, which no generation there pins (a generation removed by hand?); `pf-sidecar detach --all` and start again")]
    Unresolved { pin_dir: PathBuf, ids: Vec<u32> },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn is_permission(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

fn io_error(what: &'static str, path: &Path, source: io::Error) -> PinError {
    if is_permission(&source) {
        PinError::PermissionDenied {
            path: path.to_path_buf(),
            source,
        }
    } else {
        PinError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Names under `pin_dir` with `prefix`, the rest of each name; an unreadable
/// directory is an error (a missing one is empty).
fn entries_with(pin_dir: &Path, prefix: &str) -> Result<Vec<String>, PinError> {
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("reading", pin_dir, e)),
    };
    Ok(entries
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix(prefix)
                .map(str::to_owned)
        })
        .collect())
}

/// Generation numbers present under `pin_dir`, ascending (none when the
/// directory cannot be read).
pub fn generations(pin_dir: &Path) -> Vec<u32> {
    try_generations(pin_dir).unwrap_or_default()
}

fn try_generations(pin_dir: &Path) -> Result<Vec<u32>, PinError> {
    let mut found: Vec<u32> = entries_with(pin_dir, GENERATION_PREFIX)?
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    found.sort_unstable();
    Ok(found)
}

pub fn generation_dir(pin_dir: &Path, generation: u32) -> PathBuf {
    pin_dir.join(format!("{GENERATION_PREFIX}{generation}"))
}

/// The live generation's directory, if any: the one the links run, or,
/// when no link is pinned, the newest (see [`live_generation`]).
pub fn current_generation(pin_dir: &Path) -> Option<PathBuf> {
    live_generation(pin_dir).ok().map(|live| live.dir)
}

/// Interfaces with a pinned link (whether or not the link is still
/// attached; see [`links`]).
pub fn linked_interfaces(pin_dir: &Path) -> Vec<String> {
    let mut names = entries_with(pin_dir, LINK_PREFIX).unwrap_or_default();
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

#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
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

/// `BPF_OBJ_GET_INFO_BY_FD` into 64 zeroed bytes: the leading members of
/// `struct bpf_prog_info` or `struct bpf_link_info`, which is all we read.
fn object_info(fd: BorrowedFd<'_>) -> io::Result<[u32; 16]> {
    let mut info = [0u32; 16];
    let mut attr = InfoByFdAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// The kernel id of a program (`bpf_prog_info.id`).
pub fn program_id(program: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(object_info(program)?[1])
}

/// The id of the program pinned at `path`.
pub fn pinned_program_id(path: &Path) -> io::Result<u32> {
    let fd = open_pinned(path)?;
    program_id(std::os::fd::AsFd::as_fd(&fd))
}

/// `BPF_LINK_TYPE_XDP`.
const LINK_TYPE_XDP: u32 = 6;

/// A pinned XDP link as the kernel describes it now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkState {
    /// The interface name in the pin's name.
    pub ifname: String,
    pub link_id: u32,
    /// The program the link runs.
    pub prog_id: u32,
    /// The device the link is attached to; 0 when the device is gone (the
    /// kernel keeps a link whose interface was deleted, attached to nothing).
    pub ifindex: u32,
}

impl LinkState {
    /// The link still has a device: the program runs on it.
    pub fn attached(&self) -> bool {
        self.ifindex != 0
    }
}

/// What the kernel says about the link pinned at `path`.
pub fn link_at(path: &Path, ifname: &str) -> io::Result<LinkState> {
    let fd = open_pinned(path)?;
    let info = object_info(std::os::fd::AsFd::as_fd(&fd))?;
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8
    // bytes whose `xdp.ifindex` is its first member (offset 16).
    if info[0] != LINK_TYPE_XDP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is a link of type {}, not XDP", path.display(), info[0]),
        ));
    }
    Ok(LinkState {
        ifname: ifname.to_owned(),
        link_id: info[1],
        prog_id: info[2],
        ifindex: info[4],
    })
}

/// Every pinned link under `pin_dir`, sorted by interface name.
pub fn links(pin_dir: &Path) -> Result<Vec<LinkState>, PinError> {
    let mut names = entries_with(pin_dir, LINK_PREFIX)?;
    names.sort();
    names
        .into_iter()
        .map(|ifname| {
            let path = pin_dir.join(format!("{LINK_PREFIX}{ifname}"));
            link_at(&path, &ifname).map_err(|e| io_error("reading the link", &path, e))
        })
        .collect()
}

/// How the live generation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveSource {
    /// The pinned links run its `fast_path`.
    Links,
    /// No link is pinned: the newest generation, which nothing runs.
    Newest,
}

/// The generation the datapath runs.
#[derive(Debug, Clone)]
pub struct Live {
    pub dir: PathBuf,
    pub generation: u32,
    pub source: LiveSource,
    /// Its `fast_path` program id, when its pin can be read.
    pub fast_path_id: Option<u32>,
    pub links: Vec<LinkState>,
    /// Anything an operator should know: the fallback to the newest
    /// generation, links split between generations, generations nothing runs.
    pub notes: Vec<String>,
}

impl Live {
    /// The generation's directory name (`gen-<n>`).
    pub fn name(&self) -> String {
        format!("{GENERATION_PREFIX}{}", self.generation)
    }
}

/// Finds the generation the pinned links run: each link's program id is
/// matched with the `prog_fast_path` pin of every generation. With no link
/// pinned it falls back to the newest generation and says so in `notes`.
/// Reading a pin directory one may not read is [`PinError::PermissionDenied`].
pub fn live_generation(pin_dir: &Path) -> Result<Live, PinError> {
    let generations = try_generations(pin_dir)?;
    let links = links(pin_dir)?;
    let mut by_program: BTreeMap<u32, u32> = BTreeMap::new();
    for &generation in &generations {
        let pin = generation_dir(pin_dir, generation).join(FAST_PATH_PIN);
        match pinned_program_id(&pin) {
            Ok(id) => {
                by_program.insert(id, generation);
            }
            Err(e) if is_permission(&e) => return Err(io_error("reading", &pin, e)),
            Err(_) => {}
        }
    }
    let fast_path_id = |generation: u32| {
        by_program
            .iter()
            .find(|(_, g)| **g == generation)
            .map(|(id, _)| *id)
    };
    let mut notes = Vec::new();
    if links.is_empty() {
        let Some(&newest) = generations.last() else {
            return Err(PinError::NotPinned(pin_dir.to_path_buf()));
        };
        notes.push(format!(
            "no link is pinned: reading the newest generation, {GENERATION_PREFIX}{newest}, which no interface runs"
        ));
        return Ok(Live {
            dir: generation_dir(pin_dir, newest),
            generation: newest,
            source: LiveSource::Newest,
            fast_path_id: fast_path_id(newest),
            links,
            notes,
        });
    }
    // Links per generation; during a switch they can briefly differ.
    let mut runs: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for link in &links {
        match by_program.get(&link.prog_id) {
            Some(&g) => runs.entry(g).or_default().push(&link.ifname),
            None => unknown.push(link.prog_id),
        }
    }
    let Some((&generation, _)) = runs
        .iter()
        .max_by_key(|(g, interfaces)| (interfaces.len(), **g))
    else {
        unknown.sort_unstable();
        unknown.dedup();
        return Err(PinError::Unresolved {
            pin_dir: pin_dir.to_path_buf(),
            ids: unknown,
        });
    };
    if runs.len() > 1 {
        let split: Vec<String> = runs
            .iter()
            .map(|(g, i)| format!("{GENERATION_PREFIX}{g}: {}", i.join(", ")))
            .collect();
        notes.push(format!(
            "the links run different generations ({}); reading {GENERATION_PREFIX}{generation}",
            split.join("; ")
        ));
    }
    if !unknown.is_empty() {
        notes.push(format!(
            "links run program ids {unknown:?}, which no generation here pins"
        ));
    }
    let idle: Vec<String> = generations
        .iter()
        .filter(|g| !runs.contains_key(g))
        .map(|g| format!("{GENERATION_PREFIX}{g}"))
        .collect();
    if !idle.is_empty() {
        notes.push(format!(
            "{} pinned but run by no link (left by a start that failed or was stopped before it went live; the next start removes it)",
            idle.join(", ")
        ));
    }
    Ok(Live {
        dir: generation_dir(pin_dir, generation),
        generation,
        source: LiveSource::Links,
        fast_path_id: fast_path_id(generation),
        links,
        notes,
    })
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

/// The exclusive lock a running daemon holds on its pin directory, for its
/// whole life (released when dropped or when the process dies).
#[derive(Debug)]
pub struct PinLock {
    dir: OwnedFd,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is in use by another `pf-sidecar run`{}: one daemon per pin directory; stop it first (systemctl stop pf-sidecar), or give this one another general.pin_dir", path.display(), holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("locking {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl PinLock {
    /// Creates `pin_dir` (0700) if needed and locks it, or says who holds it.
    pub fn acquire(pin_dir: &Path) -> Result<Self, LockError> {
        use std::os::unix::fs::DirBuilderExt;
        let io = |source| LockError::Io {
            path: pin_dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(pin_dir)
            .map_err(io)?;
        let dir = open_dir(pin_dir).map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                LockError::Held {
                    path: pin_dir.to_path_buf(),
                    holder: lock_holder(pin_dir),
                }
            } else {
                io(error)
            });
        }
        Ok(Self {
            dir,
            path: pin_dir.to_path_buf(),
        })
    }

    /// Whether the locked directory is still the one at the path (the
    /// directory can be removed or replaced under a running daemon).
    pub fn still_in_place(&self) -> bool {
        let mut locked: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into a valid out-pointer.
        if unsafe { libc::fstat(self.dir.as_raw_fd(), &mut locked) } != 0 {
            return false;
        }
        std::fs::metadata(&self.path).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino() == locked.st_ino && m.dev() == locked.st_dev
        })
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether a daemon holds `pin_dir`'s lock now: `Some(pid)` (the pid when
/// it can be found), `None` when the directory is free or absent.
pub fn lock_held(pin_dir: &Path) -> io::Result<Option<Option<u32>>> {
    let dir = match open_dir(pin_dir) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: flock on a descriptor we own; it is released when dropped.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(None);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(Some(lock_holder(pin_dir)))
    } else {
        Err(error)
    }
}

/// The pid holding an flock on `path`, from /proc/locks.
fn lock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, meta.dev(), meta.ino())
}

/// Parses /proc/locks lines (`1: FLOCK  ADVISORY  WRITE 1234 00:1e:5678 0 EOF`)
/// for the flock on (`dev`, `ino`).
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "->" marks a waiter, shifting the fields.
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let mut id = fields.get(5)?.split(':');
        let maj = u32::from_str_radix(id.next()?, 16).ok()?;
        let min = u32::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && inode == ino).then_some(pid)
    })
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
        retire_generations_except(&dir, &generation_dir(&dir, 10)).unwrap();
        assert_eq!(generations(&dir), vec![10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn with_no_link_the_newest_generation_is_read_and_the_fallback_is_said() {
        let dir = std::env::temp_dir().join(format!("pf-live-{}", std::process::id()));
        for g in [3, 4] {
            std::fs::create_dir_all(generation_dir(&dir, g)).unwrap();
        }
        let live = live_generation(&dir).unwrap();
        assert_eq!(live.source, LiveSource::Newest);
        assert_eq!(live.dir, generation_dir(&dir, 4));
        assert!(
            live.notes[0].contains("no link is pinned"),
            "{:?}",
            live.notes
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(live_generation(&dir), Err(PinError::NotPinned(_))));
    }

    #[test]
    fn an_unreadable_pin_directory_is_permission_denied_not_nothing_pinned() {
        let error = io_error(
            "reading",
            Path::new("/sys/fs/bpf/x"),
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(matches!(error, PinError::PermissionDenied { .. }));
        assert!(
            error.to_string().starts_with("permission denied"),
            "{error}"
        );
        let error = io_error(
            "reading",
            Path::new("/sys/fs/bpf/x"),
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(matches!(error, PinError::PermissionDenied { .. }));
    }

    #[test]
    fn the_lock_holder_is_found_in_proc_locks() {
        let dev = libc::makedev(0, 0x1e);
        let locks = "1: POSIX  ADVISORY  WRITE 99 00:1e:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:1e:77 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 5000 00:1e:77 0 EOF\n";
        assert_eq!(holder_in(locks, dev, 77), Some(4242));
        assert_eq!(holder_in(locks, dev, 78), None);
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("pf-lock-{}", std::process::id()));
        let lock = PinLock::acquire(&dir).unwrap();
        assert!(lock.still_in_place());
        match PinLock::acquire(&dir) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("a second lock was not refused: {other:?}"),
        }
        assert_eq!(lock_held(&dir).unwrap(), Some(Some(std::process::id())));
        drop(lock);
        assert_eq!(lock_held(&dir).unwrap(), None);
        let again = PinLock::acquire(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!again.still_in_place());
    }
}
