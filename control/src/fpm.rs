//! FPM framing (zebra's `fpm/fpm.h`): `version u8 = 1`, `type u8 = 1`
//! (netlink), `length u16` big-endian including the 4-byte header, then one
//! or more netlink messages, each 4-byte aligned.
//!
//! The codec yields whole frames only: a frame cut mid-way yields nothing
//! until the rest arrives. A frame that breaks the rules is an error, after
//! which the caller closes the session; nothing of that frame is applied.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const FPM_HEADER_LEN: usize = 4;
pub const FPM_VERSION: u8 = 1;
pub const FPM_TYPE_NETLINK: u8 = 1;
/// The length field is 16 bits; newer FRR fills it up to 64 KiB.
pub const FPM_MAX_FRAME: usize = u16::MAX as usize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("FPM version {0}, expected 1")]
    BadVersion(u8),
    #[error("FPM message type {0}, expected 1 (netlink)")]
    BadType(u8),
    #[error("FPM frame length {0} is shorter than its header")]
    ShortLength(usize),
    #[error("netlink message at offset {offset} of the frame claims {claimed} bytes, {available} remain")]
    TruncatedNetlink {
        offset: usize,
        claimed: usize,
        available: usize,
    },
    #[error("reading the FPM stream: {0}")]
    Io(String),
}

impl FrameError {
    /// A stable label for counters.
    pub const fn name(&self) -> &'static str {
        match self {
            FrameError::BadVersion(_) => "bad_version",
            FrameError::BadType(_) => "bad_type",
            FrameError::ShortLength(_) => "short_length",
            FrameError::TruncatedNetlink { .. } => "truncated_netlink",
            FrameError::Io(_) => "io",
        }
    }
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e.to_string())
    }
}

/// One FPM frame: the netlink messages it carries, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    payload: Bytes,
}

impl Frame {
    /// The netlink messages in order (each with its header).
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        crate::netlink::split_netlink_messages(&self.payload)
    }
}

/// Checks that the payload is a whole number of well-formed netlink messages.
fn validate(payload: &[u8]) -> Result<(), FrameError> {
    let mut offset = 0;
    while offset < payload.len() {
        let available = payload.len() - offset;
        if available < 16 {
            return Err(FrameError::TruncatedNetlink {
                offset,
                claimed: 16,
                available,
            });
        }
        let claimed =
            u32::from_ne_bytes(payload[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        if claimed < 16 || claimed > available {
            return Err(FrameError::TruncatedNetlink {
                offset,
                claimed,
                available,
            });
        }
        offset += (claimed + 3) & !3;
    }
    Ok(())
}

#[derive(Debug, Default)]
pub struct FpmCodec;

impl FpmCodec {
    /// The next whole frame at the front of `src` (taken out of it), or
    /// `None` until the rest of a frame has arrived.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < FPM_HEADER_LEN {
            return Ok(None);
        }
        if src[0] != FPM_VERSION {
            return Err(FrameError::BadVersion(src[0]));
        }
        if src[1] != FPM_TYPE_NETLINK {
            return Err(FrameError::BadType(src[1]));
        }
        let len = u16::from_be_bytes([src[2], src[3]]) as usize;
        if len < FPM_HEADER_LEN {
            return Err(FrameError::ShortLength(len));
        }
        if src.len() < len {
            // Bounded: a frame is at most 64 KiB, so is what waits for it.
            src.reserve(len - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(len);
        frame.advance(FPM_HEADER_LEN);
        validate(&frame)?;
        Ok(Some(Frame {
            payload: frame.freeze(),
        }))
    }

    /// Frames netlink messages (used for offload replies, tests and the
    /// load generator). Messages must already be 4-byte aligned except the
    /// last.
    pub fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = payload.len() + FPM_HEADER_LEN;
        if len > FPM_MAX_FRAME {
            return Err(FrameError::Io(format!(
                "frame of {len} bytes exceeds {FPM_MAX_FRAME}"
            )));
        }
        dst.reserve(len);
        dst.put_u8(FPM_VERSION);
        dst.put_u8(FPM_TYPE_NETLINK);
        dst.put_u16(len as u16);
        dst.put_slice(payload);
        Ok(())
    }
}

/// Builds one FPM frame around already-serialised netlink messages.
pub fn frame(messages: &[&[u8]]) -> Vec<u8> {
    let mut payload = Vec::new();
    for m in messages {
        payload.resize((payload.len() + 3) & !3, 0);
        payload.extend_from_slice(m);
    }
    let mut out = BytesMut::new();
    FpmCodec.encode(&payload[..], &mut out).expect("frame fits");
    out.to_vec()
}

/// Which bound a session broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No complete frame within `idle` of the connect.
    Idle,
    /// A frame begun and not completed within `frame`.
    PartialFrame,
}

impl Expiry {
    /// A stable label for counters.
    pub const fn label(self) -> &'static str {
        match self {
            Expiry::Idle => "idle",
            Expiry::PartialFrame => "partial_frame",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = len.to_ne_bytes().to_vec();
        m.resize(len as usize, 7);
        m
    }

    fn decode_all(bytes: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        loop {
            match FpmCodec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(e)),
            }
        }
    }

    #[test]
    fn several_messages_in_one_frame_come_out_in_order() {
        let (a, b) = (message(20), message(33));
        let (frames, err) = decode_all(&frame(&[&a, &b]));
        assert_eq!(err, None);
        let lens: Vec<usize> = frames[0].messages().map(<[u8]>::len).collect();
        assert_eq!(lens, vec![20, 33]);
    }

    #[test]
    fn a_frame_fed_byte_by_byte_yields_nothing_until_complete() {
        let bytes = frame(&[&message(40)]);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let out = FpmCodec.decode(&mut buf).unwrap();
            assert_eq!(out.is_some(), i == bytes.len() - 1, "byte {i}");
        }
    }

    #[test]
    fn the_frames_of_a_real_frr_replay_decode() {
        let capture = include_bytes!("../../tests/fixtures/fpm/frr-8.4-static-replay.bin");
        let (frames, err) = decode_all(capture);
        assert_eq!(err, None);
        assert_eq!(frames.len(), 7);
    }

    #[test]
    fn malformed_frames_are_errors_with_their_own_names() {
        let good = frame(&[&message(16)]);
        let mut bad_version = good.clone();
        bad_version[0] = 2;
        let mut bad_type = good.clone();
        bad_type[1] = 2;
        let short = [1u8, 1, 0, 3];
        let mut truncated = good.clone();
        truncated[4..8].copy_from_slice(&64u32.to_ne_bytes());
        for (bytes, name) in [
            (&bad_version[..], "bad_version"),
            (&bad_type[..], "bad_type"),
            (&short[..], "short_length"),
            (&truncated[..], "truncated_netlink"),
        ] {
            let (_, err) = decode_all(bytes);
            assert_eq!(err.map(|e| e.name()), Some(name));
        }
    }

    #[test]
    fn the_largest_frame_is_accepted() {
        let big = message(FPM_MAX_FRAME as u32 - 4);
        let (frames, err) = decode_all(&frame(&[&big]));
        assert_eq!((frames.len(), err), (1, None));
    }
}
