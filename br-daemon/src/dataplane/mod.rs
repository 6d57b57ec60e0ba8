//! The I/O shell around the pure relay: XDP steering, AF_XDP rings, the
//! kernel's routes and neighbours, the slow path, and the workers.
//! Without the `dataplane` feature only [`counters`] (pure: names,
//! meanings, rendering) is built, for the operator tools.

#[cfg(feature = "dataplane")]
pub mod announcer;
#[cfg(feature = "dataplane")]
pub mod anycast;
#[cfg(feature = "dataplane")]
pub mod capabilities;
pub mod counters;
#[cfg(feature = "dataplane")]
pub mod daemon;
#[cfg(feature = "dataplane")]
pub mod ethtool;
#[cfg(feature = "dataplane")]
pub mod fib;
#[cfg(feature = "dataplane")]
pub mod fib_index;
#[cfg(feature = "dataplane")]
pub mod fib_rules;
#[cfg(feature = "dataplane")]
pub mod interfaces;
#[cfg(feature = "dataplane")]
pub mod next_hops;
#[cfg(feature = "dataplane")]
pub mod publish;
#[cfg(feature = "dataplane")]
pub mod selfcheck;
#[cfg(feature = "dataplane")]
pub mod slow_send;
#[cfg(feature = "dataplane")]
pub mod slow_thread;
#[cfg(feature = "dataplane")]
pub mod slowpath;
#[cfg(feature = "dataplane")]
pub mod tracer;
#[cfg(feature = "dataplane")]
pub mod tun_addresses;
#[cfg(feature = "dataplane")]
pub mod worker;
#[cfg(feature = "dataplane")]
pub mod xdp;
#[cfg(feature = "dataplane")]
pub mod xdp_dev_bound;
#[cfg(feature = "dataplane")]
pub mod xdp_egress;
#[cfg(feature = "dataplane")]
pub mod xdp_features;
#[cfg(feature = "dataplane")]
pub mod xdp_few;
#[cfg(feature = "dataplane")]
pub mod xfrm;
#[cfg(feature = "dataplane")]
pub mod xsk;
