//! Helpers of the tests that build their network in a namespace of
//! their own (a thread that called `unshare(CLONE_NEWNET)`).

use std::process::Command;

/// Runs a command (split on whitespace); panics unless it succeeds.
pub fn sh(args: &str) {
    let parts: Vec<&str> = args.split_whitespace().collect();
    let status = Command::new(parts[0])
        .args(&parts[1..])
        .status()
        .unwrap_or_else(|e| panic!("{args}: {e}"));
    assert!(status.success(), "{args}");
}

/// The index of `name` in the calling thread's namespace (sysfs shows
/// the namespace it was mounted in).
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: c is a live NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}
