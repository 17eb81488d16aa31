//! wugui: push a directory tree from one producer to many hosts.
#![deny(unsafe_code)]
pub mod proto;
