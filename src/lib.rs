//! wugui: push a directory tree from one producer to many hosts.
//!
//! `proto` holds the protocol and the role state machines (no I/O); `reactor` drives them over
//! sockets; `store` and `tree` are the po's and the master's disk; `sys` holds the system calls
//! beyond std (the zero-copy data path among them) and is the only module with `unsafe`; `dns`
//! turns host names into addresses (`/etc/hosts`, then DNS) without NSS; `work` is the pool
//! of worker threads that hashes beside the event loop.
#![deny(unsafe_code)]
pub mod app;
pub mod config;
pub mod dns;
pub mod logging;
pub mod metrics;
pub mod proto;
pub mod reactor;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod tree;
pub mod work;

#[cfg(test)]
mod testutil;
