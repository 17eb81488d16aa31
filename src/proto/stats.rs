//! What one machine has counted since it started, as plain numbers (the binary renders them
//! for `/metrics`). Each machine owns its own, so simulated nodes do not share them.

/// One field per metric; see `metrics.rs` for the names and help texts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Block bytes (blocks) verified and written by a po.
    pub bytes_received: u64,
    pub blocks_received: u64,
    /// Block bytes (blocks) queued to peers (a po) or pos (a master).
    pub bytes_sent: u64,
    pub blocks_sent: u64,
    pub verify_failures: u64,
    /// Peer links lost or refused, and pushes that could not be served.
    pub peer_errors: u64,
    /// A gauge: transfers in progress now.
    pub transfers_active: u64,
    pub transfers_published: u64,
    /// Pushes that changed nothing here (the dest held the tree already): not published.
    pub transfers_unchanged: u64,
    pub transfers_failed: u64,
    pub hook_failures: u64,
    /// Masters granted a class, or refused (a CAC).
    pub auth_granted: u64,
    pub auth_denied: u64,
    /// Tokens verified for pos, or refused (a CAC).
    pub tokens_verified: u64,
    pub tokens_refused: u64,
    /// Connections closed for garbage or a protocol violation.
    pub protocol_errors: u64,
}
