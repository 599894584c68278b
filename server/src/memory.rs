//! Giving memory back after a storm of joins or leaves.
//!
//! Every join and leave is announced to everyone, so thousands of users arriving at once
//! queue millions of short-lived lines. Once they are written the memory is free again, but
//! glibc's allocator keeps most of it mapped, scattered between the long-lived allocations of
//! the sessions created meanwhile. When the room's membership has been quiet for a moment
//! after such a burst, this asks the allocator to return its free pages to the system. It
//! never runs during steady chat, so it costs nothing on the delivery path.

use crate::hub::Hub;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often membership is looked at; a burst is over after one quiet tick.
const TICK: Duration = Duration::from_millis(200);

/// Joins and leaves since the last release that make one worth it.
const BURST: u64 = 256;

/// Runs until `shutdown`: after each burst of joins or leaves, once quiet, releases free
/// memory to the system.
pub async fn release_after_bursts(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut released_at = hub.membership_changes();
    let mut last_seen = released_at;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = hub.membership_changes();
        let quiet = now == last_seen;
        last_seen = now;
        if quiet && now - released_at >= BURST {
            released_at = now;
            // Walking a large heap takes a while: not on a thread that serves users.
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}
