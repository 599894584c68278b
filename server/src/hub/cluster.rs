//! The hub in cluster mode: the room's order comes from Redis instead of the hub's lock.
//!
//! Local connections live in the same [`State::members`] map and receive through the same
//! [`State::deliver`] as in single-node mode, so the fan-out to each recipient is
//! unchanged. What differs is where an event's seq comes from:
//! - A member's request (join, chat line, rename, leave, direct message) is submitted to
//!   the [driver](crate::cluster::driver), which runs it as a script on Redis.
//! - The [tail](crate::cluster::tail) reads every node's events back from the stream, in
//!   seq order, and [`Hub::apply_log`] delivers each to every local member receiving at
//!   that point, keeps the roster (everyone on every node, in join order: `who`, names,
//!   direct messages) and admits local newcomers when their own join comes back.
//!
//! **One member's lines keep their order.** Lines for one member (replies, errors, direct
//! messages, the welcome) wait behind that member's own submissions still in flight, as
//! they wait for the log in single-node mode: `rename ok` or `error:` for a rename comes
//! where the rename stands in the order, and a direct message is delivered once its
//! recipient's node has delivered every room event decided before it.

use super::{Hub, Member, MemberId, State, Then};
use crate::cluster::driver::{OwnMember, Snapshot};
use crate::cluster::{DmEntry, Kind, Link, LogEntry, Op};
use crate::outbox::Rendered;
use chat_protocol::names::{name_keys, validate_name};
use chat_protocol::{ErrorCode, LeaveReason, NoticeCode, ServerEvent, UserInfo};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The answer to one submission, from the driver.
#[derive(Debug)]
pub struct Resolved {
    pub sub: u64,
    /// The member's lines behind it go out once this seq has been delivered (the event's
    /// own seq, or the newest seq when Redis refused it).
    pub after: u64,
    /// What the member is told (an `error:`, the sender's copy of a direct message).
    pub line: Option<ServerEvent>,
}

/// Someone in the room, on any node.
#[derive(Debug)]
struct Listed {
    node: Arc<str>,
    conn: u64,
    addr: Arc<str>,
    name: String,
}

/// A submission the member's lines wait behind.
#[derive(Debug)]
enum Sub {
    Waiting,
    Ready {
        after: u64,
        line: Option<Arc<Rendered>>,
    },
}

/// What waits in one member's queue.
#[derive(Debug)]
enum Held {
    Sub(u64),
    Line(Arc<Rendered>, Then),
    /// The welcome, stamped with the seq delivered when it goes out.
    Welcome,
}

/// How many of this node's recent submissions seen in the stream are remembered, to settle
/// those in doubt after an outage (a pipeline holds at most 512).
const SEEN: usize = 8192;

/// The cluster-mode part of the hub's state.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    /// Everyone present, by join seq: `who`'s order.
    roster: BTreeMap<u64, Listed>,
    /// (node, connection) → join seq.
    by_member: HashMap<(Arc<str>, u64), u64>,
    /// Every key of every chosen name → its holder's join seq.
    names: HashMap<String, u64>,
    /// Members still under their address as their name (default names), by address; the
    /// same address can be on two nodes: the earliest joined is the one addressed.
    by_addr: HashMap<Arc<str>, Vec<u64>>,
    /// This node's submissions that lines wait behind, and whose lines they are.
    subs: HashMap<u64, (MemberId, Sub)>,
    /// Per member, lines waiting behind its submissions.
    held: HashMap<MemberId, VecDeque<Held>>,
    /// Members whose queue waits for a seq to be delivered, by that seq.
    waiting_at: BTreeMap<u64, Vec<MemberId>>,
    /// Direct messages read but not yet deliverable (their seq is not delivered yet), in
    /// the order of their seq.
    dms: VecDeque<DmEntry>,
    /// (submission, seq) of this node's entries lately seen in the stream.
    seen: VecDeque<(u64, u64)>,
}

