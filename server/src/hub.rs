//! Who is online, under which name, and the room's one order of events.
//!
//! One mutex guards the room. Under it a room event (chat line, join, leave, rename) gets
//! its `seq` and `ts`, the membership and names change at once (so `who`, renames and direct
//! messages always see a consistent room), and the event is handed to the
//! [room log](crate::room_log). Delivery waits for the log: once a group of events is
//! committed, the log's writer calls [`Hub::deliver_committed`], which queues them, in seq
//! order, to every member receiving at that point of the order. So every user receives one
//! unbroken slice of one order, and nobody receives a line that is not in the log.
//!
//! Lines for one member (replies, errors, `who`, direct messages, farewells) queue behind
//! the events still waiting for the log, so a member's lines keep the order in which the
//! server decided them: `rename ok` after the rename, a farewell after everything before it.
//! When nothing waits they go out at once.
//!
//! A member is *present* (listed, holding its name, reachable by direct messages) from its
//! join until it leaves, and *receiving* from the delivery of its own join until the
//! delivery of its leave: a member that times out still gets every line decided before its
//! timeout, then its farewell, then nothing. Each member leaves exactly once: whoever ends its
//! presence (its session, or a delivery that found it too slow) announces the leave.
//!
//! **Two ways to order the room.** The hub is the seam between the room and where its
//! order comes from. In single-node mode (above) the order is decided here, under the lock,
//! and made durable by the SQLite [room log](crate::room_log). In cluster mode
//! ([`cluster`], `--cluster`) it is decided by Redis for all nodes at once, and this hub
//! delivers what the stream says. The mode is checked once per request or per event, never
//! per recipient: the fan-out loop ([`State::deliver`]) is the same for both.

mod cluster;
pub use cluster::Resolved;

use crate::cluster::Link;
use crate::outbox::{Mode, Outbox, Rendered};
use crate::room_log::{Answer, Entry, Query, RoomLog, format_ts, now_ms};
use chat_protocol::names::{name_keys, validate_name};
use chat_protocol::{ErrorCode, LeaveReason, PROTOCOL_VERSION, ServerEvent, Stamp, UserInfo};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// A connection's key in the hub. Increasing, so iterating members goes in join order.
pub type MemberId = u64;

#[derive(Debug)]
struct Member {
    /// The peer's `ip:port`, fixed for the connection's life.
    addr: Arc<str>,
    /// Starts as `addr`; chosen names follow [`validate_name`].
    name: String,
    outbox: Outbox,
    /// In the room as users see it: listed by `who`, holding its name.
    present: bool,
    /// Room events are queued to it: from the delivery of its join to that of its leave.
    receiving: bool,
}

impl Member {
    /// A member just joined: present, under its address as its name, and not receiving
    /// until its own join is delivered.
    fn newcomer(addr: Arc<str>, outbox: Outbox) -> Member {
        Member {
            name: addr.to_string(),
            addr,
            outbox,
            present: true,
            receiving: false,
        }
    }

    fn info(&self) -> UserInfo {
        UserInfo {
            addr: self.addr.to_string(),
            name: self.name.clone(),
        }
    }
}

/// What waits for the log before it is delivered, in the order it was decided.
#[derive(Debug)]
enum Pending {
    /// A room event, delivered once the log has committed `seq`.
    Event {
        seq: u64,
        line: Arc<Rendered>,
        /// Not sent to this member (a renamer hears `rename ok` instead).
        except: Option<MemberId>,
        /// A newcomer: it gets this event (its own `login`), then `I am here`, and receives
        /// from then on.
        admit: Option<(MemberId, Arc<Rendered>)>,
        /// A member leaving: it is removed (and its connection closed once flushed) before
        /// the event goes to the others.
        remove: Option<MemberId>,
    },
    /// A line for one member.
    To {
        id: MemberId,
        line: Arc<Rendered>,
        then: Then,
    },
}

/// What follows a line for one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Nothing,
    /// The line is the welcome: the connection speaks JSON from it on.
    JsonFromHere,
    /// The line is its last (shutdown): remove it without telling anyone.
    Forget,
}

