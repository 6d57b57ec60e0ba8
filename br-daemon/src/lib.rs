//! A software 6rd Border Relay (RFC 5969) for Linux gateways.
//!
//! - [`relay`]: the pure core: domains, address mapping, encapsulation,
//!   decapsulation, ICMP. No I/O, no allocation per packet.
//! - [`config`]: the TOML configuration, with file:line errors.
//! - [`cisco`]: import of a Cisco IOS 6rd BR configuration.
//! - [`ce_config`]: the configuration a Linux 6rd CE needs.
//! - [`trace`]: which packets `br-daemon trace` shows, and how.
//! - [`log`]: the daemon's log formats (text, JSON, journald).

pub mod ce_config;
pub mod cisco;
pub mod config;
pub mod dataplane;
pub mod log;
pub mod lookup;
pub mod relay;
pub mod trace;