impl ClusterState {
    fn list(&mut self, seq: u64, listed: Listed) {
        self.by_member
            .insert((listed.node.clone(), listed.conn), seq);
        if listed.name == *listed.addr {
            self.by_addr
                .entry(listed.addr.clone())
                .or_default()
                .push(seq);
        } else {
            for key in name_keys(&listed.name) {
                self.names.insert(key, seq);
            }
        }
        self.roster.insert(seq, listed);
    }

    /// Frees the name of the member listed at `seq`.
    fn unname(&mut self, seq: u64) {
        let Some(listed) = self.roster.get(&seq) else {
            return;
        };
        if listed.name == *listed.addr {
            if let Some(seqs) = self.by_addr.get_mut(&listed.addr) {
                seqs.retain(|s| *s != seq);
                if seqs.is_empty() {
                    self.by_addr.remove(&listed.addr);
                }
            }
        } else {
            for key in name_keys(&listed.name) {
                if self.names.get(&key) == Some(&seq) {
                    self.names.remove(&key);
                }
            }
        }
    }

    fn unlist(&mut self, node: &Arc<str>, conn: u64) -> Option<Listed> {
        let seq = self.by_member.remove(&(node.clone(), conn))?;
        self.unname(seq);
        self.roster.remove(&seq)
    }

    /// Forgets what waits for a member that is gone, and the submissions it waited on.
    fn drop_held(&mut self, id: MemberId) {
        for held in self.held.remove(&id).into_iter().flatten() {
            if let Held::Sub(sub) = held {
                self.subs.remove(&sub);
            }
        }
    }

    fn holder(&self, name: &str) -> Option<&Listed> {
        if let Some(seqs) = self.by_addr.get(name) {
            return seqs.iter().min().and_then(|s| self.roster.get(s));
        }
        name_keys(name)
            .iter()
            .find_map(|key| self.names.get(key))
            .and_then(|s| self.roster.get(s))
    }

    fn users(&self) -> Vec<UserInfo> {
        self.roster
            .values()
            .map(|l| UserInfo {
                addr: l.addr.to_string(),
                name: l.name.clone(),
            })
            .collect()
    }
}

impl Hub {
    /// Switches this hub to cluster mode with the room as Redis showed it.
    pub fn start_cluster(&self, link: Arc<Link>, snapshot: Snapshot) {
        let mut state = self.lock();
        state.last_seq = snapshot.seq;
        for m in snapshot.members {
            state.cluster.list(
                m.join_seq,
                Listed {
                    node: m.node,
                    conn: m.conn,
                    addr: m.addr.into(),
                    name: m.name,
                },
            );
        }
        link.applied.send_replace(snapshot.seq);
        let _ = self.cluster.set(link);
    }

    /// False while this node cannot reach the room's shared log (cluster mode, Redis
    /// unreachable): what a health check should report as unavailable (503). Always true
    /// for a single node.
    pub fn room_available(&self) -> bool {
        self.cluster.get().is_none_or(|link| link.available())
    }

    /// The newest seq delivered.
    pub fn applied(&self) -> u64 {
        self.lock().last_seq
    }

    pub(super) fn c_join(
        &self,
        link: &Link,
        addr: &str,
        outbox: crate::outbox::Outbox,
    ) -> MemberId {
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let addr: Arc<str> = addr.into();
        if !link.available() {
            let _ = outbox.reply(ServerEvent::notice(
                NoticeCode::RoomUnavailable,
                crate::cluster::driver::UNAVAILABLE_NOTICE,
            ));
        }
        state
            .members
            .insert(id, Member::newcomer(addr.clone(), outbox));
        let sub = link.submit(Op::Join { conn: id, addr });
        hold_sub(&mut state, id, sub);
        id
    }

    /// Refuses at once while Redis is down; true if `id` may submit.
    fn c_may_submit(&self, link: &Link, state: &mut State, id: MemberId, what: &str) -> bool {
        let Some(member) = state.members.get(&id).filter(|m| m.present) else {
            return false;
        };
        if link.available() {
            return true;
        }
        // Straight to the member: an outage must not wait behind anything.
        let _ = member
            .outbox
            .reply(ServerEvent::error(ErrorCode::Unavailable, what));
        false
    }