#[derive(Debug, Default)]
struct State {
    /// Members in join order (`who` lists the present ones in that order), including those
    /// that left but still have lines on the way.
    members: BTreeMap<MemberId, Member>,
    /// Present members by every key of their chosen name ([`name_keys`]: same and
    /// look-alike names share one), for uniqueness and direct messages. A chosen name cannot
    /// contain `:`, so it never collides with an address.
    names: HashMap<String, MemberId>,
    /// Present members still under their default name (their address), for direct messages.
    default_names: HashMap<Arc<str>, MemberId>,
    next_id: MemberId,
    /// The newest seq given out (in cluster mode: the newest delivered).
    last_seq: u64,
    pending: VecDeque<Pending>,
    /// The roster and per-member queues of cluster mode; empty in single-node mode.
    cluster: cluster::ClusterState,
    /// Connections that a delivery pass queued room events to while their queue was idle:
    /// flushed once each when the lock is released ([`Locked`]).
    to_flush: Vec<Outbox>,
}

/// The room's state, locked. Dropping it releases the lock and only then flushes the
/// connections that deliveries queued to ([`Outbox::flush`]): one write per connection per
/// pass, made outside the lock, instead of a wake-up of each connection's writer task.
struct Locked<'a> {
    /// `None` only inside `drop`.
    guard: Option<MutexGuard<'a, State>>,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        if guard.to_flush.is_empty() {
            return;
        }
        // The next pass gets room for as many at once: when lines trickle in, every pass
        // flushes every member, and a list grown from empty would be reallocated seven
        // times per line for a hundred members.
        let room = guard.to_flush.len();
        let to_flush = std::mem::replace(&mut guard.to_flush, Vec::with_capacity(room));
        drop(guard);
        for outbox in to_flush {
            outbox.flush();
        }
    }
}

/// The room. Shared by all sessions through an `Arc`.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    /// Counts joins and leaves, so [`crate::memory`] can tell when a storm of them is over.
    membership_changes: AtomicU64,
    /// Told to `welcome`d clients, so they know how often to ping.
    idle_timeout: Duration,
    /// Set once, right after the hub is made: the log needs the hub to deliver to.
    log: OnceLock<Arc<RoomLog>>,
    /// Set once in cluster mode, before the first member joins: the room's order is Redis's.
    cluster: OnceLock<Arc<Link>>,
    /// More than [`BACKLOG_HIGH`] items wait for the log: sessions stop reading until
    /// delivery brings it under [`BACKLOG_LOW`] and wakes them with `backlog_cleared`.
    backlogged: std::sync::atomic::AtomicBool,
    backlog_cleared: tokio::sync::Notify,
}

/// Waiting items past which sessions stop reading (a stalled disk must not turn into
/// unbounded memory)...
const BACKLOG_HIGH: usize = 200_000;
/// ...and under which they read again.
const BACKLOG_LOW: usize = 50_000;

