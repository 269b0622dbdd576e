//! SPDY/3.1 as the Kubernetes streaming clients speak it (moby/spdystream, used by
//! client-go): streams opened by the client with SYN_STREAM and answered with SYN_REPLY,
//! DATA with FIN to half-close, RST_STREAM, PING echoed, GOAWAY. spdystream does no flow
//! control, so WINDOW_UPDATE is accepted and ignored. No usable Rust crate exists; this
//! one is berth's own.

pub mod frame;
pub mod session;