    pub(super) fn c_chat(&self, link: &Link, id: MemberId, text: String) {
        let mut state = self.lock();
        if !self.c_may_submit(
            link,
            &mut state,
            id,
            "the room is unavailable (its shared log cannot be reached); your line was not sent",
        ) {
            return;
        }
        let sub = link.submit(Op::Chat { conn: id, text });
        hold_sub(&mut state, id, sub);
    }

    pub(super) fn c_rename(&self, link: &Link, id: MemberId, new_name: &str) {
        let mut state = self.lock();
        if !state.members.get(&id).is_some_and(|m| m.present) {
            return;
        }
        if let Err(e) = validate_name(new_name) {
            let error = ServerEvent::error(ErrorCode::InvalidName, format!("rename refused: {e}"));
            self.send_to(&mut state, id, Rendered::new(error), Then::Nothing);
            return;
        }
        if !self.c_may_submit(
            link,
            &mut state,
            id,
            "rename refused: the room is unavailable (its shared log cannot be reached); try again later",
        ) {
            return;
        }
        let sub = link.submit(Op::Rename {
            conn: id,
            name: new_name.to_string(),
            keys: name_keys(new_name),
        });
        hold_sub(&mut state, id, sub);
    }

    pub(super) fn c_direct_message(&self, link: &Link, id: MemberId, to: &str, text: String) {
        let mut state = self.lock();
        if !state.members.get(&id).is_some_and(|m| m.present) {
            return;
        }
        if text.is_empty() {
            let error = ServerEvent::error(ErrorCode::EmptyText, "a direct message needs a text");
            self.send_to(&mut state, id, Rendered::new(error), Then::Nothing);
            return;
        }
        let Some(recipient) = state.cluster.holder(to) else {
            let error = ServerEvent::error(
                ErrorCode::NoSuchUser,
                format!("no user named {to} is online"),
            );
            self.send_to(&mut state, id, Rendered::new(error), Then::Nothing);
            return;
        };
        let (to_node, to_conn) = (recipient.node.clone(), recipient.conn);
        if !self.c_may_submit(
            link,
            &mut state,
            id,
            "the room is unavailable (its shared log cannot be reached); your message was not sent",
        ) {
            return;
        }
        let sub = link.submit(Op::Dm {
            conn: id,
            to_node,
            to_conn,
            to_name: to.to_string(),
            text,
        });
        hold_sub(&mut state, id, sub);
    }

    pub(super) fn c_users(&self) -> Vec<UserInfo> {
        self.lock().cluster.users()
    }

    pub(super) fn c_who(&self, id: MemberId) {
        let mut state = self.lock();
        let users = state.cluster.users();
        self.send_to(
            &mut state,
            id,
            Rendered::new(ServerEvent::Users { users }),
            Then::Nothing,
        );
    }

    pub(super) fn c_welcome(&self, id: MemberId) {
        let mut state = self.lock();
        if !state.members.contains_key(&id) {
            return;
        }
        if let Some(queue) = state.cluster.held.get_mut(&id) {
            queue.push_back(Held::Welcome);
        } else {
            self.send_welcome(&mut state, id);
        }
    }

    fn send_welcome(&self, state: &mut State, id: MemberId) {
        if let Some(welcome) = self.welcome_event(state, id) {
            self.deliver_now(state, id, Rendered::new(welcome), Then::JsonFromHere);
        }
    }

    /// A line for one member: behind its submissions in flight, else at once.
    pub(super) fn c_send_to(
        &self,
        state: &mut State,
        id: MemberId,
        line: Arc<Rendered>,
        then: Then,
    ) {
        if let Some(queue) = state.cluster.held.get_mut(&id) {
            queue.push_back(Held::Line(line, then));
        } else {
            self.deliver_now(state, id, line, then);
        }
    }

    fn deliver_now(&self, state: &mut State, id: MemberId, line: Arc<Rendered>, then: Then) {
        let mut slow = Vec::new();
        state.deliver(super::Pending::To { id, line, then }, &mut slow);
        if then == Then::Forget {
            state.cluster.drop_held(id);
        }
        for id in slow {
            self.drop_slow(state, id);
        }
    }

