//! Device-bound copies of the steering program, so that it sees the VLAN
//! tag a driver took off the frame (`bpf_xdp_metadata_rx_vlan_tag`,
//! kernel 6.8+). A tagged frame belongs to the VLAN interface (IEEE
//! 802.1Q): without the tag, XDP would relay it as if it were untagged.
//!
//! A program that calls the kfunc must be loaded bound to one device
//! (`BPF_F_XDP_DEV_BOUND_ONLY`) and attached in native mode; aya 0.14 can
//! do neither (docs/decisions.md), so these copies are loaded with
//! libbpf-rs, one per interface, from `br_ebpf::dev_bound_object()`. They
//! reuse the maps of the program aya loaded, by name: every map write of
//! [`super::xdp::Steering`] reaches all of them.

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::{Link, Object, ObjectBuilder, PrintLevel};

/// One interface's copy: detached when dropped (a bpf_link).
pub struct DevBound {
    _link: Link,
    _object: Object,
}

/// Loads a copy bound to `ifindex` that shares `maps` (name, fd) and
/// attaches it there in native mode. Fails where the kernel lacks the
/// kfunc or device binding (before 6.8), or the device native XDP.
pub fn attach(ifindex: u32, maps: &[(String, OwnedFd)]) -> Result<DevBound> {
    quiet_libbpf();
    let mut open = ObjectBuilder::default()
        .open_memory(br_ebpf::dev_bound_object())
        .context("opening the device-bound XDP object")?;
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        // Constants (clang's lookup tables): the same bytes in both
        // objects, so each program keeps its own frozen copy.
        if name.ends_with(".rodata") {
            continue;
        }
        let (_, fd) = maps
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| anyhow!("map {name} is not one of the loaded program's"))?;
        map.reuse_fd(fd.as_fd())
            .with_context(|| format!("sharing map {name}"))?;
    }
    for mut program in open.progs_mut() {
        program.set_ifindex(ifindex);
        program.set_flags(libbpf_rs::libbpf_sys::BPF_F_XDP_DEV_BOUND_ONLY);
    }
    let object = open
        .load()
        .context("the kernel refused the device-bound program (kernel 6.8+ needed)")?;
    let program = object
        .progs_mut()
        .find(|p| p.name() == br_ebpf::PROGRAM)
        .ok_or_else(|| anyhow!("no program {} in the object", br_ebpf::PROGRAM))?;
    let link = program
        .attach_xdp(ifindex as i32)
        .context("attaching the device-bound program")?;
    Ok(DevBound {
        _link: link,
        _object: object,
    })
}

/// libbpf's own messages (a kernel without the kfunc makes it complain)
/// go to the debug log: the caller reports what failed.
fn quiet_libbpf() {
    fn to_debug(_: PrintLevel, message: String) {
        tracing::debug!("libbpf: {}", message.trim_end());
    }
    libbpf_rs::set_print(Some((PrintLevel::Debug, to_debug)));
}
