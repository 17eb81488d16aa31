//! wugui: push a directory tree from one producer to many hosts.
//!
//! `proto` holds the protocol and the role state machines (no I/O); `reactor` drives them over
//! sockets; `sendfile` is the zero-copy data path and the only module with `unsafe`.
#![deny(unsafe_code)]
pub mod app;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod proto;
pub mod reactor;
pub mod sendfile;
pub mod stage;
pub mod tree;

#[cfg(test)]
mod testutil;
