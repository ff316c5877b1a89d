//! Control plane: sources (kernel rtnetlink, FRR FPM), decoding, and the
//! desired forwarding state.
