//! The I/O shell around the pure relay: XDP steering, AF_XDP rings, the
//! kernel's routes and neighbours, the slow path, and the workers.

pub mod xdp;
pub mod fib;
pub mod xsk;
