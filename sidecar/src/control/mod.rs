//! Control plane: decoding what the sources send, and the desired
//! forwarding state built from it.

pub mod decode;
pub mod fpm;
pub mod offload;
pub mod replay;
pub mod rib;