impl Hub {
    /// A room whose events will continue after `last_seq`; [`Hub::attach_log`] must follow
    /// before the first event.
    pub fn new(last_seq: u64, idle_timeout: Duration) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::new(State {
                last_seq,
                ..State::default()
            }),
            membership_changes: AtomicU64::new(0),
            idle_timeout,
            log: OnceLock::new(),
            cluster: OnceLock::new(),
            backlogged: std::sync::atomic::AtomicBool::new(false),
            backlog_cleared: tokio::sync::Notify::new(),
        })
    }

    /// True while sessions should not read more lines (see [`BACKLOG_HIGH`]).
    pub fn is_backlogged(&self) -> bool {
        self.backlogged.load(Ordering::Relaxed)
    }

    /// Resolves once the backlog has cleared.
    pub async fn backlog_cleared(&self) {
        let cleared = self.backlog_cleared.notified();
        tokio::pin!(cleared);
        // Registered before the check, so a clearing in between is not missed.
        cleared.as_mut().enable();
        if self.is_backlogged() {
            cleared.await;
        }
    }

    pub fn attach_log(&self, log: Arc<RoomLog>) {
        let _ = self.log.set(log);
    }

    /// The room log, for history queries.
    pub fn log(&self) -> Option<&Arc<RoomLog>> {
        self.log.get()
    }

    /// Answers a history query from wherever the room's log is: SQLite or Redis.
    pub async fn history(&self, query: Query) -> anyhow::Result<Answer> {
        if let Some(link) = self.cluster.get() {
            return self.c_history(link, query).await;
        }
        match self.log.get() {
            Some(log) => log.query(query).await,
            None => anyhow::bail!("this room keeps no log"),
        }
    }

    fn lock(&self) -> Locked<'_> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than keeping the room up, so a poisoned lock is used as it is.
        Locked {
            guard: Some(self.state.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }

    /// Adds a member: everyone (the newcomer included) gets its `login`, then the newcomer
    /// gets `I am here`.
    pub fn join(&self, addr: &str, outbox: Outbox) -> MemberId {
        if let Some(link) = self.cluster.get() {
            return self.c_join(link, addr, outbox);
        }
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let addr: Arc<str> = addr.into();
        state
            .members
            .insert(id, Member::newcomer(addr.clone(), outbox));
        state.default_names.insert(addr.clone(), id);
        let here = Rendered::new(ServerEvent::Here {
            addr: addr.to_string(),
            name: addr.to_string(),
        });
        self.record(&mut state, None, Some((id, here)), None, |stamp| {
            ServerEvent::Join {
                addr: addr.to_string(),
                name: addr.to_string(),
                stamp,
            }
        });
        id
    }

    /// Broadcasts a chat line from `id` to everyone, the sender included.
    pub fn chat(&self, id: MemberId, text: String) {
        if let Some(link) = self.cluster.get() {
            return self.c_chat(link, id, text);
        }
        let mut state = self.lock();
        let Some(member) = state.members.get(&id).filter(|m| m.present) else {
            return;
        };
        let (addr, name) = (member.addr.to_string(), member.name.clone());
        crate::telemetry::counters().messages.increment(1);
        self.record(&mut state, None, None, None, |stamp| ServerEvent::Chat {
            addr,
            name,
            text,
            stamp,
        });
    }

    /// Sends `text` from `id` to the one present member named `to` (compared as names are
    /// for uniqueness; a default name is the address). Both get the line; nobody else.
    pub fn direct_message(&self, id: MemberId, to: &str, text: String) {
        if let Some(link) = self.cluster.get() {
            return self.c_direct_message(link, id, to, text);
        }
        let mut state = self.lock();
        let Some(sender) = state.members.get(&id).filter(|m| m.present) else {
            return;
        };
        let from = sender.info();
        if text.is_empty() {
            let error = ServerEvent::error(ErrorCode::EmptyText, "a direct message needs a text");
            self.send_to(&mut state, id, Rendered::new(error), Then::Nothing);
            return;
        }
        let recipient = state
            .default_names
            .get(to)
            .copied()
            .or_else(|| state.holder(to));
        let Some(recipient) = recipient else {
            let error = ServerEvent::error(
                ErrorCode::NoSuchUser,
                format!("no user named {to} is online"),
            );
            self.send_to(&mut state, id, Rendered::new(error), Then::Nothing);
            return;
        };
        let to = state.members[&recipient].info();
        crate::telemetry::counters().direct_messages.increment(1);
        let line = Rendered::new(ServerEvent::Dm { from, to, text });
        self.send_to(&mut state, recipient, line.clone(), Then::Nothing);
        if recipient != id {
            self.send_to(&mut state, id, line, Then::Nothing);
        }
    }

    /// Sends `id` the list of online users, as one block.
    pub fn who(&self, id: MemberId) {
        if self.cluster.get().is_some() {
            return self.c_who(id);
        }
        let mut state = self.lock();
        let users = state.users();
        self.send_to(
            &mut state,
            id,
            Rendered::new(ServerEvent::Users { users }),
            Then::Nothing,
        );
    }

    /// The online users, in join order.
    pub fn users(&self) -> Vec<UserInfo> {
        if self.cluster.get().is_some() {
            return self.c_users();
        }
        self.lock().users()
    }

    /// How many joins and leaves there have been so far.
    pub fn membership_changes(&self) -> u64 {
        self.membership_changes.load(Ordering::Relaxed)
    }

    /// Number of members online.
    pub fn len(&self) -> usize {
        self.lock().members.values().filter(|m| m.present).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Renames `id`. On success the member gets `rename ok` and JSON clients hear of it; on
    /// failure the member gets one error line saying why.
    pub fn rename(&self, id: MemberId, new_name: &str) {
        if let Some(link) = self.cluster.get() {
            return self.c_rename(link, id, new_name);
        }
        let mut state = self.lock();
        let Some(member) = state.members.get(&id).filter(|m| m.present) else {
            return;
        };
        if let Err(e) = validate_name(new_name) {
            let error = ServerEvent::error(ErrorCode::InvalidName, format!("rename refused: {e}"));
            self.send_to(&mut state, id, Rendered::new(error), Then::Nothing);
            return;
        }
        if state.holder(new_name).is_some_and(|owner| owner != id) {
            let error = ServerEvent::error(
                ErrorCode::NameTaken,
                format!("rename refused: the name {new_name} is already taken"),
            );
            self.send_to(&mut state, id, Rendered::new(error), Then::Nothing);
            return;
        }
        let addr = member.addr.clone();
        let old = member.name.clone();
        state.forget_name(id);
        for key in name_keys(new_name) {
            state.names.insert(key, id);
        }
        if let Some(member) = state.members.get_mut(&id) {
            member.name = new_name.to_string();
        }
        let new = new_name.to_string();
        self.record(&mut state, Some(id), None, None, |stamp| {
            ServerEvent::Rename {
                addr: addr.to_string(),
                old,
                new: new.clone(),
                stamp,
            }
        });
        let renamed = Rendered::new(ServerEvent::Renamed { name: new });
        self.send_to(&mut state, id, renamed, Then::Nothing);
    }

    /// Switches `id` to JSON mode and welcomes it, with the newest seq decided so far: every
    /// later event reaches it after the welcome.
    pub fn welcome(&self, id: MemberId) {
        if self.cluster.get().is_some() {
            return self.c_welcome(id);
        }
        let mut state = self.lock();
        if let Some(welcome) = self.welcome_event(&state, id) {
            self.send_to(&mut state, id, Rendered::new(welcome), Then::JsonFromHere);
        }
    }

    /// The `welcome` for `id`, with the newest seq the room has decided (in cluster mode, the
    /// newest this node has applied), if `id` is still here.
    fn welcome_event(&self, state: &State, id: MemberId) -> Option<ServerEvent> {
        let member = state.members.get(&id)?;
        Some(ServerEvent::Welcome {
            version: PROTOCOL_VERSION,
            addr: member.addr.to_string(),
            name: member.name.clone(),
            idle_timeout_ms: u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX),
            seq: state.last_seq,
        })
    }

    /// Sends `id` an event meant for it alone.
    pub fn reply(&self, id: MemberId, event: ServerEvent) {
        self.send(id, Rendered::new(event));
    }

    /// Sends `id` a line meant for it alone.
    pub fn send(&self, id: MemberId, line: Arc<Rendered>) {
        let mut state = self.lock();
        self.send_to(&mut state, id, line, Then::Nothing);
    }

    /// Ends `id`'s presence and tells everyone else why it left. False if it was already gone.
    pub fn leave(&self, id: MemberId, reason: LeaveReason) -> bool {
        let mut state = self.lock();
        self.depart(&mut state, id, reason)
    }

    /// Sends `id` its last line, then ends its presence and tells everyone else, in one step:
    /// `farewell` comes after every line decided before it and is the last the member gets.
    pub fn say_and_leave(&self, id: MemberId, farewell: ServerEvent, reason: LeaveReason) {
        let mut state = self.lock();
        if state.members.get(&id).is_some_and(|m| m.present) {
            self.send_to(&mut state, id, Rendered::new(farewell), Then::Nothing);
            self.depart(&mut state, id, reason);
        }
    }

    /// Sends `id` its last line and removes it without telling anyone: for shutdown, where
    /// everyone is leaving at once.
    pub fn say_and_forget(&self, id: MemberId, farewell: ServerEvent) {
        if let Some(link) = self.cluster.get() {
            return self.c_say_and_forget(link, id, farewell);
        }
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if state.members.get(&id).is_some_and(|m| m.present) {
            state.forget_name(id);
            if let Some(member) = state.members.get_mut(&id) {
                member.present = false;
            }
            self.send_to(&mut state, id, Rendered::new(farewell), Then::Forget);
        }
    }

    /// Delivers every waiting event up to `committed` (now in the log), and the lines for
    /// single members queued behind them. Called by the log's writer after each commit.
    pub fn deliver_committed(&self, committed: u64) {
        let mut state = self.lock();
        let mut slow = Vec::new();
        // The newest event delivered by this call so far.
        let mut delivered = None;
        while let Some(front) = state.pending.front() {
            match front {
                Pending::Event { seq, .. } if *seq > committed => break,
                Pending::Event { seq, .. } => delivered = Some(*seq),
                // A line for one member (a welcome, an answer) may reach it, and be answered,
                // before this pass ends, on another worker: history must already cover the
                // events queued to everyone ahead of it.
                Pending::To { .. } => {
                    if let (Some(seq), Some(log)) = (delivered, self.log.get()) {
                        log.delivered_up_to(seq);
                    }
                }
            }
            let Some(item) = state.pending.pop_front() else {
                break;
            };
            state.deliver(item, &mut slow);
            for id in slow.drain(..) {
                self.drop_slow(&mut state, id);
            }
        }
        if let Some(log) = self.log.get() {
            log.delivered_up_to(committed);
        }
        if state.pending.len() < BACKLOG_LOW && self.backlogged.swap(false, Ordering::Relaxed) {
            self.backlog_cleared.notify_waiters();
        }
    }

    /// Gives the next seq to the event `make` builds, applies it to the waiting order and
    /// hands it to the log.
    fn record(
        &self,
        state: &mut State,
        except: Option<MemberId>,
        admit: Option<(MemberId, Arc<Rendered>)>,
        remove: Option<MemberId>,
        make: impl FnOnce(Option<Stamp>) -> ServerEvent,
    ) {
        state.last_seq += 1;
        let seq = state.last_seq;
        let ts_ms = now_ms();
        let line = Rendered::new(make(Some(Stamp {
            seq,
            ts: format_ts(ts_ms),
        })));
        state.pending.push_back(Pending::Event {
            seq,
            line: line.clone(),
            except,
            admit,
            remove,
        });
        // Without a log (unit tests of the hub alone) the test delivers by hand.
        if let Some(log) = self.log.get() {
            log.append(Entry { seq, ts_ms, line });
        }
        if state.pending.len() > BACKLOG_HIGH && !self.backlogged.load(Ordering::Relaxed) {
            tracing::warn!("the room log is far behind; sessions stop reading until it catches up");
            self.backlogged.store(true, Ordering::Relaxed);
        }
    }

    /// Queues a line for one member: at once if nothing waits for the log, else behind
    /// what waits, so it keeps its place in the order.
    fn send_to(&self, state: &mut State, id: MemberId, line: Arc<Rendered>, then: Then) {
        if self.cluster.get().is_some() {
            return self.c_send_to(state, id, line, then);
        }
        let item = Pending::To { id, line, then };
        if state.pending.is_empty() {
            let mut slow = Vec::new();
            state.deliver(item, &mut slow);
            for id in slow {
                self.drop_slow(state, id);
            }
        } else {
            state.pending.push_back(item);
        }
    }

    /// Ends `id`'s presence and records its leave. False if it was not present.
    fn depart(&self, state: &mut State, id: MemberId, reason: LeaveReason) -> bool {
        if let Some(link) = self.cluster.get() {
            return self.c_depart(link, state, id, reason);
        }
        let Some(member) = state.members.get_mut(&id).filter(|m| m.present) else {
            return false;
        };
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        member.present = false;
        let (addr, name) = (member.addr.to_string(), member.name.clone());
        state.forget_name(id);
        self.record(state, None, None, Some(id), |stamp| ServerEvent::Leave {
            addr,
            name,
            reason,
            stamp,
        });
        true
    }

    /// A member whose queue overflowed: out at once, its connection killed; its leave is
    /// announced like any other, unless it was already leaving.
    fn drop_slow(&self, state: &mut State, id: MemberId) {
        let Some(member) = state.members.remove(&id) else {
            return;
        };
        member.outbox.kill();
        if let Some(link) = self.cluster.get() {
            return self.c_dropped(link, state, id, member.present);
        }
        if member.present {
            self.membership_changes.fetch_add(1, Ordering::Relaxed);
            state.forget(id, &member.addr, &member.name);
            let (addr, name) = (member.addr.to_string(), member.name);
            self.record(state, None, None, None, |stamp| ServerEvent::Leave {
                addr,
                name,
                reason: LeaveReason::SendqExceeded,
                stamp,
            });
        }
    }
}

