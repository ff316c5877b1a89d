//! `TX_PORTS`: the DEVMAP_HASH of ports the datapath may redirect to, with
//! 4-byte values ([`TxPort`], the ifindex alone).
//!
//! On kernels that know devmap programs (5.8+), aya creates every devmap
//! with the 8-byte `bpf_devmap_val`, whatever the object declares, and its
//! `DevMapHash` refuses any other size. A devmap with room for a program
//! makes kernels 5.8 to 5.13 refuse generic XDP for every program using it.
//! So after aya has created the maps, and before any program is loaded,
//! [`narrow`] puts a 4-byte map of our own under aya's descriptor number:
//! the relocated instructions, the pins and every handle then name it. The
//! sidecar reads and writes it with the raw element commands.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{
    maps::{Map, MapData},
    Ebpf,
};
use pf_common::{maps as names, TxPort};

use super::{
    sys::{self, MapSpec, BPF_F_RDONLY_PROG, BPF_MAP_TYPE_DEVMAP_HASH},
    DatapathError,
};

/// The value size the datapath declares for `TX_PORTS`.
pub const VALUE_SIZE: u32 = std::mem::size_of::<TxPort>() as u32;
/// `sizeof(struct bpf_devmap_val)`: the size aya would give the map.
pub const DEVMAP_VAL_SIZE: u32 = 8;

fn map_error(source: io::Error) -> DatapathError {
    DatapathError::Io {
        name: names::TX_PORTS,
        source,
    }
}

fn data_of(map: &Map) -> Result<&MapData, DatapathError> {
    match map {
        Map::DevMapHash(data) => Ok(data),
        _ => Err(DatapathError::Map {
            name: names::TX_PORTS,
            source: aya::maps::MapError::InvalidName {
                name: names::TX_PORTS.to_string(),
            },
        }),
    }
}

/// Replaces the `TX_PORTS` aya created with one of 4-byte values, under the
/// same descriptor number. Call between `EbpfLoader::load` and the first
/// program load. A map adopted from a pin is left alone (it may be live);
/// one that already has 4-byte values is too.
pub(super) fn narrow(ebpf: &Ebpf, adopted: bool) -> Result<(), DatapathError> {
    let map = ebpf
        .map(names::TX_PORTS)
        .ok_or(DatapathError::Missing(names::TX_PORTS))?;
    let data = data_of(map)?;
    let info = data.info().map_err(|source| DatapathError::Map {
        name: names::TX_PORTS,
        source,
    })?;
    if adopted || info.value_size() == VALUE_SIZE {
        return Ok(());
    }
    let ours = sys::map_create(&MapSpec {
        map_type: BPF_MAP_TYPE_DEVMAP_HASH,
        key_size: 4,
        value_size: VALUE_SIZE,
        max_entries: info.max_entries(),
        // The kernel adds BPF_F_RDONLY_PROG to every devmap itself, and
        // refuses it when asked for.
        flags: info.map_flags() & !BPF_F_RDONLY_PROG,
        name: names::TX_PORTS,
    })
    .map_err(map_error)?;
    let target = data.fd().as_fd().as_raw_fd();
    // SAFETY: both descriptors are open. `target` stays owned by aya's
    // MapData and keeps its number; dup3 atomically makes it refer to our
    // map and releases aya's (nothing else holds it yet). `ours` is closed
    // when dropped.
    if unsafe { libc::dup3(ours.as_raw_fd(), target, libc::O_CLOEXEC) } < 0 {
        return Err(map_error(io::Error::last_os_error()));
    }
    Ok(())
}

/// A handle on `TX_PORTS`.
pub struct TxPorts {
    data: MapData,
    /// 4, or 8 for a map adopted from a pin made by an older pf-sidecar.
    value_size: u32,
}

impl TxPorts {
    pub(super) fn new(map: Map) -> Result<Self, DatapathError> {
        data_of(&map)?;
        let Map::DevMapHash(data) = map else {
            unreachable!("checked above")
        };
        Self::from_data(data)
    }

    /// Opens the map of a pin (for tools and tests).
    pub fn from_pin(path: &std::path::Path) -> Result<Self, DatapathError> {
        let data = MapData::from_pin(path).map_err(|source| DatapathError::Map {
            name: names::TX_PORTS,
            source,
        })?;
        Self::from_data(data)
    }

    fn from_data(data: MapData) -> Result<Self, DatapathError> {
        let info = data.info().map_err(|source| DatapathError::Map {
            name: names::TX_PORTS,
            source,
        })?;
        let value_size = info.value_size();
        if info.key_size() != 4 || !matches!(value_size, VALUE_SIZE | DEVMAP_VAL_SIZE) {
            return Err(map_error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "key size {} and value size {value_size}, expected 4 and {VALUE_SIZE}",
                    info.key_size()
                ),
            )));
        }
        Ok(Self { data, value_size })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.data.fd().as_fd()
    }

    /// The map's value size: 4, or 8 for a devmap that can carry programs
    /// (which kernels 5.8 to 5.13 refuse in generic mode).
    pub fn value_size(&self) -> u32 {
        self.value_size
    }

    /// Makes `ifindex` a redirect target.
    pub fn insert(&self, ifindex: u32) -> io::Result<()> {
        // An 8-byte value's program fd stays 0: no devmap program.
        let mut value = [0u8; DEVMAP_VAL_SIZE as usize];
        value[..4].copy_from_slice(&ifindex.to_ne_bytes());
        sys::map_update(
            self.fd(),
            &ifindex.to_ne_bytes(),
            &value[..self.value_size as usize],
            0,
        )
    }

    /// Removes `ifindex`; false if it was not there.
    pub fn remove(&self, ifindex: u32) -> io::Result<bool> {
        sys::map_delete(self.fd(), &ifindex.to_ne_bytes())
    }

    /// The ifindex stored under `key`.
    pub fn get(&self, key: u32) -> io::Result<Option<u32>> {
        let mut value = [0u8; DEVMAP_VAL_SIZE as usize];
        let found = sys::map_lookup(
            self.fd(),
            &key.to_ne_bytes(),
            &mut value[..self.value_size as usize],
        )?;
        Ok(found.then(|| u32::from_ne_bytes([value[0], value[1], value[2], value[3]])))
    }

    /// Every key, in the map's order.
    pub fn keys(&self) -> io::Result<Vec<u32>> {
        let mut keys = Vec::new();
        let mut next = [0u8; 4];
        let mut previous: Option<[u8; 4]> = None;
        while sys::map_next_key(self.fd(), previous.as_ref().map(|k| &k[..]), &mut next)? {
            keys.push(u32::from_ne_bytes(next));
            previous = Some(next);
        }
        Ok(keys)
    }
}
