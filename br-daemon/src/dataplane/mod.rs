//! The I/O shell around the pure relay: XDP steering, AF_XDP rings, the
//! kernel's routes and neighbours, the slow path, and the workers.

pub mod counters;
pub mod daemon;
pub mod ethtool;
pub mod fib;
pub mod fib_rules;
pub mod interfaces;
pub mod publish;
pub mod slowpath;
pub mod tracer;
pub mod tun_addresses;
pub mod worker;
pub mod xdp;
pub mod xdp_dev_bound;
pub mod xdp_egress;
pub mod xdp_features;
pub mod xfrm;
pub mod xsk;
