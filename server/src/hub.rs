//! Who is online, under which name, and broadcasting to them.
//!
//! One mutex guards the member list, and every broadcast queues its line to every member
//! while holding it. That gives all messages one total order that every user sees, makes
//! `who` a consistent snapshot, and makes name checks race-free. The lock is never held
//! across an await and queuing never blocks (see [`crate::outbox`]), so holding it is short.
//!
//! Each member leaves exactly once: whoever removes it from the map (its session, or a
//! broadcast that found it too slow) announces the leave; anyone later finds it gone.

use crate::outbox::{Mode, Outbox, Rendered};
use chat_protocol::names::{name_key, validate_name};
use chat_protocol::{ErrorCode, LeaveReason, PROTOCOL_VERSION, ServerEvent, UserInfo};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A connection's key in the hub. Increasing, so iterating members goes in join order.
pub type MemberId = u64;

#[derive(Debug)]
struct Member {
    /// The peer's `ip:port`, fixed for the connection's life.
    addr: Arc<str>,
    /// Starts as `addr`; chosen names follow [`validate_name`].
    name: String,
    outbox: Outbox,
}

impl Member {
    /// What everyone else is told when this member leaves.
    fn leave_line(self, reason: LeaveReason) -> Arc<Rendered> {
        Rendered::new(ServerEvent::Leave {
            addr: self.addr.to_string(),
            name: self.name,
            reason,
        })
    }
}

#[derive(Debug, Default)]
struct State {
    /// Online members in join order (`who` lists them in that order).
    members: BTreeMap<MemberId, Member>,
    /// Chosen names by [`name_key`], for uniqueness. Default names (addresses) are not in it:
    /// a chosen name cannot contain `:`, so it can never collide with one.
    names: HashMap<String, MemberId>,
    next_id: MemberId,
}

/// The room. Shared by all sessions through an `Arc`.
#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<State>,
    /// Counts joins and leaves, so [`crate::memory`] can tell when a storm of them is over.
    membership_changes: AtomicU64,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than keeping the room up, so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a member: everyone (the newcomer included) gets its `login`, then the newcomer
    /// gets `I am here`.
    pub fn join(&self, addr: &str, outbox: Outbox) -> MemberId {
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let addr: Arc<str> = addr.into();
        state.members.insert(
            id,
            Member {
                addr: addr.clone(),
                name: addr.to_string(),
                outbox: outbox.clone(),
            },
        );
        let login = Rendered::new(ServerEvent::Join {
            addr: addr.to_string(),
            name: addr.to_string(),
        });
        state.broadcast(&login, None);
        if state.members.contains_key(&id) {
            state.reply(
                id,
                ServerEvent::Here {
                    addr: addr.to_string(),
                    name: addr.to_string(),
                },
            );
        }
        id
    }

    /// Broadcasts a chat line from `id` to everyone, the sender included.
    pub fn chat(&self, id: MemberId, text: String) {
        let mut state = self.lock();
        let Some(member) = state.members.get(&id) else {
            return;
        };
        let line = Rendered::new(ServerEvent::Chat {
            addr: member.addr.to_string(),
            name: member.name.clone(),
            text,
        });
        state.broadcast(&line, None);
    }

    /// Sends `id` the list of online users, as one block.
    pub fn who(&self, id: MemberId) {
        let mut state = self.lock();
        let users = state.users();
        state.reply(id, ServerEvent::Users { users });
    }

    /// The online users, in join order.
    pub fn users(&self) -> Vec<UserInfo> {
        self.lock().users()
    }

    /// How many joins and leaves there have been so far.
    pub fn membership_changes(&self) -> u64 {
        self.membership_changes.load(Ordering::Relaxed)
    }

    /// Number of members online.
    pub fn len(&self) -> usize {
        self.lock().members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Renames `id`. On success the member gets `rename ok` and JSON clients hear of it; on
    /// failure the member gets one error line saying why.
    pub fn rename(&self, id: MemberId, new_name: &str) {
        let mut state = self.lock();
        let Some(member) = state.members.get(&id) else {
            return;
        };
        if let Err(e) = validate_name(new_name) {
            state.reply(
                id,
                ServerEvent::error(ErrorCode::InvalidName, format!("rename refused: {e}")),
            );
            return;
        }
        let key = name_key(new_name);
        if state.names.get(&key).is_some_and(|&owner| owner != id) {
            state.reply(
                id,
                ServerEvent::error(
                    ErrorCode::NameTaken,
                    format!("rename refused: the name {new_name} is already taken"),
                ),
            );
            return;
        }
        let addr = member.addr.to_string();
        let old = member.name.clone();
        state.names.remove(&name_key(&old));
        state.names.insert(key, id);
        if let Some(member) = state.members.get_mut(&id) {
            member.name = new_name.to_string();
        }
        state.reply(
            id,
            ServerEvent::Renamed {
                name: new_name.to_string(),
            },
        );
        let renamed = Rendered::new(ServerEvent::Rename {
            addr,
            old,
            new: new_name.to_string(),
        });
        state.broadcast(&renamed, Some(id));
    }

    /// Switches `id` to JSON mode and welcomes it.
    pub fn welcome(&self, id: MemberId) {
        let mut state = self.lock();
        let Some(member) = state.members.get(&id) else {
            return;
        };
        member.outbox.set_mode(Mode::Json);
        let welcome = ServerEvent::Welcome {
            version: PROTOCOL_VERSION,
            addr: member.addr.to_string(),
            name: member.name.clone(),
        };
        state.reply(id, welcome);
    }

    /// Sends `id` an event meant for it alone.
    pub fn reply(&self, id: MemberId, event: ServerEvent) {
        self.lock().reply(id, event);
    }

    /// Removes `id` and tells everyone else why it left. False if it was already gone.
    pub fn leave(&self, id: MemberId, reason: LeaveReason) -> bool {
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        self.lock().remove(id, reason)
    }

    /// Sends `id` its last line, then removes it and tells everyone else, in one step: no
    /// broadcast can come between, so `farewell` is the last line it gets.
    pub fn say_and_leave(&self, id: MemberId, farewell: ServerEvent, reason: LeaveReason) {
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        state.reply(id, farewell);
        state.remove(id, reason);
    }

    /// Sends `id` its last line and removes it without telling anyone: for shutdown, where
    /// everyone is leaving at once.
    pub fn say_and_forget(&self, id: MemberId, farewell: ServerEvent) {
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        state.reply(id, farewell);
        state.take(id);
    }
}