impl State {
    fn users(&self) -> Vec<UserInfo> {
        self.members
            .values()
            .filter(|m| m.present)
            .map(Member::info)
            .collect()
    }

    /// The present member holding `name` or a look-alike of it.
    fn holder(&self, name: &str) -> Option<MemberId> {
        name_keys(name)
            .iter()
            .find_map(|key| self.names.get(key).copied())
    }

    /// Frees whatever name `id` holds.
    fn forget_name(&mut self, id: MemberId) {
        if let Some(member) = self.members.get(&id) {
            let (addr, name) = (member.addr.clone(), member.name.clone());
            self.forget(id, &addr, &name);
        }
    }

    /// Frees `name` (and the address `addr` as a default name) if `id` holds it.
    fn forget(&mut self, id: MemberId, addr: &Arc<str>, name: &str) {
        if self.default_names.get(addr) == Some(&id) {
            self.default_names.remove(addr);
        }
        for key in name_keys(name) {
            if self.names.get(&key) == Some(&id) {
                self.names.remove(&key);
            }
        }
    }

    /// Queues one waiting item to its recipients; notes in `slow` whom it overflowed.
    fn deliver(&mut self, item: Pending, slow: &mut Vec<MemberId>) {
        match item {
            Pending::Event {
                line,
                except,
                admit,
                remove,
                ..
            } => {
                if let Some(id) = remove
                    && let Some(member) = self.members.remove(&id)
                {
                    // Its last lines are queued; the writer flushes them and closes.
                    member.outbox.close();
                }
                // Counted once per event, not with an atomic per recipient.
                let mut queued = 0u64;
                for (&id, member) in &self.members {
                    if member.receiving && Some(id) != except {
                        match member.outbox.push_deferred(&line) {
                            Ok(idle) => {
                                queued += 1;
                                if idle {
                                    self.to_flush.push(member.outbox.clone());
                                }
                            }
                            Err(_) => slow.push(id),
                        }
                    }
                }
                crate::telemetry::counters().deliveries.increment(queued);
                if let Some((id, here)) = admit
                    && let Some(member) = self.members.get_mut(&id)
                {
                    member.receiving = true;
                    if member.outbox.push(&line).is_err() || member.outbox.push(&here).is_err() {
                        slow.push(id);
                    }
                }
            }
            Pending::To { id, line, then } => {
                let Some(member) = self.members.get(&id) else {
                    return;
                };
                if then == Then::JsonFromHere {
                    member.outbox.set_mode(Mode::Json);
                }
                if member.outbox.push(&line).is_err() {
                    slow.push(id);
                }
                if then == Then::Forget
                    && let Some(member) = self.members.remove(&id)
                {
                    member.outbox.close();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox;

    #[test]
    fn a_room_of_non_readers_overflowing_at_once_is_dropped_without_recursion() {
        // A small stack: dropping them must not nest one call per member.
        let dropped = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let hub = Hub::new(0, Duration::ZERO);
                let count: MemberId = 100_000;
                {
                    // Seated directly, without 100,000 login broadcasts.
                    let mut state = hub.lock();
                    for id in 0..count {
                        let (outbox, _writer) = outbox::channel(16);
                        let addr: Arc<str> = format!("10.0.{}.{}:1", id / 256, id % 256).into();
                        let name = addr.to_string();
                        state.members.insert(
                            id,
                            Member {
                                addr,
                                name,
                                outbox,
                                present: true,
                                receiving: true,
                            },
                        );
                    }
                    state.next_id = count;
                }
                // One line too long for every queue at once.
                hub.chat(0, "more than sixteen bytes".into());
                hub.deliver_committed(u64::MAX);
                hub.len()
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
        assert_eq!(dropped, 0);
    }

    #[tokio::test]
    async fn sessions_pause_while_the_log_is_far_behind() {
        let hub = Hub::new(0, Duration::ZERO);
        let (outbox, _writer) = outbox::channel(0);
        let id = hub.join("127.0.0.1:1", outbox);
        for _ in 0..BACKLOG_HIGH {
            hub.chat(id, "x".into());
        }
        assert!(hub.is_backlogged());
        let cleared = tokio::spawn({
            let hub = hub.clone();
            async move { hub.backlog_cleared().await }
        });
        hub.deliver_committed(u64::MAX);
        assert!(!hub.is_backlogged());
        tokio::time::timeout(Duration::from_secs(10), cleared)
            .await
            .expect("waiting sessions are woken")
            .expect("task");
    }

    #[test]
    fn leaves_that_overflow_others_drop_them_too() {
        let hub = Hub::new(0, Duration::ZERO);
        // Queues that take a login line each and little more.
        let mut writers = Vec::new();
        for i in 0..3 {
            let (outbox, writer) = outbox::channel(if i == 0 { 0 } else { 400 });
            writers.push(writer);
            hub.join(&format!("127.0.0.1:{}", 1000 + i), outbox);
        }
        // Member 0 has no bound; 1 and 2 overflow on a long chat line, and their leaves are
        // announced to member 0 only.
        hub.deliver_committed(u64::MAX);
        hub.chat(0, "x".repeat(350));
        hub.deliver_committed(u64::MAX);
        assert_eq!(hub.users().len(), 1);
        drop(writers);
    }
}
