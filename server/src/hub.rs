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

    /// Removes `id` without telling anyone: for shutdown, where everyone is leaving at once.
    pub fn forget(&self, id: MemberId) {
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if let Some(member) = state.members.remove(&id) {
            state.names.remove(&name_key(&member.name));
        }
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

    /// Queues `line` to every member but `except`. Members whose queue overflows are
    /// dropped as slow consumers, and their leaves broadcast in turn.
    fn broadcast(&mut self, line: &Arc<Rendered>, except: Option<MemberId>) {
        let mut slow = Vec::new();
        for (&id, member) in &self.members {
            if Some(id) != except && member.outbox.push(line).is_err() {
                slow.push(id);
            }
        }
        for id in slow {
            self.remove(id, LeaveReason::SendqExceeded);
        }
    }

    fn reply(&mut self, id: MemberId, event: ServerEvent) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        if member.outbox.reply(event).is_err() {
            self.remove(id, LeaveReason::SendqExceeded);
        }
    }

    fn remove(&mut self, id: MemberId, reason: LeaveReason) -> bool {
        let Some(member) = self.members.remove(&id) else {
            return false;
        };
        self.names.remove(&name_key(&member.name));
        if reason == LeaveReason::SendqExceeded {
            member.outbox.kill();
        }
        let leave = Rendered::new(ServerEvent::Leave {
            addr: member.addr.to_string(),
            name: member.name,
            reason,
        });
        self.broadcast(&leave, None);
        true
    }
}
