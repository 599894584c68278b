//! Who is online: kept sorted by name (case-insensitively, then by address) as joins,
//! leaves and renames arrive, each in O(log n), with every sort key computed once.
//!
//! A `users` answer replaces the whole list in O(n log n); nothing here is quadratic in the
//! room's size, so a room of 10,000 where everyone joins still applies in milliseconds.

use super::text::fold_case;
use chat_protocol::UserInfo;
use std::collections::{BTreeMap, HashMap};

/// Online users, in sidebar order, found by address.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// (name key, address) → the user: iterating gives the sidebar order.
    sorted: BTreeMap<(String, String), UserInfo>,
    /// Address → the name key it is filed under.
    keys: HashMap<String, String>,
}

impl Users {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// In sidebar order: by name ignoring case, then by address.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &UserInfo> + ExactSizeIterator {
        self.sorted.values()
    }

    pub fn get(&self, addr: &str) -> Option<&UserInfo> {
        let key = self.keys.get(addr)?;
        self.sorted.get(&(key.clone(), addr.to_string()))
    }

    pub fn contains(&self, addr: &str) -> bool {
        self.keys.contains_key(addr)
    }

    pub fn clear(&mut self) {
        self.sorted.clear();
        self.keys.clear();
    }

    /// Replaces the list with a `users` answer (a repeated address: the last one counts).
    pub fn replace(&mut self, users: Vec<UserInfo>) {
        self.clear();
        for user in users {
            self.insert(user);
        }
    }

    /// Adds a user, or renames the one already at that address.
    pub fn insert(&mut self, user: UserInfo) {
        self.remove(&user.addr);
        let key = fold_case(&user.name);
        self.keys.insert(user.addr.clone(), key.clone());
        self.sorted.insert((key, user.addr.clone()), user);
    }

    /// Removes the user at `addr`, if listed.
    pub fn remove(&mut self, addr: &str) -> Option<UserInfo> {
        let key = self.keys.remove(addr)?;
        self.sorted.remove(&(key, addr.to_string()))
    }

    /// Gives the user at `addr` a new name; false when nobody is listed there.
    pub fn rename(&mut self, addr: &str, name: &str) -> bool {
        if !self.contains(addr) {
            return false;
        }
        self.insert(UserInfo {
            addr: addr.to_string(),
            name: name.to_string(),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(addr: &str, name: &str) -> UserInfo {
        UserInfo {
            addr: addr.into(),
            name: name.into(),
        }
    }

    fn names(users: &Users) -> Vec<&str> {
        users.iter().map(|u| u.name.as_str()).collect()
    }

    #[test]
    fn kept_in_order_through_joins_leaves_and_renames() {
        let mut users = Users::new();
        users.replace(vec![
            user("a:1", "zoe"),
            user("a:2", "Mia"),
            user("a:3", "adam"),
        ]);
        assert_eq!(names(&users), ["adam", "Mia", "zoe"]);
        users.insert(user("a:4", "Bob"));
        assert_eq!(names(&users), ["adam", "Bob", "Mia", "zoe"]);
        assert!(users.rename("a:1", "Aaron"));
        assert_eq!(names(&users), ["Aaron", "adam", "Bob", "Mia"]);
        assert!(!users.rename("a:9", "ghost"), "nobody there");
        assert_eq!(users.remove("a:2").map(|u| u.name), Some("Mia".into()));
        assert_eq!(users.remove("a:2"), None);
        assert_eq!(names(&users), ["Aaron", "adam", "Bob"]);
        assert_eq!(users.len(), 3);
        assert_eq!(users.get("a:4").map(|u| u.name.as_str()), Some("Bob"));
    }

    #[test]
    fn one_entry_per_address_and_equal_names_ordered_by_address() {
        let mut users = Users::new();
        users.insert(user("b:2", "x"));
        users.insert(user("b:1", "X"));
        users.insert(user("b:2", "y"));
        assert_eq!(users.len(), 2);
        let addrs: Vec<&str> = users.iter().map(|u| u.addr.as_str()).collect();
        assert_eq!(addrs, ["b:1", "b:2"]);
        users.replace(vec![user("c:1", "a"), user("c:1", "b")]);
        assert_eq!(names(&users), ["b"]);
    }
}
