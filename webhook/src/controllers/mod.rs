//! Controllers that run beside the admission server, in the same process.

pub mod restore;
