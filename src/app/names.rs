//! Following host names that move: a thread asks again, as their TTL runs out, for the names a
//! daemon's config gives as `host:port`, and raises SIGUSR2 in its own process when an address
//! changed, so the event loop takes the new addresses without ever waiting on DNS itself.
//!
//! The lookups block (up to the resolver's bound when DNS is down), which is why they run on
//! their own thread, as an event loop's name lookups usually do (libuv runs `getaddrinfo` on
//! its thread pool). No connection is ever served from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How often the names are asked for: an answer's TTL is kept by the resolver's cache, so
/// most rounds are cache hits and only an expired answer goes to a server.
pub const EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    /// The entries to follow, as written (`host:port`); IP literals are left out.
    names: Vec<String>,
    /// The address each name had at its last answer.
    found: HashMap<String, SocketAddr>,
}

/// The shared state of a watch thread: which names to follow and what they resolved to.
#[derive(Clone, Default)]
pub struct Names(Arc<Mutex<State>>);

impl Names {
    /// Starts the thread that follows the names given to `follow`.
    pub fn watch() -> Names {
        let names = Names::default();
        let shared = names.clone();
        let spawned = std::thread::Builder::new().name("names".into()).spawn(move || loop {
            std::thread::sleep(EVERY);
            if shared.ask_again() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGUSR2);
            }
        });
        if let Err(e) = spawned {
            log::warn!("event=names_unwatched error=\"cannot start the thread: {e}\"");
        }
        names
    }

    /// Follows `entries` (those that are names; literals need no asking) from now on. The
    /// addresses the config just found for them are the ones a move is measured against.
    pub fn follow<'a>(&self, entries: impl IntoIterator<Item = (&'a str, SocketAddr)>) {
        let mut st = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        st.found.clear();
        st.names.clear();
        for (name, addr) in entries {
            if name.parse::<SocketAddr>().is_err() && !st.found.contains_key(name) {
                st.names.push(name.to_owned());
                st.found.insert(name.to_owned(), addr);
            }
        }
    }

    /// The address `entry` resolved to at the last answer (`None` for a literal, or a name not
    /// followed).
    pub fn address(&self, entry: &str) -> Option<SocketAddr> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).found.get(entry).copied()
    }

    /// Asks for every name again (without holding the lock while asking); true if any moved.
    /// A name that fails keeps its last address (the resolver logs `event=dns_failed`).
    fn ask_again(&self) -> bool {
        let names = self.0.lock().unwrap_or_else(PoisonError::into_inner).names.clone();
        let mut moved = false;
        for name in names {
            let Ok(now) = crate::config::resolve(&name) else { continue };
            let mut st = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            // Only names still followed (a reload may have changed the list meanwhile).
            if let Some(last) = st.found.get_mut(&name) {
                if *last != now {
                    log::info!("event=name_moved name={name} from={last} to={now}");
                    *last = now;
                    moved = true;
                }
            }
        }
        moved
    }
}
