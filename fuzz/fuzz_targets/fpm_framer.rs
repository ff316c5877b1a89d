//! The FPM framer and the decoder behind it never panic, whatever arrives.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pf_control::fpm::FpmCodec;
use pf_wire::decode;

fuzz_target!(|data: &[u8]| {
    let mut codec = FpmCodec;
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        for message in frame.messages() {
            let _ = decode(message);
        }
    }
});