    /// Ends `id`'s presence; its leave is announced when it comes back from the log.
    pub(super) fn c_depart(
        &self,
        link: &Link,
        state: &mut State,
        id: MemberId,
        reason: LeaveReason,
    ) -> bool {
        let Some(member) = state.members.get_mut(&id).filter(|m| m.present) else {
            return false;
        };
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        member.present = false;
        link.submit(Op::Leave { conn: id, reason });
        true
    }

    /// Shutdown: the last line, then gone from this node; the room hears it left.
    pub(super) fn c_say_and_forget(&self, link: &Link, id: MemberId, farewell: ServerEvent) {
        self.membership_changes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        let Some(member) = state.members.get_mut(&id).filter(|m| m.present) else {
            return;
        };
        member.present = false;
        link.submit(Op::Leave {
            conn: id,
            reason: LeaveReason::Quit,
        });
        // Not held: at shutdown nothing more comes for it.
        state.cluster.drop_held(id);
        self.deliver_now(&mut state, id, Rendered::new(farewell), Then::Forget);
    }

    /// A slow member already removed here: the room hears it left, unless it was leaving.
    pub(super) fn c_dropped(&self, link: &Link, state: &mut State, id: MemberId, present: bool) {
        state.cluster.drop_held(id);
        if present {
            self.membership_changes.fetch_add(1, Ordering::Relaxed);
            link.submit(Op::Leave {
                conn: id,
                reason: LeaveReason::SendqExceeded,
            });
        }
    }

    /// Delivers entries read from the log, in seq order, skipping any delivered already,
    /// and direct messages, each right after the seq it waits for.
    pub fn apply(&self, entries: Vec<LogEntry>, dms: Vec<DmEntry>) {
        let Some(link) = self.cluster.get() else {
            return;
        };
        let mut state = self.lock();
        state.cluster.dms.extend(dms);
        let mut slow = Vec::new();
        let mut delivered = crate::cluster::recent::Batch::with_capacity(entries.len());
        for entry in entries {
            self.deliver_dms(&mut state);
            if entry.seq <= state.last_seq {
                continue;
            }
            state.last_seq = entry.seq;
            let own = (entry.node == link.node).then_some((entry.conn, entry.sub));
            delivered.stage(&entry);
            self.apply_entry(link, &mut state, entry, &mut slow);
            for id in slow.drain(..) {
                self.drop_slow(&mut state, id);
            }
            if let Some((id, sub)) = own {
                // Its own event is delivered: what its sender waits for behind it may go.
                let after = state.last_seq;
                if let Some((_, pending @ Sub::Waiting)) = state.cluster.subs.get_mut(&sub) {
                    *pending = Sub::Ready { after, line: None };
                }
                self.flush_member(&mut state, id);
            }
            self.flush_due(&mut state);
        }
        self.deliver_dms(&mut state);
        // Kept for history once delivered, still under the lock: no answer can hold an
        // event before it went out live.
        link.recent.extend(delivered, state.last_seq);
        link.applied.send_replace(state.last_seq);
    }

    /// Delivers the direct messages whose seq has been delivered.
    fn deliver_dms(&self, state: &mut State) {
        while state
            .cluster
            .dms
            .front()
            .is_some_and(|dm| dm.after <= state.last_seq)
        {
            let Some(dm) = state.cluster.dms.pop_front() else {
                return;
            };
            let id = dm.to_conn;
            if !state.members.get(&id).is_some_and(|m| m.receiving) {
                continue;
            }
            let line = Rendered::new(ServerEvent::Dm {
                from: UserInfo {
                    addr: dm.from_addr,
                    name: dm.from_name,
                },
                to: UserInfo {
                    addr: dm.to_addr,
                    name: dm.to_name,
                },
                text: dm.text,
            });
            self.deliver_now(state, id, line, Then::Nothing);
        }
    }