impl State {
    fn users(&self) -> Vec<UserInfo> {
        self.members
            .values()
            .map(|m| UserInfo {
                addr: m.addr.to_string(),
                name: m.name.clone(),
            })
            .collect()
    }

    /// Queues `line` to every member but `except`, then drops whoever it overflowed.
    fn broadcast(&mut self, line: &Arc<Rendered>, except: Option<MemberId>) {
        let mut slow = Vec::new();
        self.push_all(line, except, &mut slow);
        self.drop_slow(slow);
    }

    /// Queues `line` to every member but `except`; notes in `slow` whom it overflowed.
    fn push_all(&self, line: &Arc<Rendered>, except: Option<MemberId>, slow: &mut Vec<MemberId>) {
        for (&id, member) in &self.members {
            if Some(id) != except && member.outbox.push(line).is_err() {
                slow.push(id);
            }
        }
    }

    /// Drops slow consumers and announces their leaves. A leave can overflow others in
    /// turn, so this is a work list, not recursion (a chain of thousands of non-readers
    /// must not exhaust the stack). Each round takes all its members out before announcing
    /// any, so no dropped member is sent another's leave.
    fn drop_slow(&mut self, mut slow: Vec<MemberId>) {
        while !slow.is_empty() {
            let gone: Vec<Member> = slow.drain(..).filter_map(|id| self.take(id)).collect();
            for member in gone {
                member.outbox.kill();
                let leave = member.leave_line(LeaveReason::SendqExceeded);
                self.push_all(&leave, None, &mut slow);
            }
        }
    }

    fn reply(&mut self, id: MemberId, event: ServerEvent) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        if member.outbox.reply(event).is_err() {
            self.drop_slow(vec![id]);
        }
    }

    /// Takes `id` out of the room, silently.
    fn take(&mut self, id: MemberId) -> Option<Member> {
        let member = self.members.remove(&id)?;
        self.names.remove(&name_key(&member.name));
        Some(member)
    }

    fn remove(&mut self, id: MemberId, reason: LeaveReason) -> bool {
        let Some(member) = self.take(id) else {
            return false;
        };
        let leave = member.leave_line(reason);
        self.broadcast(&leave, None);
        true
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
                let hub = Hub::new();
                let count: MemberId = 100_000;
                {
                    // Seated directly, without 100,000 login broadcasts.
                    let mut state = hub.lock();
                    for id in 0..count {
                        let (outbox, _writer) = outbox::channel(16);
                        let addr: Arc<str> = format!("10.0.{}.{}:1", id / 256, id % 256).into();
                        let name = addr.to_string();
                        state.members.insert(id, Member { addr, name, outbox });
                    }
                    state.next_id = count;
                }
                // One line too long for every queue at once.
                hub.chat(0, "more than sixteen bytes".into());
                hub.len()
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
        assert_eq!(dropped, 0);
    }

    #[test]
    fn leaves_that_overflow_others_drop_them_too() {
        let hub = Hub::new();
        // Queues that take a login line each and little more.
        let mut writers = Vec::new();
        for i in 0..3 {
            let (outbox, writer) = outbox::channel(if i == 0 { 0 } else { 200 });
            writers.push(writer);
            hub.join(&format!("127.0.0.1:{}", 1000 + i), outbox);
        }
        // Member 0 has no bound; 1 and 2 overflow on a long chat line, and their leaves are
        // announced to member 0 only.
        hub.chat(0, "x".repeat(150));
        assert_eq!(hub.users().len(), 1);
        drop(writers);
    }
}
