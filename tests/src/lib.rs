//! Test support for the privileged netns tests.