    /// Flushes the members whose queues waited for a seq now delivered.
    fn flush_due(&self, state: &mut State) {
        while let Some(entry) = state.cluster.waiting_at.first_entry() {
            if *entry.key() > state.last_seq {
                return;
            }
            for id in entry.remove() {
                self.flush_member(state, id);
            }
        }
    }

    fn apply_entry(
        &self,
        link: &Link,
        state: &mut State,
        entry: LogEntry,
        slow: &mut Vec<MemberId>,
    ) {
        let local = (entry.node == link.node).then_some(entry.conn);
        if local.is_some() && entry.sub != 0 {
            if state.cluster.seen.len() == SEEN {
                state.cluster.seen.pop_front();
            }
            state.cluster.seen.push_back((entry.sub, entry.seq));
        }
        let local = local.filter(|id| state.members.contains_key(id));
        let seq = entry.seq;
        if entry.kind == Kind::Chat {
            // The common case: the entry's texts move into the event, uncopied.
            let line = Rendered::new(entry.into_event());
            state.deliver(
                super::Pending::Event {
                    seq,
                    line,
                    except: None,
                    admit: None,
                    remove: None,
                },
                slow,
            );
            return;
        }
        let line = Rendered::new(entry.event());
        match entry.kind {
            Kind::Join => {
                let addr: Arc<str> = entry.addr.as_str().into();
                state.cluster.list(
                    seq,
                    Listed {
                        node: entry.node.clone(),
                        conn: entry.conn,
                        addr: addr.clone(),
                        name: entry.name.clone(),
                    },
                );
                let admit = local.map(|id| {
                    let here = ServerEvent::Here {
                        addr: entry.addr.clone(),
                        name: entry.name.clone(),
                    };
                    (id, Rendered::new(here))
                });
                state.deliver(
                    super::Pending::Event {
                        seq,
                        line,
                        except: None,
                        admit,
                        remove: None,
                    },
                    slow,
                );
            }
            // Delivered above.
            Kind::Chat => {}
            Kind::Rename => {
                let key = (entry.node.clone(), entry.conn);
                if let Some(&joined) = state.cluster.by_member.get(&key) {
                    state.cluster.unname(joined);
                    if let Some(listed) = state.cluster.roster.remove(&joined) {
                        state.cluster.list(
                            joined,
                            Listed {
                                name: entry.x.clone(),
                                ..listed
                            },
                        );
                    }
                }
                state.deliver(
                    super::Pending::Event {
                        seq,
                        line,
                        except: local,
                        admit: None,
                        remove: None,
                    },
                    slow,
                );
                if let Some(id) = local
                    && let Some(member) = state.members.get_mut(&id)
                {
                    member.name = entry.x.clone();
                    let renamed = Rendered::new(ServerEvent::Renamed {
                        name: entry.x.clone(),
                    });
                    if member.receiving && member.outbox.push(&renamed).is_err() {
                        slow.push(id);
                    }
                }
            }
            Kind::Leave => {
                if state.cluster.unlist(&entry.node, entry.conn).is_none() {
                    // Announced already (a sweep after Redis lost data, say): not again.
                    return;
                }
                if let Some(id) = local {
                    state.cluster.drop_held(id);
                    if let Some(member) = state.members.get_mut(&id)
                        && member.present
                    {
                        // Announced as gone while still here (this node was cut off from
                        // Redis for longer than the node timeout): say so and close.
                        member.present = false;
                        let _ = member.outbox.reply(ServerEvent::notice(
                            NoticeCode::RoomUnavailable,
                            "this server lost contact with the room and you were announced as gone; please reconnect",
                        ));
                    }
                }
                state.deliver(
                    super::Pending::Event {
                        seq,
                        line,
                        except: None,
                        admit: None,
                        remove: local,
                    },
                    slow,
                );
            }
        }
    }

    /// The driver's answers to submissions.
    pub fn resolve(&self, resolved: Vec<Resolved>) {
        if resolved.is_empty() {
            return;
        }
        let mut state = self.lock();
        let mut members = Vec::with_capacity(resolved.len());
        for r in resolved {
            if let Some((member, sub)) = state.cluster.subs.get_mut(&r.sub) {
                *sub = Sub::Ready {
                    after: r.after,
                    line: r.line.map(Rendered::new),
                };
                members.push(*member);
            }
        }
        members.dedup();
        for id in members {
            self.flush_member(&mut state, id);
        }
    }

