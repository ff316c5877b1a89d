//! pf-wire: the netlink wire formats pf-sidecar speaks, kept apart from
//! both the sockets (pf-sidecar) and the logic (pf-control).
//!
//! In: [`decode`] turns one rtnetlink message (from the kernel or inside an
//! FPM frame) into a `pf_control::change::Change`, and [`decode_frame`]
//! does a whole FPM frame, [`kernel_item`] a message from the kernel. Out: [`offload`] encodes the controller's
//! offload replies as the frames zebra reads.

pub mod decode;
pub mod offload;

use pf_control::{
    controller::{DecodedFrame, KernelItem},
    fpm::Frame,
};

pub use decode::{decode, DecodeError, Decoded, Skip};

/// Decodes every message of an FPM frame, counting the ones that cannot
/// be decoded (each logged) and leaving out the ones deliberately skipped.
pub fn decode_frame(frame: &Frame) -> DecodedFrame {
    let mut decoded = DecodedFrame::default();
    for message in frame.messages() {
        match decode(message) {
            Ok(Decoded::Change(change)) => decoded.changes.push(change),
            Ok(Decoded::Skipped(_)) => {}
            Err(error) => {
                tracing::warn!(%error, "undecodable message skipped");
                decoded.decode_errors += 1;
            }
        }
    }
    decoded
}

/// One message from the kernel as the controller takes it: its change, an
/// undecodable message (logged), or nothing for a message deliberately
/// skipped.
pub fn kernel_item(message: &[u8]) -> Option<KernelItem> {
    match decode(message) {
        Ok(Decoded::Change(change)) => Some(KernelItem::Change(change)),
        Ok(Decoded::Skipped(_)) => None,
        Err(error) => {
            tracing::warn!(%error, "undecodable kernel message skipped");
            Some(KernelItem::Undecodable)
        }
    }
}