    fn flush_member(&self, state: &mut State, id: MemberId) {
        loop {
            let applied = state.last_seq;
            let cluster = &mut state.cluster;
            let Some(queue) = cluster.held.get_mut(&id) else {
                return;
            };
            let Some(front) = queue.front() else {
                cluster.held.remove(&id);
                return;
            };
            let ready = match front {
                Held::Sub(sub) => match cluster.subs.get(sub) {
                    Some((_, Sub::Ready { after, .. })) if *after > applied => {
                        // Flushed again once `after` is delivered.
                        let waiting = cluster.waiting_at.entry(*after).or_default();
                        if !waiting.contains(&id) {
                            waiting.push(id);
                        }
                        false
                    }
                    Some((_, Sub::Waiting)) => false,
                    _ => true,
                },
                Held::Line(..) | Held::Welcome => true,
            };
            if !ready {
                return;
            }
            let Some(item) = queue.pop_front() else {
                return;
            };
            match item {
                Held::Sub(sub) => {
                    if let Some((
                        _,
                        Sub::Ready {
                            line: Some(line), ..
                        },
                    )) = cluster.subs.remove(&sub)
                    {
                        self.deliver_now(state, id, line, Then::Nothing);
                    }
                }
                Held::Line(line, then) => self.deliver_now(state, id, line, then),
                Held::Welcome => self.send_welcome(state, id),
            }
        }
    }

    /// Tells every local member something about the room itself, at once.
    pub fn notice_all(&self, code: NoticeCode, message: &str) {
        let state = self.lock();
        let notice = Rendered::new(ServerEvent::notice(code, message));
        for member in state.members.values().filter(|m| m.present) {
            let _ = member.outbox.push(&notice);
        }
    }

    /// Tells one local member something, in its place behind its lines in flight.
    pub fn notice_member(&self, id: MemberId, code: NoticeCode, message: String) {
        let mut state = self.lock();
        if state.members.get(&id).is_some_and(|m| m.present) {
            let notice = Rendered::new(ServerEvent::notice(code, message));
            self.send_to(&mut state, id, notice, Then::Nothing);
        }
    }

    /// This node's members as the roster lists them, to register again after Redis lost
    /// its data.
    pub fn own_members(&self) -> Vec<OwnMember> {
        let Some(link) = self.cluster.get() else {
            return Vec::new();
        };
        let state = self.lock();
        state
            .cluster
            .roster
            .iter()
            .filter(|(_, l)| l.node == link.node)
            .map(|(&join_seq, l)| OwnMember {
                conn: l.conn,
                join_seq,
                addr: l.addr.to_string(),
                name: l.name.clone(),
                keys: if l.name == *l.addr {
                    Vec::new()
                } else {
                    name_keys(&l.name)
                },
            })
            .collect()
    }

    /// The seq of this node's submission `sub`, if the tail has seen it lately.
    pub fn seen(&self, sub: u64) -> Option<u64> {
        let state = self.lock();
        state
            .cluster
            .seen
            .iter()
            .rev()
            .find(|(s, _)| *s == sub)
            .map(|(_, seq)| *seq)
    }

    /// A history answer from memory or the stream, never past what this node delivered.
    pub(super) async fn c_history(
        &self,
        link: &Link,
        query: crate::room_log::Query,
    ) -> anyhow::Result<crate::room_log::Answer> {
        crate::cluster::history::answer(link, || self.applied(), query).await
    }
}

/// `id`'s lines wait behind submission `sub` until it is answered and delivered.
fn hold_sub(state: &mut State, id: MemberId, sub: u64) {
    state.cluster.subs.insert(sub, (id, Sub::Waiting));
    state
        .cluster
        .held
        .entry(id)
        .or_default()
        .push_back(Held::Sub(sub));
}
